"""Unique, unpredictable ids for requests and completions.

128 random bits from the kernel per id: nothing to share between threads or
reseed in a forked worker, and an id says nothing about how many came
before it (a per-process counter revealed the server's request volume).
One ``urandom`` call costs about what formatting a counter did (~0.6 µs).
"""

from __future__ import annotations

import os


def new_id() -> str:
    """32 hex characters."""
    return os.urandom(16).hex()
