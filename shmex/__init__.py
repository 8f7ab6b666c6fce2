"""shmex: an order-matching engine in Python whose hot paths are compiled by numba."""

__version__ = "0.1.0"
