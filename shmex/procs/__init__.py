"""Deprecated: the engine's modules moved to `shmex.engine` (runtime), `shmex.roles`
(processes) and `shmex.commands`; the client API is `shmex.client`. Only
``shmex.procs.client`` is kept, as an alias that warns."""
