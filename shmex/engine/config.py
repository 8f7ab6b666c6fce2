"""`EngineConfig`: one frozen, validated record of how a run is set up.

Built from `shmex launch`'s flags (`from_args`: defaults < ``--preset`` < explicit flags),
passed to every child as JSON (`to_dict` / `from_dict`) and stored in the WAL manifest's
run entry, so that a run's directory says how it was run.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from dataclasses import dataclass, field

from shmex.engine import cells
from shmex.errors import UsageError
from shmex.shm.names import check_run_id, new_run_id

DEFAULT_DIR = "shmex-data"
DEFAULT_FEED = "239.192.77.1:31077"      # `launch --feed` without an address
FEED_PRIORITIES = ("normal", "low", "idle")
DEFER_RATE = 500_000.0                   # the feed's default --feed-defer-above where cores are short
DEMO_ORDERS = 1_000_000


# The demo instruments: every symbol's band is [PRICE_LO, price_hi]; the built-in load
# quotes around MID + SYMBOL_STEP * symbol.
PRICE_LO, PRICE_HI, MID = 1, 20_000, 10_000
SYMBOL_STEP = 50


def book_config(symbols: int, capacity: int, max_open_orders: int | None = None,
                hash_key: int | None = None, band: tuple | None = None) -> dict:
    """The matcher configuration (Matcher's keyword arguments): the price band given, or
    the one the generator is meant for."""
    lo, hi = band or (PRICE_LO, max(PRICE_HI, MID + SYMBOL_STEP * symbols + 1000))
    return dict(symbols=symbols, price_lo=lo, price_hi=hi, capacity=capacity,
                max_open_orders=max_open_orders, hash_key=hash_key)


VIA = ("shm", "tcp")                     # launch --via: the built-in load's path into the engine

# replicated: group commit locally, and a report leaves only once the NATS stream's quorum
# acknowledged its command too (needs --nats)
DURABILITY = ("none", "group", "always", "replicated")

# Each preset sets what a user would otherwise learn flag by flag; an explicit flag wins.
PRESETS: dict[str, dict] = {
    # tick-to-trade at a fixed open-loop rate (percentiles are latency, not queueing),
    # the WAL in the page cache: survives a process crash, not a machine crash
    "latency": {"durability": "none", "rate": 100_000.0, "duration": 30.0},
    # as fast as the rings take, group commit (one fdatasync per group): the engine's
    # capacity with every report released only after its command is on disk
    "throughput": {"durability": "group", "rate": None, "orders": 5_000_000},
    # one fdatasync per command before its report: the strongest promise, the lowest rate
    # (a disk syncing in ~170 us takes ~6K commands/s: the rate stays well below, so that
    # the percentiles are the sync's latency, not a queue behind it)
    "durable": {"durability": "always", "rate": 2_000.0, "duration": 30.0},
}


@dataclass(frozen=True)
class EngineConfig:
    run_id: str                          # names the run's shared-memory segments
    data_dir: str                        # WAL, manifest and snapshots/
    producers: int = 2                   # built-in load-generator processes
    clients: int = 1                     # producer slots for client-API processes
    symbols: int = 4
    capacity: int = 1 << 20              # resting orders the book holds (arena size: memory)
    max_open_orders: int = 1 << 20       # resting orders one producer slot may hold (TOO_MANY_ORDERS
                                         # beyond): bounds what one client can take of the arena
    producer_accounts: tuple = ()        # account of load producer k (missing: the slot's default)
    multi_account_slots: tuple = ()      # producer slots whose commands keep the account they carry
                                         # (a gateway stamping each session's); others: one account
    hash_key: int | None = None          # the id table's hash key (None: drawn from the OS here);
                                         # kept in the manifest and snapshots, never in shared memory
    orders: int | None = None            # orders in all (None: --duration or until stopped)
    duration: float | None = None        # seconds of load (None: --orders)
    rate: float | None = None            # offered orders/s, open loop (None: full speed)
    durability: str = "group"            # none: page cache; group: fdatasync per group; always: per command
    seed: int = 1
    snapshot_every: int = 1_000_000      # commands between snapshots (0: only the final one);
                                         # fewer: faster restarts, more CPU for the forked writer
    keep_snapshots: int = 3              # snapshots kept, and the WAL segments they need: older
                                         # segments are removed (more: older fallbacks and a longer
                                         # log on disk); 0: keep every snapshot and the whole log
    publisher_inline: bool = True        # route reports inside the matcher's loop (one process less)
    ring_in: int = 1 << 16               # slots per input ring: a producer's retransmission window
    ring_rep: int = 1 << 16              # slots per report ring: how far a client may lag
    ring_journal: int = 1 << 17          # matcher -> WAL writer: how far the disk may lag matching
    ring_out: int = 1 << 18              # matcher -> publisher
    cid_base: int = 0                    # the load generator's first client id
    wait: dict = field(default_factory=dict)   # role -> wait strategy (missing: the role's default)
    max_restarts: int = 5                # restarts per role within restart_window_s (0: stop on a death)
    restart_window_s: float = 60.0
    heartbeat_timeout_s: float = 10.0    # a READY process silent this long is hung: killed, restarted
    segment_bytes: int | None = None     # WAL segment size (None: the WAL's default)
    standby: bool = True                 # keep a warm spare process for restarts
    snapshot_cores: tuple = ()           # where the matcher's forked snapshot writer may run
    preset: str | None = None
    gateway: str | None = None           # HOST:PORT of the OUCH/SoupBinTCP gateway (None: none; port 0: any free)
    symbols_file: str | None = None      # the gateway's instruments (None: the shipped example)
    users_file: str | None = None        # the gateway's users (None: the shipped example)
    gateway_max_open: int = 100_000      # open orders one gateway user may have
    gateway_orders: int = 1 << 17        # open orders all gateway users may have together
    gateway_idle_s: float = 15.0         # a session silent this long is dropped (heartbeats are 1 s)
    nats: tuple = ()                     # NATS server URLs: the replicator ships the durable journal
                                         # there (empty: no replicator, the engine is one machine's)
    nats_stream: str = "SHMEX"           # the JetStream stream of this engine's journal (one per shard)
    nats_bucket: str = "shmex_lease"     # the key-value bucket that holds the primary's lease
    lease_s: float = 2.0                 # the lease's TTL: a primary silent this long can be replaced
                                         # (shorter: faster failover, more renewals, less slack for a pause)
    lease_revision: int = 0              # a promoted follower's lease revision, adopted by the replicator
    feed: str | None = None              # GROUP:PORT of the ITCH 5.0 / MoldUDP64 multicast feed (None: no feed);
                                         # with a feed the whole WAL is kept (the feed is regenerated from it)
    feed_iface: str = "127.0.0.1"        # the interface's address the feed is sent from, and its
                                         # re-request server listens on
    feed_rerequest_port: int = 0         # the re-request server's UDP port (0: any free; see feed/feed.json)
    feed_drop_every: int = 0             # fault injection: leave out every k-th data packet (0: none)
    feed_linger_s: float = 2.0           # after the end of session, how long re-requests are still answered
    feed_priority: str = "normal"        # the feed's CPU priority: normal, low (nice 10) or idle (SCHED_IDLE:
                                         # only the time the other processes of its core leave, which
                                         # waits that spin or yield leave none of)
    feed_defer_above: float | None = None   # journal commands/s above which the feed waits and lets
                                         # matching have the machine (it catches up when the rate falls);
                                         # None: DEFER_RATE where the machine has fewer cores than the
                                         # engine has processes, else never; 0: never

    cancel_on_disconnect: bool = True    # a client slot's resting orders are cancelled when its client
                                         # goes away (False: they rest on; the slot's next client
                                         # inherits them, their ids and their fills)
    slow_client_s: float = 5.0           # a client that leaves its report ring full this long (reading
                                         # nothing) is disconnected: its reports dropped, its orders
                                         # cancelled, and matching goes on for everyone else
    itch: str | None = None              # a NASDAQ ITCH 5.0 file replayed as the load (translated into
                                         # DATA_DIR/itch/ at launch; None: the built-in generator)
    itch_speed: float | None = None      # the day's own pace times this (None: as fast as it goes)
    itch_symbols: tuple = ()             # the file's symbols replayed (empty: all of them)
    price_band: tuple = ()               # the book's (price_lo, price_hi) in ticks (empty: the demo's)
    via: str = "shm"                     # the built-in load's path: shm (producers on the input rings)
                                         # or tcp (members logged in at the gateway, OUCH over SoupBinTCP)
    tcp_sessions: int = 0                # with via tcp: the load's sessions (one user each)
    tcp_duration: float | None = None    # with via tcp: seconds the load sends, from its first order

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        _require(self.producers >= 0 and self.clients >= 0
                 and self.producers + self.clients + (self.gateway is not None) >= 1,
                 "--producers and --clients", f"{self.producers} and {self.clients}: at least one producer "
                                              f"slot is needed (or a --gateway)")
        _require(self.symbols >= 1, "--symbols", f"{self.symbols}: must be >= 1")
        _require(self.capacity >= 1, "--capacity", f"{self.capacity}: must be >= 1")
        _require(1 <= self.max_open_orders <= 1 << 30, "--max-open-orders",
                 f"{self.max_open_orders}: must be in [1, 2**30]")
        self._check_accounts()
        if self.hash_key is None:
            object.__setattr__(self, "hash_key", secrets.randbits(64))
        _require(0 <= self.hash_key < 1 << 64, "hash_key", f"{self.hash_key}: must be in [0, 2**64)")
        _require(self.orders is None or self.orders >= 0, "--orders", f"{self.orders}: must be >= 0")
        _require(self.duration is None or self.duration > 0, "--duration", f"{self.duration}: must be > 0 s")
        _require(self.rate is None or self.rate > 0, "--rate", f"{self.rate}: must be > 0 orders/s")
        _require(self.durability in DURABILITY, "--durability", f"{self.durability!r}: one of {', '.join(DURABILITY)}")
        _require(self.snapshot_every >= 0, "--snapshot-every", f"{self.snapshot_every}: must be >= 0")
        # a restarted matcher may rebuild from the snapshot before the newest (the out
        # ring's last command can precede the newest snapshot): at least two are kept
        _require(self.keep_snapshots == 0 or self.keep_snapshots >= 2, "--keep-snapshots",
                 f"{self.keep_snapshots}: must be >= 2 (0: keep everything)")
        _require(self.max_restarts >= 0, "--restarts", f"{self.max_restarts}: must be >= 0")
        _require(self.restart_window_s > 0, "--restart-window", f"{self.restart_window_s}: must be > 0 s")
        _require(self.heartbeat_timeout_s > 0, "--heartbeat-timeout", f"{self.heartbeat_timeout_s}: must be > 0 s")
        _require(self.segment_bytes is None or self.segment_bytes > 0, "--segment-bytes",
                 f"{self.segment_bytes}: must be > 0")
        _require(self.preset is None or self.preset in PRESETS, "--preset",
                 f"{self.preset!r}: one of {', '.join(PRESETS)}")
        _require(self.gateway_max_open >= 1, "--gateway-max-open", f"{self.gateway_max_open}: must be >= 1")
        _require(self.gateway_orders >= 1, "--gateway-orders", f"{self.gateway_orders}: must be >= 1")
        _require(self.gateway_idle_s > 0, "--gateway-idle", f"{self.gateway_idle_s}: must be > 0 s")
        if self.gateway is not None:
            self.gateway_address()          # a malformed HOST:PORT stops the launch here
            from shmex.net import instruments, users

            instruments.check_fits(instruments.load(self.symbols_path), self.book, "--symbols-file")
            users.load(self.users_path)
        self._check_nats()
        self._check_feed()
        self._check_via()
        self._check_itch()
        _require(self.slow_client_s > 0, "--slow-client", f"{self.slow_client_s}: must be > 0 s")
        for name in ("ring_in", "ring_rep", "ring_journal", "ring_out"):
            v = getattr(self, name)
            _require(v >= 2 and v & (v - 1) == 0, name, f"{v}: must be a power of two >= 2")
        from shmex.engine import registry
        from shmex.ring.wait import resolve as resolve_wait   # numba: not at `shmex --help`

        known = registry.default_waits()
        for role, strat in self.wait.items():
            _require(role in known, "--wait", f"{role + '=' + strat!r}: ROLE one of {', '.join(known)}")
            try:                     # a bad name stops the launch here, not a child later
                resolve_wait(strat)
            except UsageError as e:
                raise UsageError(f"--wait {role + '=' + strat!r}: {e}") from None
        object.__setattr__(self, "wait", {**known, **self.wait})
        object.__setattr__(self, "snapshot_cores", tuple(int(c) for c in self.snapshot_cores))

    def _check_accounts(self) -> None:
        object.__setattr__(self, "producer_accounts", tuple(int(a) for a in self.producer_accounts))
        object.__setattr__(self, "multi_account_slots", tuple(int(k) for k in self.multi_account_slots))
        if self.gateway is not None and self.gateway_slot not in self.multi_account_slots:
            # the gateway stamps each session's account itself (its users file binds them)
            object.__setattr__(self, "multi_account_slots", self.multi_account_slots + (self.gateway_slot,))
        acc = self.producer_accounts
        _require(len(acc) <= self.producers, "producer_accounts",
                 f"{list(acc)}: more accounts than the {self.producers} load producers")
        _require(all(0 < a < cells.DEFAULT_ACCOUNT_BASE for a in acc), "producer_accounts",
                 f"{list(acc)}: each must be in [1, {cells.DEFAULT_ACCOUNT_BASE:#x}) (above: slot defaults)")
        _require(len(set(acc)) == len(acc), "producer_accounts", f"{list(acc)}: an account is one slot's")
        _require(all(0 <= k < self.producer_slots for k in self.multi_account_slots), "multi_account_slots",
                 f"{list(self.multi_account_slots)}: each must be a producer slot in [0, {self.producer_slots})")

    def _check_nats(self) -> None:
        from shmex.repl import names

        object.__setattr__(self, "nats", tuple(str(u) for u in self.nats))
        _require(self.durability != "replicated" or self.nats, "--durability",
                 "replicated: needs --nats URL[,URL...] (the cluster the journal is replicated to)")
        for u in self.nats:
            _require(u.startswith(("nats://", "tls://")) and len(u.split(":")) == 3, "--nats",
                     f"{u!r}: want nats://HOST:PORT")
        _require(names.valid(self.nats_stream), "--stream", f"{self.nats_stream!r}: {names.RULE}")
        _require(names.valid(self.nats_bucket), "--bucket", f"{self.nats_bucket!r}: {names.RULE}")
        _require(self.lease_s >= 1.0, "--lease", f"{self.lease_s}: must be >= 1 s")
        _require(self.lease_revision >= 0, "lease_revision", f"{self.lease_revision}: must be >= 0")

    def _check_feed(self) -> None:
        import ipaddress

        if self.feed is None:
            return
        group, port = self.feed_address()
        try:
            ok = ipaddress.ip_address(group).is_multicast
        except ValueError:
            ok = False
        _require(ok, "--feed", f"{self.feed!r}: {group} is not an IPv4 multicast group (224.0.0.0/4)")
        _require(port > 0, "--feed", f"{self.feed!r}: want GROUP:PORT with a port in 1..65535")
        try:
            ipaddress.IPv4Address(self.feed_iface)
        except ValueError:
            raise UsageError(f"--feed-iface {self.feed_iface!r}: want an interface's IPv4 address") from None
        _require(0 <= self.feed_rerequest_port < 65536, "--feed-rerequest-port",
                 f"{self.feed_rerequest_port}: must be in 0..65535")
        _require(self.feed_drop_every >= 0, "--feed-drop-every", f"{self.feed_drop_every}: must be >= 0")
        _require(self.feed_linger_s >= 0, "--feed-linger", f"{self.feed_linger_s}: must be >= 0 s")
        _require(self.feed_defer_above is None or self.feed_defer_above >= 0, "--feed-defer-above",
                 f"{self.feed_defer_above}: must be >= 0 commands/s")
        _require(self.feed_priority in FEED_PRIORITIES, "--feed-priority",
                 f"{self.feed_priority!r}: one of {', '.join(FEED_PRIORITIES)}")

    def _check_itch(self) -> None:
        object.__setattr__(self, "itch_symbols", tuple(str(x) for x in self.itch_symbols))
        object.__setattr__(self, "price_band", tuple(int(x) for x in self.price_band))
        band = self.price_band
        _require(not band or (len(band) == 2 and 1 <= band[0] <= band[1]), "price_band",
                 f"{list(band)}: want (price_lo, price_hi) with 1 <= price_lo <= price_hi")
        _require(self.itch_speed is None or self.itch_speed >= 0.001, "--itch-speed",
                 f"{self.itch_speed}: must be >= 0.001")
        if self.itch is None:
            _require(self.itch_speed is None and not self.itch_symbols, "--itch-speed / --itch-symbols",
                     "need --itch FILE")
            return
        _require(self.producers == 1, "--itch", f"replays a day as one producer's orders, in the file's "
                                                f"order: --producers {self.producers} cannot be used with it")
        _require(self.rate is None, "--rate", "the day sets its own pace with --itch (--itch-speed X)")

    def feed_address(self) -> tuple[str, int]:
        group, port = _host_port(self.feed, "--feed", f"GROUP:PORT (a multicast group, e.g. {DEFAULT_FEED})")
        if not group:
            raise UsageError(f"--feed {self.feed!r}: want GROUP:PORT (a multicast group, e.g. {DEFAULT_FEED})")
        return group, port

    # -- derived ---------------------------------------------------------------------------
    @property
    def replicated(self) -> bool:
        """A replicator runs (NATS servers are configured)."""
        return bool(self.nats)

    @property
    def whole_log(self) -> bool:
        """The WAL is kept from seq 1 whatever keep_snapshots says: the feed is regenerated
        from it, an ITCH replay is checked against it."""
        return self.feed is not None or self.itch is not None

    @property
    def wal_mode(self) -> str:
        """The local WAL's mode: replicated commits locally as group does."""
        return "group" if self.durability == "replicated" else self.durability

    def release_cell(self) -> int:
        """The control cell whose seq releases reports: DURABLE_SEQ, or in mode replicated
        the replicator's R_REPLICATED_SEQ, which never passes DURABLE_SEQ (min of both)."""
        return self.replicated_cell() if self.durability == "replicated" else cells.DURABLE_SEQ

    def replicated_cell(self) -> int | None:
        """The replicator's R_REPLICATED_SEQ cell: the highest seq the stream's quorum holds
        (None without a replicator)."""
        if not self.replicated:
            return None
        from shmex.engine import registry

        return cells.proc_cell(registry.slot_of(self, "replicator"), cells.P_ROLE + cells.R_REPLICATED_SEQ)

    @property
    def gateways(self) -> int:
        return 0 if self.gateway is None else 1

    @property
    def producer_slots(self) -> int:
        """Input/report ring pairs: load producers first, then client slots, then the gateway's."""
        return self.producers + self.clients + self.gateways

    @property
    def gateway_slot(self) -> int:
        """The gateway's producer slot (its producer id is this + 1)."""
        return self.producers + self.clients

    def gateway_address(self) -> tuple[str, int]:
        host, port = _host_port(self.gateway, "--gateway", "HOST:PORT (port 0: any free port)")
        return host or "127.0.0.1", port

    @property
    def symbols_path(self) -> str:
        from shmex.net import EXAMPLE_SYMBOLS

        return self.symbols_file or EXAMPLE_SYMBOLS

    @property
    def users_path(self) -> str:
        from shmex.net import EXAMPLE_USERS

        return self.users_file or EXAMPLE_USERS

    @property
    def book(self) -> dict:
        return book_config(self.symbols, self.capacity, self.max_open_orders, self.hash_key,
                           self.price_band or None)

    def _check_via(self) -> None:
        _require(self.via in VIA, "--via", f"{self.via!r}: one of {', '.join(VIA)}")
        if self.via == "tcp":
            _require(self.gateway is not None, "--via tcp", "needs a gateway (--gateway HOST:PORT)")
            _require(self.tcp_sessions >= 1, "--via tcp", f"--producers {self.tcp_sessions}: the load needs "
                                                          f">= 1 session")
            _require(not self.itch, "--via tcp", "cannot be used with --itch (the day replays on the rings)")
            _require(self.tcp_duration is None or self.tcp_duration > 0, "--duration",
                     f"{self.tcp_duration}: must be > 0 s")

    def account_of(self, k: int) -> int:
        """The account producer slot k is bound to at the start: a load producer's
        configured one, else the slot's default (a client may ask for its own at connect)."""
        if k < len(self.producer_accounts):
            return self.producer_accounts[k]
        return cells.default_account(k)

    @property
    def orders_per_producer(self) -> list[int]:
        """Each load producer's share of `orders` (-1: no count; it sends until stopped)."""
        n, k = self.orders, self.producers
        if n is None:
            return [-1] * k
        return [n // k + (1 if i < n % k else 0) for i in range(k)]

    # -- conversions -----------------------------------------------------------------------
    def replace(self, **changes) -> "EngineConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for name in ("snapshot_cores", "producer_accounts", "multi_account_slots", "nats", "itch_symbols",
                     "price_band"):
            d[name] = list(getattr(self, name))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "EngineConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UsageError(f"engine config: unknown field(s) {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_args(cls, args) -> "EngineConfig":
        """`shmex launch` / `shmex drill` flags: a flag left at None takes the preset's
        value, then the field's default."""
        preset = PRESETS.get(args.preset, {}) if getattr(args, "preset", None) else {}
        if getattr(args, "preset", None) and args.preset not in PRESETS:
            raise UsageError(f"--preset {args.preset!r}: one of {', '.join(PRESETS)}")

        def pick(flag: str, key: str | None = None):
            v = getattr(args, flag, None)
            key = key or flag
            if v is not None:
                return v
            if key in preset:
                return preset[key]
            return _DEFAULTS[key]

        orders, duration = getattr(args, "orders", None), getattr(args, "duration", None)
        if orders is None and duration is None:       # the run's length: flags, else the preset's
            orders, duration = preset.get("orders"), preset.get("duration")
        itch = _abspath(getattr(args, "itch", None))
        producers = int(pick("producers")) if itch is None or getattr(args, "producers", None) is not None else 1
        if orders is None and duration is None and producers > 0:
            orders = DEMO_ORDERS
        via = getattr(args, "via", None) or "shm"
        tcp_sessions, tcp_duration, gateway = 0, None, getattr(args, "gateway", None)
        if via == "tcp":   # the load's sessions log in at the gateway; the load times its own length
            tcp_sessions, producers, tcp_duration, duration = producers, 0, duration, None
            gateway = gateway or "127.0.0.1:0"
        wait = {}
        for item in (getattr(args, "wait", None) or "").split(","):
            if item:
                role, _, strat = item.partition("=")
                if not role or not strat:
                    raise UsageError(f"--wait {item!r}: want ROLE=STRATEGY")
                wait[role] = strat
        publisher = getattr(args, "publisher", None)
        return cls(
            run_id=check_run_id(args.name) if getattr(args, "name", None) else new_run_id(),
            data_dir=os.path.abspath(getattr(args, "data_dir", None) or DEFAULT_DIR),
            producers=producers, clients=int(pick("clients")), symbols=int(pick("symbols")),
            capacity=int(pick("capacity")), max_open_orders=int(pick("max_open_orders")),
            orders=orders, duration=duration, rate=pick("rate"),
            durability=pick("durability"), seed=int(pick("seed")),
            snapshot_every=int(pick("snapshot_every")), keep_snapshots=int(pick("keep_snapshots")),
            publisher_inline=(publisher == "inline") if publisher else _DEFAULTS["publisher_inline"],
            cid_base=(int(time.time()) & 0xFFFFFFF) << 32, wait=wait,
            max_restarts=int(pick("restarts", "max_restarts")),
            restart_window_s=float(pick("restart_window", "restart_window_s")),
            heartbeat_timeout_s=float(pick("heartbeat_timeout", "heartbeat_timeout_s")),
            segment_bytes=getattr(args, "segment_bytes", None),
            standby=not getattr(args, "no_standby", False), preset=getattr(args, "preset", None),
            gateway=gateway,
            symbols_file=_abspath(getattr(args, "symbols_file", None)),
            users_file=_abspath(getattr(args, "users_file", None)),
            gateway_max_open=int(pick("gateway_max_open")), gateway_orders=int(pick("gateway_orders")),
            gateway_idle_s=float(pick("gateway_idle", "gateway_idle_s")),
            nats=tuple(u for u in (getattr(args, "nats", None) or "").split(",") if u),
            nats_stream=pick("stream", "nats_stream"), nats_bucket=pick("bucket", "nats_bucket"),
            lease_s=float(pick("lease", "lease_s")),
            lease_revision=int(getattr(args, "lease_revision", None) or 0),
            feed=getattr(args, "feed", None), feed_iface=pick("feed_iface"),
            feed_rerequest_port=int(pick("feed_rerequest_port")), feed_drop_every=int(pick("feed_drop_every")),
            feed_linger_s=float(pick("feed_linger", "feed_linger_s")), feed_priority=pick("feed_priority"),
            feed_defer_above=pick("feed_defer_above"),
            cancel_on_disconnect=not getattr(args, "keep_orders_on_disconnect", False),
            slow_client_s=float(pick("slow_client", "slow_client_s")),
            itch=itch, itch_speed=getattr(args, "itch_speed", None),
            itch_symbols=tuple(x for x in (getattr(args, "itch_symbols", None) or "").split(",") if x),
            via=via, tcp_sessions=tcp_sessions, tcp_duration=tcp_duration,
        )


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EngineConfig)
             if f.default is not dataclasses.MISSING}


def _host_port(text: str | None, flag: str, want: str) -> tuple[str, int]:
    """'HOST:PORT' -> (HOST, PORT), PORT in 0..65535; a UsageError naming the flag otherwise."""
    host, sep, port = (text or "").rpartition(":")
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not sep or not 0 <= p < 65536:
        raise UsageError(f"{flag} {text!r}: want {want}")
    return host, p


def _abspath(p: str | None) -> str | None:
    return os.path.abspath(p) if p else None


def _require(ok: bool, flag: str, what: str) -> None:
    if not ok:
        raise UsageError(f"{flag} {what}")
