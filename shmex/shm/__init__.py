"""shm — named POSIX shared-memory segments with a safe lifecycle.

Contract:

- A segment is ``/shmex-<run_id>-<role>``, created exclusively (O_CREAT|O_EXCL, mode
  0600), zero-filled, and starts with a 1024-byte header (magic, layout version, size,
  record dtype digest and descr, creator pid, run id, role); the payload is 64-byte aligned.
- `Segment.attach` checks the header before anything is read; a missing, foreign,
  wrong-version, wrong-size or wrong-dtype segment raises AttachError naming the
  segment and every field that differs.
- `close()` unmaps this process's copy (and raises ViewsAlive rather than leave a
  dangling view); `unlink()` removes the name; they are separate acts.
- Every process with a segment open holds a shared lock on it, which the kernel drops
  when the process dies; a run is dead only when no process holds one and its creator
  is gone.
- `remove_dead_runs` (`shmex clean`) unlinks only dead runs' segments, lists what it
  removed, and never touches a live run.
"""

from shmex.shm.header import CACHE_LINE, HEADER_BYTES, SEGMENT_VERSION
from shmex.shm.names import new_run_id, parse_name, segment_name
from shmex.shm.registry import RunInfo, SegmentInfo, list_runs, list_segments, remove_dead_runs
from shmex.shm.segment import HeaderInfo, Segment, SegmentExists, ViewsAlive, unlink

__all__ = ["CACHE_LINE", "HEADER_BYTES", "SEGMENT_VERSION", "HeaderInfo", "RunInfo", "Segment",
           "SegmentExists", "SegmentInfo", "ViewsAlive", "list_runs", "list_segments",
           "new_run_id", "parse_name", "remove_dead_runs", "segment_name", "unlink"]
