"""Matcher: the Python face of the numba book. Validates at the boundary, then calls kernels."""

from __future__ import annotations

import hashlib
import secrets
import time

import numpy as np

from shmex.errors import SchemaMismatch, UsageError
from shmex.matcher import _kernels as matcher_kernels
from shmex.matcher import _single
from shmex.matcher.book import (C_CAP, C_HI, C_LO, C_OPEN_CAP, C_SYMBOLS, FIELDS, M_LAST_SEQ,
                                M_LIVE, MAX_TICKS, Book, book_spec, new_book)
from shmex.schema import (COMMAND, LEVEL, REPORT, RESTING, Kind, OrderType, Side, Stp, Tif,
                          PRICE_MAX, PRICE_MIN)

STATE_FORMAT = 1
REPORTS_PER_COMMAND = 2      # a batch's report buffer is presized to this many per command
HAND_OVER = 1 << 16          # process() hands over its report buffer from this many reports
K_NEW, K_CANCEL, K_REPLACE = int(Kind.NEW), int(Kind.CANCEL), int(Kind.REPLACE)
_INT_ONLY = frozenset((int,))   # the argument types one_command takes as they are


class Matcher:
    """A price-time priority book over `symbols` symbols, prices in [price_lo, price_hi] ticks.

    `process(commands)` sequences and matches a batch; `apply(commands)` replays commands
    that already carry their seq. Both return the REPORT records, in order.
    """

    def __init__(self, symbols: int = 1, price_lo: int = 1, price_hi: int = 100_000,
                 capacity: int = 1 << 20, *, max_open_orders: int | None = None,
                 hash_key: int | None = None, report_buffer: int = 1 << 14,
                 _book: Book | None = None):
        """max_open_orders: resting orders one producer id may have (None: `capacity`);
        a NEW that would rest beyond it is REJECTED TOO_MANY_ORDERS.
        hash_key: the id table's 64-bit hash key (None: drawn from the OS); `config`
        names it, so that Matcher(**m.config) builds a book with the same table layout.
        report_buffer: initial size of the report buffer, in records; it doubles
        whenever a command's worst case would not fit (growth is rare, never per order)."""
        if _book is None:
            if max_open_orders is None:
                max_open_orders = capacity
            if hash_key is None:
                hash_key = secrets.randbits(64)
            _check_config(symbols, price_lo, price_hi, capacity, max_open_orders, hash_key)
            _book = new_book(symbols, price_lo, price_hi, capacity, max_open_orders, hash_key)
        self._b = _book
        self._initial_out = max(1, report_buffer)
        self._out = np.zeros(self._initial_out, dtype=REPORT)
        self._one = np.zeros(1, dtype=COMMAND)     # submit/cancel/replace's command
        self._table = None                         # the book's address table (_single), on first use

    # ------------------------------------------------------------ batches

    def process(self, commands: np.ndarray) -> np.ndarray:
        """Sequence and match a batch. Writes `seq` and `engine_ns` into `commands`."""
        return self._taken(self._run(commands, stamp=True))

    def apply(self, commands: np.ndarray) -> np.ndarray:
        """Match commands that already carry `seq` (last_seq + 1, + 2, ...) and `engine_ns`."""
        return self._taken(self._run(commands, stamp=False))

    def process_into(self, commands: np.ndarray, stamp: bool = True) -> np.ndarray:
        """Like process()/apply(), but returns a view of the matcher's own report buffer,
        valid until the next call: no allocation once the buffer has grown to fit."""
        n = self._run(commands, stamp)   # may replace self._out with a larger buffer
        return self._out[:n]

    def _taken(self, n: int) -> np.ndarray:
        """The first n reports as an array the caller owns: a large result takes the
        buffer itself (the matcher starts a fresh one, whose pages cost nothing until
        written), a small one is copied out."""
        if n < HAND_OVER:
            return self._copied(n)
        out = self._out[:n]
        self._out = np.zeros(self._initial_out, dtype=REPORT)
        return out

    @property
    def _out(self) -> np.ndarray:
        """The report buffer (the engine's matcher role grows it too, through this setter)."""
        return self._reports

    @_out.setter
    def _out(self, out: np.ndarray) -> None:
        self._reports = out
        self._outw = out.view(np.uint64).reshape(len(out), -1)   # the same records as words

    def _copied(self, n: int) -> np.ndarray:
        """A copy of the first n reports. Copied as words: numpy copies a record array with
        padding field by field (several us for a few records)."""
        return self._outw[:n].copy().view(REPORT).reshape(n)

    def _run(self, commands: np.ndarray, stamp: bool) -> int:
        if not isinstance(commands, np.ndarray) or commands.dtype != COMMAND:
            raise SchemaMismatch("Matcher.process", COMMAND,
                                 getattr(commands, "dtype", type(commands).__name__))
        if commands.ndim != 1:
            raise UsageError(f"commands: expected a 1-d array, got shape {commands.shape}")
        if not commands.flags.c_contiguous:
            # Kernels take contiguous arrays only (one compiled signature); stamp back.
            tmp = np.ascontiguousarray(commands)
            n = self._run(tmp, stamp)
            commands[...] = tmp
            return n
        # A batch's usual need at once (a report or two per command, plus fills): growing
        # buffers by doubling while matching costs more than the batch itself on a fresh
        # matcher, and untouched pages of a larger buffer cost nothing.
        want = REPORTS_PER_COMMAND * len(commands) + 8
        if len(self._out) < want:
            self._out = np.zeros(1 << (want - 1).bit_length(), REPORT)
        return self._match(commands, stamp)

    def _match(self, commands: np.ndarray, stamp: bool) -> int:
        # CLOCK_MONOTONIC, like the producers' send times: per-stage latency subtracts them.
        # Not part of the book state: replay takes the stamps from the log.
        engine_ns = time.monotonic_ns() if stamp else 0
        i, n = 0, 0
        while True:
            i, n, status = matcher_kernels._run(self._b, commands, i, len(commands), self._out, n, stamp,
                                  engine_ns)
            if status == matcher_kernels.ST_DONE:
                return n
            if status == matcher_kernels.ST_SEQ_GAP:
                raise UsageError(f"commands[{i}].seq: expected {self.last_seq + 1}, "
                                 f"found {int(commands[i]['seq'])}")
            need = n + int(matcher_kernels._worst_case(self._b, commands[i]))
            grown = np.zeros(max(2 * len(self._out), 1 << (need - 1).bit_length()), REPORT)
            grown[:n] = self._out[:n]
            self._out = grown

    # ------------------------------------------------------------ one at a time

    def submit(self, side, price: int, qty: int, *, client_id: int, producer: int = 0,
               symbol: int = 0, order_type=OrderType.LIMIT, tif=Tif.GTC, stp=Stp.NONE,
               account: int = 0) -> np.ndarray:
        """Submit one NEW order; returns its reports."""
        return self._call(K_NEW, int(side), int(order_type), int(tif), int(stp), producer, symbol,
                          account, client_id, price, qty)

    def cancel(self, client_id: int, *, producer: int = 0, symbol: int = 0) -> np.ndarray:
        """Cancel one order; returns its reports."""
        return self._call(K_CANCEL, 0, 0, 0, 0, producer, symbol, 0, client_id, 0, 0)

    def replace(self, client_id: int, price: int, qty: int, *, producer: int = 0, symbol: int = 0,
                stp=Stp.NONE) -> np.ndarray:
        """Replace one order's price and open quantity; returns its reports."""
        return self._call(K_REPLACE, 0, 0, 0, int(stp), producer, symbol, 0, client_id, price, qty)

    def _call(self, *fields) -> np.ndarray:
        """One command, field by field (`_single.one_command`: the book passed as one table
        of addresses), compiled for int64 fields only: any other value (a float, a numpy
        integer, a client id beyond int64) and a result too large for the report buffer
        take the batch path, which checks each field."""
        if self._table is None:
            self._table = _single.address_table(self._b)
            _single.compile_once(self._table, self._b.ids, self._one, self._out)
        n, st = 0, matcher_kernels.ST_OUT_FULL
        if _INT_ONLY.issuperset(map(type, fields)):     # numba would convert a float: not here
            try:
                n, st = _single.one_command(self._table, self._b.ids, self._one, self._out, *fields,
                                            time.monotonic_ns())
            except OverflowError:  # an integer beyond int64 (a client id up to 2**64 - 1)
                pass
        if st == matcher_kernels.ST_DONE:
            return self._copied(n)
        if st == _single.ST_BAD_FIELD:
            raise UsageError(f"{_single.FIELD_NAMES[n]}: {fields[n - 1]!r} is outside the field's range "
                             f"(COMMAND {COMMAND[_single.FIELD_NAMES[n]]})")
        return self._through_batch(fields)

    def _through_batch(self, fields: tuple) -> np.ndarray:
        """One command (`_call`'s fields) through the reused one-record array and the batch
        path: integers only (bool counts as one), each in its field's range."""
        for name, v in zip(_single.FIELD_NAMES[1:], fields):
            if not isinstance(v, (int, np.integer)):
                raise UsageError(f"{name}: {v!r} is not an integer (prices in ticks, quantities in lots)")
        kind, side, order_type, tif, stp, producer, symbol, account, client_id, price, qty = fields
        one = self._one
        try:
            one[0] = (kind, side, order_type, tif, stp, 0, producer, symbol, account, client_id, price, qty,
                      0, 0, 0, 0)
        except (OverflowError, ValueError, TypeError) as e:
            raise UsageError(f"command fields {fields}: {e}") from None
        return self._copied(self._match(one, True))

    # ------------------------------------------------------------ views

    @property
    def config(self) -> dict:
        """The constructor's arguments that made this book: Matcher(**config) is the same
        empty book (hash key included)."""
        c = self._b.cfg
        return dict(symbols=int(c[C_SYMBOLS]), price_lo=int(c[C_LO]), price_hi=int(c[C_HI]),
                    capacity=int(c[C_CAP]), max_open_orders=int(c[C_OPEN_CAP]),
                    hash_key=int(self._b.hkey[2]))

    @property
    def last_seq(self) -> int:
        return int(self._b.meta[M_LAST_SEQ])

    @property
    def live(self) -> int:
        """Resting orders."""
        return int(self._b.meta[M_LIVE])

    def resting(self) -> np.ndarray:
        """Every resting order: by symbol, BUY before SELL, best price first, then time."""
        out = np.zeros(self.live, dtype=RESTING)
        n = matcher_kernels._resting(self._b, out)
        assert n == len(out), f"Invariant: walked {n} resting orders, live count says {len(out)}"
        return out

    def best_bid(self, symbol: int = 0) -> int | None:
        return self._best(symbol, Side.BUY)

    def best_ask(self, symbol: int = 0) -> int | None:
        return self._best(symbol, Side.SELL)

    def _best(self, symbol: int, side: Side) -> int | None:
        self._check_symbol(symbol)
        t = int(self._b.best[symbol * 2 + side - 1])
        return None if t < 0 else t + int(self._b.cfg[C_LO])

    def depth(self, symbol: int = 0, levels: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """L2 view: (bids, asks), each an array of (price, qty, orders), best level first."""
        self._check_symbol(symbol)
        sides = []
        for side in (Side.BUY, Side.SELL):
            out = np.zeros(levels, dtype=LEVEL)
            n = matcher_kernels._depth(self._b, symbol * 2 + side - 1, levels, out)
            sides.append(out[:n])
        return sides[0], sides[1]

    def state_hash(self) -> str:
        """blake2b of the canonical book state: last seq and every resting order in
        priority order. Arena slots and table layout do not enter, so equal books hash equal."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.array([STATE_FORMAT, self.last_seq], dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.resting()).tobytes())
        return h.hexdigest()

    def _check_symbol(self, symbol: int) -> None:
        if not 0 <= symbol < int(self._b.cfg[C_SYMBOLS]):
            raise UsageError(f"symbol: {symbol} is not in [0, {int(self._b.cfg[C_SYMBOLS])})")

    # ------------------------------------------------------------ state (snapshots)

    def export_state(self) -> dict[str, np.ndarray]:
        """Every array of the book (copies): with from_state(), an exact round trip."""
        return {name: arr.copy() for name, arr in zip(FIELDS, self._b)}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], *, copy: bool = True) -> "Matcher":
        """A matcher over the arrays of an exported state. ``copy=False`` adopts them as
        they are (the caller hands over arrays nobody else holds: writable, C-contiguous,
        aligned), which saves a copy of the whole book (a snapshot load's largest cost)."""
        if "o_flags" not in state and "o_qty" in state:
            # a state saved before books kept order flags: none of its orders is marked post-only
            state = {**state, "o_flags": np.zeros(len(state["o_qty"]), np.uint8)}
        missing = [f for f in FIELDS if f not in state]
        if missing:
            raise UsageError(f"matcher state: missing arrays {missing}")
        spec = book_spec(*_config_of(state["cfg"]))
        for name in FIELDS:
            got, (dt, shape) = state[name], spec[name]
            if got.dtype != dt or got.shape != shape:
                raise UsageError(f"matcher state: array {name!r} is {got.dtype}{got.shape}, "
                                 f"expected {dt}{shape}")
            if not copy and not (got.flags.writeable and got.flags.c_contiguous and got.flags.aligned):
                raise UsageError(f"matcher state: array {name!r} cannot be adopted (writeable "
                                 f"{got.flags.writeable}, C-contiguous {got.flags.c_contiguous}, "
                                 f"aligned {got.flags.aligned}): use copy=True")
        book = Book(**{f: np.array(state[f], copy=True) if copy else state[f] for f in FIELDS})
        return cls(_book=book)

    @property
    def book(self) -> Book:
        """The raw arrays (for check_book and kernels that drive the matcher)."""
        return self._b

    def __repr__(self) -> str:
        c = self.config
        return (f"Matcher(symbols={c['symbols']}, price_lo={c['price_lo']}, "
                f"price_hi={c['price_hi']}, capacity={c['capacity']}, live={self.live}, "
                f"last_seq={self.last_seq})")


def book_shape(config: dict) -> dict:
    """What must agree between a data directory's book and a launch: the whole config but
    the hash key (a book keeps the key it was made with)."""
    return {k: v for k, v in config.items() if k != "hash_key"}


def _config_of(cfg: np.ndarray) -> tuple[int, int, int, int]:
    return int(cfg[C_SYMBOLS]), int(cfg[C_LO]), int(cfg[C_HI]), int(cfg[C_CAP])


def _check_config(symbols: int, price_lo: int, price_hi: int, capacity: int, max_open_orders: int,
                  hash_key: int) -> None:
    if not 1 <= symbols <= 1 << 16:
        raise UsageError(f"symbols: {symbols} is not in [1, 65536]")
    if not (PRICE_MIN <= price_lo <= price_hi <= PRICE_MAX):
        raise UsageError(f"price band: [{price_lo}, {price_hi}] is empty or outside int32 ticks")
    if price_hi - price_lo + 1 > MAX_TICKS:
        raise UsageError(f"price band: {price_hi - price_lo + 1} ticks is more than {MAX_TICKS}")
    if not 1 <= capacity <= 1 << 30:
        raise UsageError(f"capacity: {capacity} is not in [1, 2**30]")
    if not 1 <= max_open_orders <= 1 << 30:
        raise UsageError(f"max_open_orders: {max_open_orders} is not in [1, 2**30]")
    if not 0 <= hash_key < 1 << 64:
        raise UsageError(f"hash_key: {hash_key} is not in [0, 2**64)")
    nbytes = symbols * 2 * (price_hi - price_lo + 1) * 24
    if nbytes > 8 << 30:
        raise UsageError(f"ladder: {symbols} symbols x {price_hi - price_lo + 1} ticks needs "
                         f"{nbytes >> 20} MiB; narrow the band or use fewer symbols")


