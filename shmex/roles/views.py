"""Named inputs of the duty kernels: a ring's arrays as numba reads them by field name."""

from __future__ import annotations

from collections import namedtuple

# one ring's arrays (views of its mapping) and the semaphore a kernel posts for it (0:
# the kernel posts none: it returns and Python posts)
Ring = namedtuple("Ring", "slots ctl loc sem")
# several rings: typed Lists of their arrays, an array of their semaphores
Rings = namedtuple("Rings", "slots ctls locs sems")
