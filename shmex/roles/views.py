"""Named inputs of the duty kernels: a ring's arrays as numba reads them by field name."""

from __future__ import annotations

from collections import namedtuple

# one ring's arrays (views of its mapping) and the semaphore a kernel posts for it (0:
# the kernel posts none: it returns and Python posts)
Ring = namedtuple("Ring", "slots ctl loc sem")
# several rings: typed Lists of their arrays, an array of their semaphores
Rings = namedtuple("Rings", "slots ctls locs sems")


def rings(views: list, sems) -> Rings:
    """Rings of several rings' (slots, ctl, loc) and the semaphore addresses posted for them."""
    import numpy as np
    from numba.typed import List

    return Rings(List([v[0] for v in views]), List([v[1] for v in views]), List([v[2] for v in views]),
                 np.asarray(sems, dtype=np.int64))


def scratch_ring() -> Ring:
    """A ring's arrays of the live types, in private memory: for warming kernels."""
    import numpy as np

    from shmex.ring import layout as ring_layout

    return Ring(np.zeros((4, 8), np.uint64), np.zeros(ring_layout.CTL_BYTES // 8, np.int64),
                np.zeros(ring_layout.LOCAL_CELLS, np.int64), 0)
