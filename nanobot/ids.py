"""Unique ids for requests and completions, cheaply.

A random per-process prefix plus a counter: unique across restarts and
processes, without a ``urandom`` system call per id. Ids are labels, not
secrets, so predictability within a process does not matter.
"""

from __future__ import annotations

import itertools
import os

_PREFIX = os.urandom(8).hex()
_counter = itertools.count(1)


def _reseed() -> None:
    # A forked worker (api.workers) must not repeat its siblings' ids.
    global _PREFIX, _counter
    _PREFIX = os.urandom(8).hex()
    _counter = itertools.count(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reseed)


def new_id() -> str:
    """32 hex characters."""
    return f"{_PREFIX}{next(_counter):016x}"
