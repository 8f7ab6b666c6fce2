"""Deprecated alias of `shmex.client` (import ``from shmex.client import connect``)."""

import warnings

from shmex.client import *  # noqa: F401,F403 - the deprecated alias re-exports the API
from shmex.client import Client, EngineStopped, connect, find_runs  # noqa: F401

warnings.warn("shmex.procs.client moved to shmex.client", DeprecationWarning, stacklevel=2)
