"""An ITCH day replayed through the engine: the load prepared before, the check after.

`prepare` translates the file (`itchload`) into ``DATA_DIR/itch/``:

    commands.bin     the COMMAND records producer 0 sends, in the file's order
    executions.bin   one EXEC record per replayed execution: the IOC order's client id,
                     the order Nasdaq executed, the shares
    symbols.csv      the instruments of the day (ticks and bands from its own prices): the
                     book's configuration, and the feed's names and price scale
    itch.json        what was translated and skipped, and the book the file implies

`check` reads the run's journal from seq 1 through a matcher (the journal alone decides:
the result is the same whenever it is computed) and says how many of the file's
executions shmex's matcher made against the same resting order, and, per symbol, whether
its final book equals the file's.
"""

from __future__ import annotations

import json
import os

import numpy as np

from shmex.errors import CannotOpen, UsageError
from shmex.net import itch, itchload

LADDER_LIMIT = 4 << 30        # book ladder bytes a replay may ask for


def paths(data_dir: str) -> dict:
    d = os.path.join(data_dir, "itch")
    return {"dir": d, "commands": os.path.join(d, "commands.bin"),
            "executions": os.path.join(d, "executions.bin"), "symbols": os.path.join(d, "symbols.csv"),
            "info": os.path.join(d, "itch.json")}


def _implied_levels(book: itch.Book, symbols) -> dict:
    return {s.name: {"bids": [list(r) for r in itch.levels(book, i, "B")],
                     "asks": [list(r) for r in itch.levels(book, i, "S")]}
            for i, s in enumerate(symbols)}


def prepare(path: str, data_dir: str, *, speed: float | None, only: tuple = (), progress=None) -> dict:
    """Translate the file into data_dir/itch/; -> its info (itch.json's content)."""
    sc = itchload.scan(path, only)
    need = itchload.ladder_bytes(sc.symbols)
    if need > LADDER_LIMIT:
        lo, hi = itchload.band(sc.symbols)
        raise UsageError(f"--itch {path}: {len(sc.symbols)} symbols over ticks {lo}..{hi} need a "
                         f"{need / (1 << 30):.1f} GiB price ladder (more than {LADDER_LIMIT >> 30} GiB): "
                         f"pick symbols with --itch-symbols NAME,...")
    p = paths(data_dir)
    os.makedirs(p["dir"], exist_ok=True)
    with open(p["commands"], "wb") as fc, open(p["executions"], "wb") as fe:
        load = itchload.translate(sc, speed, lambda a: a.tofile(fc), lambda a: a.tofile(fe),
                                  progress=progress)
    with open(p["symbols"], "w") as f:
        f.write(itchload.symbols_text(sc.symbols))
    info = {"file": os.path.abspath(path), "messages": sc.messages, "speed": speed,
            "listed_symbols": sc.listed,
            "symbols": [{"name": s.name, "locate": s.locate, "tick": s.tick, "lo": s.lo, "hi": s.hi}
                        for s in sc.symbols],
            "band": list(itchload.band(sc.symbols)), "commands": load.commands,
            "executions": load.executions, "counts": load.counts,
            "live_orders": int(load.book.g[itch.B_LIVE]), "book": _implied_levels(load.book, sc.symbols)}
    with open(p["info"], "w") as f:
        json.dump(info, f)
    return info


def read_info(data_dir: str) -> dict:
    p = paths(data_dir)["info"]
    try:
        with open(p) as f:
            return json.load(f)
    except OSError as e:
        raise CannotOpen(f"{p}: {e.strerror} (not an --itch run's data directory)") from None


def check(data_dir: str) -> dict:
    """Replay the run's journal from seq 1; -> executions reproduced and books compared."""
    from shmex.matcher.matcher import Matcher
    from shmex.recovery.recover import matcher_config
    from shmex.wal.reader import WalReader

    info = read_info(data_dir)
    ex = np.fromfile(paths(data_dir)["executions"], dtype=itchload.EXEC)
    return agreement(WalReader(data_dir).commands(1), Matcher(**matcher_config(data_dir)), info, ex,
                     where=data_dir)


def agreement(batches, m, info: dict, ex: np.ndarray, *, where: str = "journal") -> dict:
    """Feed the sequenced command batches (from seq 1) to the matcher m; -> how many of the
    day's executions it made against the same resting order, and each symbol's book
    against the one the file implies (`info["book"]`)."""
    from shmex.recovery.feed import book_levels
    from shmex.schema import R_FILL, R_REJECTED, TAKER, Side

    parts, crossed = [], []
    rejected = 0
    seq = 0
    for batch in batches:
        if int(batch[0]["seq"]) != seq + 1:
            raise CannotOpen(f"{where}: holds seq {int(batch[0]['seq'])} where the check needs "
                             f"{seq + 1} (it needs the whole journal from seq 1)")
        seq = int(batch[-1]["seq"])
        reps = m.process_into(batch, stamp=False)
        taker = reps[(reps["kind"] == R_FILL) & (reps["liquidity"] == TAKER)]
        replayed = taker["client_id"] >= np.uint64(itchload.IOC_BASE)
        f = taker[replayed]
        parts.append(np.stack([(f["client_id"] - np.uint64(itchload.IOC_BASE)).astype(np.int64),
                               f["contra_client_id"].astype(np.int64), f["qty"].astype(np.int64)]))
        crossed.append(np.unique(taker["client_id"][~replayed]))
        rejected += int((reps["kind"] == R_REJECTED).sum())
    fills = np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int64)
    k, contra, qty = fills
    k_ok = k < len(ex)
    k, contra, qty = k[k_ok], contra[k_ok], qty[k_ok]
    right = contra == ex["maker_cid"].astype(np.int64)[k]
    good = np.zeros(len(ex), np.int64)
    other = np.zeros(len(ex), np.int64)
    np.add.at(good, k[right], qty[right])
    np.add.at(other, k[~right], qty[~right])
    want = ex["qty"]
    same = (good == want) & (other == 0)
    result = {"seqs": seq, "executions": len(ex), "reproduced": int(same.sum()),
              "against_another_order": int((other > 0).sum()),
              "short": int(((good + other) < want).sum()),
              # a whole day's adds never cross the book: these are orders the file leaves
              # resting that it never removes (a sample, not a day), or a matcher that differs
              "orders_traded_on_entry": int(len(np.unique(np.concatenate(crossed)))) if crossed else 0,
              "rejected": rejected, "symbols": {}}
    resting = m.resting()
    for i, s in enumerate(info["symbols"]):
        want_book = info["book"][s["name"]]
        got = {"bids": [list(r) for r in book_levels(resting, i, Side.BUY, s["tick"], 1)],
               "asks": [list(r) for r in book_levels(resting, i, Side.SELL, s["tick"], 1)]}
        row = {"equal": got == want_book,
               "levels": len(got["bids"]) + len(got["asks"]),
               "file_levels": len(want_book["bids"]) + len(want_book["asks"])}
        if not row["equal"]:
            row["first_difference"] = _first_difference(got, want_book)
        result["symbols"][s["name"]] = row
    result["books_equal"] = all(r["equal"] for r in result["symbols"].values())
    result["live_orders"] = int(len(resting))
    result["file_live_orders"] = int(info["live_orders"])
    return result


def _first_difference(got: dict, want: dict) -> str:
    for side in ("bids", "asks"):
        a, b = got[side], want[side]
        for j in range(max(len(a), len(b))):
            x = a[j] if j < len(a) else None
            y = b[j] if j < len(b) else None
            if x != y:
                return f"{side}[{j}]: shmex {x}, file {y}"
    return ""
