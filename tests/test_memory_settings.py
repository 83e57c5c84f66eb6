"""A worker moves what it built at start out of the garbage collector's way (pypi.server.memory)."""

from __future__ import annotations

import gc

from pypi.server.memory import freeze_startup_objects


def test_startup_objects_are_frozen_and_new_ones_still_collected():
    kept = {"a": [1, 2, 3]}
    try:
        assert freeze_startup_objects() > 0
        assert not any(o is kept for o in gc.get_objects())  # frozen: no collection walks it
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made afterwards is still found
    finally:
        gc.unfreeze()
