
# --- shm / ring fixtures (shmex/shm, shmex/ring) ------------------------------------------
import os as _os

import pytest as _pytest


@_pytest.fixture
def shm_run():
    """A unique run id for one test; fails the test if any of the run's segments leak."""
    from shmex.shm.names import PREFIX, SHM_DIR, new_run_id
    from shmex.shm.segment import unlink as _unlink

    run_id = new_run_id()
    yield run_id
    leaked = sorted(e for e in _os.listdir(SHM_DIR) if e.startswith(f"{PREFIX}{run_id}-"))
    for entry in leaked:
        _unlink("/" + entry, missing_ok=True)
    assert not leaked, f"segments leaked by the test: {leaked}"
