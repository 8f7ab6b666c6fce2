"""Building commands for matcher tests: one-liners and hypothesis strategies."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from shmex.schema import COMMAND, REPORT, Kind, OrderType, ReportKind, Side, Stp, Tif

SMALL = dict(symbols=2, price_lo=100, price_hi=110, capacity=6)


def cmd(kind=Kind.NEW, side=Side.BUY, price=100, qty=1, client_id=1, *, producer=0, symbol=0,
        order_type=OrderType.LIMIT, tif=Tif.GTC, stp=Stp.NONE, account=0, pseq=0, sent_ns=0):
    return (int(kind), int(side), int(order_type), int(tif), int(stp), int(producer), int(symbol),
            int(account), int(client_id), int(price), int(qty), int(pseq), int(sent_ns))


_FIELDS = ("kind", "side", "order_type", "tif", "stp", "producer", "symbol", "account",
           "client_id", "price", "qty", "pseq", "sent_ns")


def batch(*rows) -> np.ndarray:
    out = np.zeros(len(rows), dtype=COMMAND)
    for i, row in enumerate(rows):
        for name, value in zip(_FIELDS, row):
            out[i][name] = value
    return out


def kinds(reports: np.ndarray) -> list[str]:
    return [ReportKind(int(k)).name for k in reports["kind"]]


def assert_reports_equal(fast: np.ndarray, slow: np.ndarray) -> None:
    assert fast.dtype == REPORT and slow.dtype == REPORT
    if fast.tobytes() != slow.tobytes():
        lines = [f"{len(fast)} reports from the matcher, {len(slow)} from the reference"]
        for i in range(max(len(fast), len(slow))):
            a = fast[i].tolist() if i < len(fast) else None
            b = slow[i].tolist() if i < len(slow) else None
            lines.append(f"{'  ' if a == b else '!!'} {i}: matcher {a}\n      reference {b}")
        raise AssertionError("\n".join(lines))


@st.composite
def command_streams(draw, symbols=2, band=(100, 110), producers=2, ids=8, wild=True,
                    max_batches=8, max_batch=12):
    """Lists of batches of command rows. Cancels and replaces mostly name an order sent
    earlier; with `wild`, about one command in eight carries a malformed field."""
    lo, hi = band
    sent: list[tuple[int, int, int]] = []  # (producer, symbol, client_id) of NEWs so far
    stream = []
    for _ in range(draw(st.integers(1, max_batches))):
        rows = []
        for _ in range(draw(st.integers(1, max_batch))):
            kind = draw(st.sampled_from([1, 1, 1, 1, 1, 2, 2, 3, 3]))
            if kind != 1 and sent and draw(st.integers(0, 4)) > 0:
                producer, symbol, client_id = draw(st.sampled_from(sent))
            else:
                producer = draw(st.integers(0, producers - 1))
                symbol = draw(st.integers(0, symbols - 1))
                client_id = draw(st.integers(0, ids - 1))
            row = dict(kind=kind, side=draw(st.sampled_from([1, 2])),
                       order_type=draw(st.sampled_from([1] * 8 + [2])),
                       tif=draw(st.sampled_from([1] * 5 + [2, 3, 4])),
                       stp=draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4])),
                       price=draw(st.integers(lo, hi)), qty=draw(st.integers(1, 12)),
                       producer=producer, symbol=symbol, client_id=client_id,
                       account=draw(st.integers(0, 2)),
                       pseq=draw(st.integers(0, 5)), sent_ns=draw(st.integers(0, 5)))
            if wild and draw(st.integers(0, 7)) == 0:
                field, values = draw(st.sampled_from([
                    ("kind", [0, 4, 5, 255]), ("side", [0, 3]), ("order_type", [0, 3]),
                    ("tif", [0, 5]), ("stp", [5, 9]), ("symbol", [symbols, 1000]),
                    ("qty", [0, -1, -7]), ("price", [lo - 1, hi + 1, -5, 1 << 30])]))
                row[field] = draw(st.sampled_from(values))
            if row["kind"] == 1:
                sent.append((row["producer"], row["symbol"], row["client_id"]))
            kind = row.pop("kind")
            rows.append(cmd(kind, row.pop("side"), row.pop("price"), row.pop("qty"),
                            row.pop("client_id"), **row))
        stream.append(rows)
    return stream
