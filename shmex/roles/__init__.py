"""roles — one module per engine process, each with its agent (Python: set-up, recovery,
snapshots, the stop) and its numba duty kernel side by side (``<role>_duty.py``).

Contract:

- Each role is declared once, in `shmex.engine.registry`; its module has
  ``run(cfg, ctl, me, index) -> exit status`` and ``warm()`` (load its kernels).
- The matcher is the sequencer and the book's only owner; matching never waits for the
  disk. A report of command s reaches its producer only when DURABLE_SEQ >= s.
- A ring slot is released only when what it holds is safe downstream: input and
  journal slots when durable, out slots when routed.
- A restarted role resumes from the rings (`shmex.recovery.resume`): nothing accepted
  into a ring is lost, nothing is applied twice.
- A role that meets a durability fault fail-stops with exit status 3.
"""
