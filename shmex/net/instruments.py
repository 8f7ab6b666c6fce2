"""Instruments: the symbols file that gives each symbol its index and its price scale.

One symbol per line, ``#`` starts a comment, fields separated by commas::

    # name, tick, price_lo, price_hi, lot
    SHMX,   0.01, 0.01,     200.00,   1

- ``name``: up to 8 ASCII characters (OUCH and ITCH carry it space-padded to 8).
- ``tick``, ``price_lo``, ``price_hi``: decimal dollars with at most 4 decimals (the
  protocols' implied decimals). They are read as `decimal.Decimal` and kept as integer
  units of 1/10000: no float ever holds a price. A protocol price is on-tick when it is a
  multiple of ``tick``; it becomes ``price // tick`` integer ticks in the book.
- ``lot``: shares per lot; an order's shares must be a multiple of it.

The line order is the symbol index (0, 1, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

from shmex.errors import UsageError
from shmex.net import textfile

PRICE_SCALE = 10_000          # protocol prices: 4 implied decimals
NAME_LEN = 8


@dataclass(frozen=True)
class Instrument:
    index: int
    name: str
    tick: int         # price units (1/10000) per tick
    lo: int           # band, price units, inclusive
    hi: int
    lot: int          # shares per lot

    @property
    def lo_ticks(self) -> int:
        return self.lo // self.tick

    @property
    def hi_ticks(self) -> int:
        return self.hi // self.tick


def _units(text: str, where: str, field: str) -> int:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        raise UsageError(f"{where}: {field} {text.strip()!r} is not a decimal number") from None
    scaled = d * PRICE_SCALE
    if scaled != scaled.to_integral_value():
        raise UsageError(f"{where}: {field} {text.strip()} has more than 4 decimals")
    return int(scaled)


def parse(text: str, source: str = "<symbols>") -> list[Instrument]:
    out: list[Instrument] = []
    seen: dict[str, str] = {}
    for where, parts in textfile.rows(text, source):
        if len(parts) != 5:
            raise UsageError(f"{where}: want 'name, tick, price_lo, price_hi, lot', got {len(parts)} fields")
        name = parts[0]
        textfile.name_field(name, where, "symbol", NAME_LEN)
        if name in seen:
            raise UsageError(f"{where}: symbol {name} already defined at {seen[name]}")
        tick, lo, hi = (_units(parts[i], where, f) for i, f in ((1, "tick"), (2, "price_lo"), (3, "price_hi")))
        try:
            lot = int(parts[4])
        except ValueError:
            raise UsageError(f"{where}: lot {parts[4]!r} is not an integer") from None
        if tick <= 0:
            raise UsageError(f"{where}: tick must be > 0")
        if lot <= 0:
            raise UsageError(f"{where}: lot must be > 0")
        if not 0 < lo <= hi:
            raise UsageError(f"{where}: want 0 < price_lo <= price_hi")
        if lo % tick or hi % tick:
            raise UsageError(f"{where}: price_lo and price_hi must be multiples of the tick")
        seen[name] = where
        out.append(Instrument(len(out), name, tick, lo, hi, lot))
    if not out:
        raise UsageError(f"{source}: no symbols")
    return out


def load(path: str) -> list[Instrument]:
    return textfile.read(path, "symbols", parse)


def name_bytes(name: str) -> bytes:
    return name.encode("ascii").ljust(NAME_LEN, b" ")


def table(instruments: list[Instrument]) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' view: names as big-endian u64 keys, and [tick, lo, hi, lot] per symbol."""
    keys = np.array([int.from_bytes(name_bytes(i.name), "big") for i in instruments], dtype=np.uint64)
    nums = np.array([[i.tick, i.lo, i.hi, i.lot] for i in instruments], dtype=np.int64)
    return keys, nums


def check_fits(instruments: list[Instrument], book: dict, source: str) -> None:
    """Every symbol's band, in ticks, lies inside the book's price band."""
    if len(instruments) > book["symbols"]:
        raise UsageError(f"{source}: {len(instruments)} symbols, the book has {book['symbols']}")
    for i in instruments:
        if i.lo_ticks < book["price_lo"] or i.hi_ticks > book["price_hi"]:
            raise UsageError(f"{source}: {i.name}'s band is ticks {i.lo_ticks}..{i.hi_ticks}, "
                             f"outside the book's {book['price_lo']}..{book['price_hi']}")
