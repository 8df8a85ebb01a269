"""The serving process's garbage collector settings (``nanobot.server.app.tune_collector``)."""

from __future__ import annotations

import gc

from nanobot.server.app import YOUNG_COLLECTION_THRESHOLD, tune_collector


def test_the_youngest_generation_is_collected_less_often_and_the_older_ones_as_before() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        tune_collector()
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, 10, 10)
        assert YOUNG_COLLECTION_THRESHOLD > 700
    finally:
        gc.set_threshold(*before)
