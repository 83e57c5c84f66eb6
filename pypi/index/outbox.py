"""Queue CDN purges in the purge outbox, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from pypi.index.db import Tx, utcnow


def enqueue(tx: Tx, purges: Mapping[str, Sequence[str]]) -> None:
    """Add one outbox row per surrogate key (with the paths it covers).

    Written in the same transaction as the change, so a committed change
    always has its purge queued and a rolled-back one never does.
    """
    now = utcnow()
    for key, paths in purges.items():
        tx.execute(
            "INSERT INTO purge_outbox (purge_key, paths, created, next_attempt) VALUES (?, ?, ?, ?)",
            (key, json.dumps(list(paths)), now, now),
        )
