"""Unique, unpredictable ids for requests and completions.

A random prefix per process, then 64 random bits from the kernel per id:
an id says nothing about how many came before it (a per-process counter
revealed the server's request volume), and the prefix tells which worker
process answered, which is all it tells. One ``urandom`` call costs about
what formatting a counter did (well under a microsecond).
"""

from __future__ import annotations

import os

_PREFIX = os.urandom(8).hex()


def _reseed() -> None:
    # A forked worker (api.workers) gets a prefix of its own.
    global _PREFIX
    _PREFIX = os.urandom(8).hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """32 hex characters: the process's 16, then 16 random ones."""
    return _PREFIX + os.urandom(8).hex()
