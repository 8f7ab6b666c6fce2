"""The matcher's output depends only on its sequenced input: same stream, same bytes."""

import hashlib
import subprocess
import sys
from pathlib import Path

from shmex.bench.workload import book_config, reference_workload
from shmex.matcher import Matcher, check_book

N = 20_000


def digest_of_run(n: int = N, seed: int = 3) -> tuple[str, str]:
    cmds = reference_workload(n, seed=seed, capacity=1 << 14)
    m = Matcher(**book_config(1 << 14))
    h = hashlib.blake2b(digest_size=16)
    for i in range(0, n, 1000):
        h.update(m.process(cmds[i:i + 1000]).tobytes())
    return h.hexdigest(), m.state_hash()


def test_same_stream_twice_gives_identical_reports_and_hash():
    assert digest_of_run() == digest_of_run()


def test_another_process_gives_identical_reports_and_hash():
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "from test_matcher_determinism import digest_of_run; print(*digest_of_run())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert tuple(out.stdout.split()) == digest_of_run()


def test_batching_does_not_change_the_outcome():
    cmds = reference_workload(5000, seed=5, capacity=1 << 14)
    one = Matcher(**book_config(1 << 14))
    whole = one.process(cmds.copy())
    many = Matcher(**book_config(1 << 14))
    parts = [many.process(cmds[i:i + 7].copy()) for i in range(0, len(cmds), 7)]
    assert b"".join(p.tobytes() for p in parts) == whole.tobytes()
    assert one.state_hash() == many.state_hash()
    assert check_book(one) == []


def test_reference_workload_cancels_name_live_orders():
    cmds = reference_workload(20_000, seed=9, capacity=1 << 14)
    r = Matcher(**book_config(1 << 14)).process(cmds)
    assert not (r["kind"] == 5).any()  # no REJECTED: every cancel found its order live
    kinds = cmds["kind"]
    assert 0.2 < (kinds == 2).mean() < 0.3
