"""OUCH 5.0 messages from and to one line of text: what ``shmex ouch`` reads and prints.

Orders (one per argument or line; ``#`` starts a comment)::

    buy 100 SHMX @ 10.25 [ioc] [post] [urn=N] [clordid=TEXT]
    sell 100 SHMX @ 10.25            (also: short, exempt = sell short / short exempt)
    cancel URN [QTY]                 (QTY: the size to reduce to; none or 0 cancels)
    replace URN NEWURN QTY @ PRICE
    modify URN SIDE QTY

Prices are decimal dollars (at most 4 decimals), read without a float.
"""

from __future__ import annotations

import struct
from decimal import Decimal, InvalidOperation

from shmex.errors import UsageError
from shmex.net.instruments import PRICE_SCALE

SIDES = {"buy": b"B", "sell": b"S", "short": b"T", "exempt": b"E"}
SIDE_NAMES = {v: k for k, v in SIDES.items()}
REJECTS: dict[int, str] = {}     # filled from net.ouch's REJ_* names


def _price(text: str) -> int:
    try:
        v = Decimal(text) * PRICE_SCALE
    except InvalidOperation:
        raise UsageError(f"price {text!r} is not a decimal number") from None
    if v != v.to_integral_value() or v <= 0:
        raise UsageError(f"price {text}: positive, at most 4 decimals")
    return int(v)


def _int(text: str, what: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise UsageError(f"{what} {text!r} is not an integer") from None
    if not 0 <= v < 2 ** 32:
        raise UsageError(f"{what} {v}: want 0 .. 2**32-1")
    return v


def enter_order(urn: int, side: bytes, qty: int, symbol: bytes, price: int, *, ioc: bool = False,
                post_only: bool = False, clordid: bytes | None = None) -> bytes:
    """An OUCH 5.0 Enter Order (visible, agency, no ISO, continuous market)."""
    app = bytes([2, 12]) + b"P" if post_only else b""
    clord = (clordid if clordid is not None else f"shmex{urn}".encode())[:14].ljust(14)
    return (b"O" + struct.pack(">I", urn) + side + struct.pack(">I", qty) + symbol.ljust(8)
            + struct.pack(">Q", price) + (b"3" if ioc else b"0") + b"YANN" + clord
            + struct.pack(">H", len(app)) + app)


def encode(line: str, next_urn) -> bytes | None:
    """One line -> an OUCH inbound message (None for a blank line); next_urn() gives numbers."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    verb = words[0].lower()
    opts = {w.split("=", 1)[0]: w.split("=", 1)[1] for w in words if "=" in w}
    flags = {w.lower() for w in words if "=" not in w}
    pos = [w for w in words[1:] if "=" not in w and w.lower() not in ("ioc", "post")]
    if verb in SIDES:
        if len(pos) != 4 or pos[2] != "@":
            raise UsageError(f"{line!r}: want '{verb} QTY SYMBOL @ PRICE [ioc] [post] [urn=N] [clordid=X]'")
        qty, sym, price = _int(pos[0], "quantity"), pos[1].encode("ascii"), _price(pos[3])
        if len(sym) > 8:
            raise UsageError(f"symbol {pos[1]!r}: at most 8 characters")
        urn = _int(opts["urn"], "urn") if "urn" in opts else next_urn()
        clord = opts["clordid"].encode("ascii") if "clordid" in opts else None
        return enter_order(urn, SIDES[verb], qty, sym, price, ioc="ioc" in flags, post_only="post" in flags,
                           clordid=clord)
    if verb == "cancel":
        if len(pos) not in (1, 2):
            raise UsageError(f"{line!r}: want 'cancel URN [QTY]'")
        return b"X" + struct.pack(">II", _int(pos[0], "urn"), _int(pos[1], "quantity") if len(pos) > 1 else 0)
    if verb == "replace":
        if len(pos) != 5 or pos[3] != "@":
            raise UsageError(f"{line!r}: want 'replace URN NEWURN QTY @ PRICE'")
        new = _int(pos[1], "urn")
        return (b"U" + struct.pack(">II", _int(pos[0], "urn"), new) + struct.pack(">I", _int(pos[2], "quantity"))
                + struct.pack(">Q", _price(pos[4])) + b"0YN" + f"shmex{new}".encode().ljust(14)
                + struct.pack(">H", 0))
    if verb == "modify":
        if len(pos) != 3 or pos[1].lower() not in SIDES:
            raise UsageError(f"{line!r}: want 'modify URN buy|sell|short|exempt QTY'")
        return b"M" + struct.pack(">I", _int(pos[0], "urn")) + SIDES[pos[1].lower()] + struct.pack(">I", _int(pos[2], "quantity"))
    raise UsageError(f"{line!r}: unknown order verb {words[0]!r} (buy, sell, short, exempt, cancel, replace, modify)")


def _money(units: int) -> str:
    return f"{Decimal(units) / PRICE_SCALE:.4f}"


def describe(msg: bytes) -> str:
    """An OUCH outbound message as one line."""
    if not REJECTS:
        from shmex.net import ouch

        REJECTS.update({v: k[4:].lower() for k, v in vars(ouch).items() if k.startswith("REJ_")})
    t = msg[:1]
    u32 = lambda o: struct.unpack(">I", msg[o:o + 4])[0]      # noqa: E731
    u64 = lambda o: struct.unpack(">Q", msg[o:o + 8])[0]      # noqa: E731
    if t in (b"A", b"U"):
        o = 4 if t == b"U" else 0
        head = f"replaced urn={u32(9)} ->" if t == b"U" else "accepted"
        side = SIDE_NAMES.get(msg[13 + o:14 + o], "?")
        return (f"{head} urn={u32(9 + o)} {side} {u32(14 + o)} {msg[18 + o:26 + o].decode().strip()} "
                f"@ {_money(u64(26 + o))} tif={msg[34 + o:35 + o].decode()} ref={u64(36 + o)} "
                f"clordid={msg[48 + o:62 + o].decode().strip()}")
    if t == b"E":
        liq = {b"A": "maker", b"R": "taker"}.get(msg[25:26], "?")
        return f"executed urn={u32(9)} {u32(13)} @ {_money(u64(17))} {liq} match={u64(26)}"
    if t == b"C":
        why = {b"U": "user", b"I": "immediate-or-cancel", b"Q": "self-match"}.get(msg[17:18], msg[17:18].decode())
        return f"canceled urn={u32(9)} {u32(13)} ({why})"
    if t == b"J":
        code = struct.unpack(">H", msg[13:15])[0]
        return f"rejected urn={u32(9)} reason={code} ({REJECTS.get(code, '?')})"
    if t == b"M":
        return f"modified urn={u32(9)} {SIDE_NAMES.get(msg[13:14], '?')} {u32(14)}"
    if t == b"S":
        return f"system event {msg[9:10].decode()}"
    return f"message {t!r} ({len(msg)} bytes)"
