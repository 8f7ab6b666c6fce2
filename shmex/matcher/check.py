"""check_book: every internal rule of the book, checked in plain Python (for tests).

Slow on purpose and independent of the kernels: it walks the arrays directly.
"""

from __future__ import annotations

import numpy as np

from shmex.matcher._kernels import _id_find
from shmex.matcher.book import (C_CAP, C_HMASK, C_LO, C_NSUM, C_NTICKS, C_NWORDS, C_SYMBOLS,
                                M_FREE_TOP, M_LIVE)


def check_book(m) -> list[str]:
    """Names every broken rule of a Matcher's (or a Book's) arrays; [] when sound."""
    b = m.book if hasattr(m, "book") else m
    bad: list[str] = []
    symbols, lo, nt = int(b.cfg[C_SYMBOLS]), int(b.cfg[C_LO]), int(b.cfg[C_NTICKS])
    cap, nwords, nsum = int(b.cfg[C_CAP]), int(b.cfg[C_NWORDS]), int(b.cfg[C_NSUM])
    top, live = int(b.meta[M_FREE_TOP]), int(b.meta[M_LIVE])
    if top + live != cap:
        bad.append(f"free_top {top} + live {live} != capacity {cap}")
    free = set(int(s) for s in b.free[:top])
    if len(free) != top:
        bad.append("free list holds a slot twice")
    seen: set[int] = set()
    for bk in range(2 * symbols):
        side = bk % 2 + 1
        sym = bk // 2
        nonempty = []
        count = 0
        for t in range(nt):
            lv = bk * nt + t
            slot, prev, qty, n = int(b.lv_head[lv]), -1, 0, 0
            while slot >= 0:
                if slot in seen:
                    bad.append(f"slot {slot} is linked twice (book {bk} tick {t})")
                    break
                seen.add(slot)
                if slot in free:
                    bad.append(f"slot {slot} rests at book {bk} tick {t} but is on the free list")
                if int(b.o_prev[slot]) != prev:
                    bad.append(f"slot {slot}: prev {int(b.o_prev[slot])}, expected {prev}")
                if (int(b.o_sym[slot]), int(b.o_side[slot]), int(b.o_price[slot])) != (sym, side, t + lo):
                    bad.append(f"slot {slot}: symbol/side/price disagree with its level "
                               f"(book {bk} tick {t})")
                if int(b.o_qty[slot]) <= 0:
                    bad.append(f"slot {slot}: resting with leaves {int(b.o_qty[slot])}")
                qty += int(b.o_qty[slot])
                n += 1
                prev, slot = slot, int(b.o_next[slot])
            if int(b.lv_tail[lv]) != prev:
                bad.append(f"book {bk} tick {t}: tail {int(b.lv_tail[lv])}, expected {prev}")
            if int(b.lv_qty[lv]) != qty or int(b.lv_cnt[lv]) != n:
                bad.append(f"book {bk} tick {t}: level says qty {int(b.lv_qty[lv])} "
                           f"count {int(b.lv_cnt[lv])}, orders sum to {qty} and {n}")
            bit = (int(b.bm[bk * nwords + (t >> 6)]) >> (t & 63)) & 1
            if bit != (n > 0):
                bad.append(f"book {bk} tick {t}: bitmap bit {bit} but {n} orders")
            if n:
                nonempty.append(t)
            count += n
        for w in range(nwords):
            sbit = (int(b.sm[bk * nsum + (w >> 6)]) >> (w & 63)) & 1
            if sbit != (int(b.bm[bk * nwords + w]) != 0):
                bad.append(f"book {bk} word {w}: summary bit {sbit} disagrees with the word")
        want = (max(nonempty) if side == 1 else min(nonempty)) if nonempty else -1
        if int(b.best[bk]) != want:
            bad.append(f"book {bk}: best {int(b.best[bk])}, expected {want}")
        if int(b.cnt[bk]) != count:
            bad.append(f"book {bk}: count {int(b.cnt[bk])}, expected {count}")
    if len(seen) != live:
        bad.append(f"{len(seen)} orders rest but live says {live}")
    per_prod = np.bincount(np.asarray([int(b.o_prod[s]) for s in seen], dtype=np.int64),
                           minlength=len(b.p_open))
    for prod in np.flatnonzero(per_prod != b.p_open):
        bad.append(f"producer {prod}: p_open {int(b.p_open[prod])}, {int(per_prod[prod])} orders rest")
    if free | seen != set(range(cap)):
        bad.append("some slot is neither resting nor free")
    # The id table holds exactly the resting orders, each findable from its home.
    mask = int(b.cfg[C_HMASK])
    used = np.flatnonzero(b.ids["prod"] >= 0)
    if len(used) != live:
        bad.append(f"id table holds {len(used)} ids, {live} orders rest")
    for h in used:
        e = b.ids[h]
        slot = int(e["slot"])
        if slot not in seen or int(b.o_prod[slot]) != int(e["prod"]) \
                or int(b.o_cid[slot]) != int(e["cid"]):
            bad.append(f"id table entry {h} points at slot {slot}, which is not that order")
        if _id_find(b, np.int64(e["prod"]), np.uint64(e["cid"])) != h:
            bad.append(f"id table entry {h} is not reachable from its home (mask {mask})")
    return bad
