"""Network protocols: SoupBinTCP sessions, OUCH 5.0 order entry, and their configuration
(instruments, users). Codecs are numba kernels over byte arrays; sockets live in roles/."""

import os as _os

_HERE = _os.path.dirname(_os.path.abspath(__file__))
EXAMPLE_SYMBOLS = _os.path.join(_HERE, "examples", "symbols.csv")
EXAMPLE_USERS = _os.path.join(_HERE, "examples", "users.csv")
