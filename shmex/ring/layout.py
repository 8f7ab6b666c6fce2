"""Ring segment layout: offsets into the segment payload. No logic.

The payload after the 1024-byte segment header (see shmex.shm.header)::

    payload
    offset  line  int64 idx  written by   read by     field
    ------  ----  ---------  -----------  ----------  -----------------------------------
       0     0      0..7     creator      all         capacity, mask, record_bytes (consts)
     128     2      16       producer     consumer    PUB_SEQ       records published
     256     4      32       consumer     producer    RELEASED_SEQ  slots the producer may reuse
     320     5      40       consumer     monitors    READ_SEQ      how far the consumer has read
     384     6      48       consumer     producer    CONS_WAITING  1: consumer blocks on DATA_SEM
     448     7      56       producer     consumer    PROD_WAITING  1: producer blocks on SPACE_SEM
     512     8      64..71   attachers    monitors    pids, attach counts, post counts
     640    10      -        both         both        DATA_SEM   sem_t, posted by the producer
     768    12      -        both         both        SPACE_SEM  sem_t, posted by the consumer
    1024    16      -        producer     consumer    slots: capacity x record_bytes

The hot cursors sit 128 bytes apart (Intel's adjacent-line prefetcher pulls lines in
128-byte pairs; lines 2-3 hold only PUB_SEQ, lines 4-5 only consumer-written cursors).
Cursors are int64 sequence numbers that only grow (never masked in shared memory);
slot = seq & mask. Invariant: RELEASED_SEQ <= READ_SEQ <= PUB_SEQ <= RELEASED_SEQ + capacity.
The producer and the consumer each keep a private copy of their own cursor and a
cached copy of the other's (`L_*` below: a per-handle int64 array, not shared).
"""

from __future__ import annotations

RING_LAYOUT = "ring"
RING_LAYOUT_VERSION = 1

CTL_BYTES = 640            # int64 control cells (lines 0..9)
DATA_SEM_OFF = 640         # a process-shared sem_t (32 bytes on glibc) per line
SPACE_SEM_OFF = 768
SEM_BYTES = 64
SLOTS_OFF = 1024

# int64 indices into the control array
C_CAPACITY = 0
C_MASK = 1
C_RECORD_BYTES = 2
C_PUB = 16
C_RELEASED = 32
C_READ = 40
C_CONS_WAITING = 48
C_PROD_WAITING = 56
C_PRODUCER_PID = 64
C_CONSUMER_PID = 65
C_PRODUCER_ATTACHES = 66
C_CONSUMER_ATTACHES = 67
C_DATA_POSTS = 68          # written by the producer
C_SPACE_POSTS = 72         # written by the consumer (own 32 bytes, not the producer's)

# int64 indices into a handle's private array
L_POS = 0      # producer: its PUB_SEQ; consumer: its read position
L_PEER = 1     # cached peer cursor: producer caches RELEASED_SEQ, consumer caches PUB_SEQ
L_REL = 2      # consumer: its RELEASED_SEQ
L_WAKE = 3     # set by a kernel when the peer was found waiting: post its semaphore
LOCAL_CELLS = 8

# byte-range locks on the segment file: at most one live producer and one consumer
LOCK_PRODUCER = 1
LOCK_CONSUMER = 2


def payload_bytes(capacity: int, record_bytes: int) -> int:
    return SLOTS_OFF + capacity * record_bytes
