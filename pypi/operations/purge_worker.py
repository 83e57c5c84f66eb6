"""Delivers the purge outbox to the CDN after commit, retrying until the CDN confirms.

Rows are written by ``pypi.index.outbox.enqueue`` in the same transaction as the
change. A worker claims the rows that are due, sends them through the
configured purger (a whole batch in one call), deletes them when the purger
confirms, and otherwise reschedules them with exponential backoff and
jitter. Nothing is ever dropped.

Claiming, so that several workers never send the same row twice:

- PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; the rows stay locked
  while they are sent and are deleted or rescheduled in that transaction.
- SQLite: a short write transaction (SQLite's one write lock serializes
  claimers) moves the rows' ``next_attempt`` a lease into the future; they
  are sent outside it, so a slow CDN never holds the lock that uploads need.
  A worker that dies mid-send leaves rows that fall due again when the lease ends.
"""

from __future__ import annotations

import datetime
import json
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cdn.purge import PurgeError, Purger
from pypi.index.db import Database, DatabaseError, Tx

log = logging.getLogger(__name__)

#: Longest error text kept in purge_outbox.last_error.
ERROR_CHARS = 500


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker paces itself (``[cdn] purge_*`` keys)."""

    batch_size: int = 100
    #: Seconds between polls for rows written by other processes.
    poll_interval: float = 1.0
    #: First retry delay; doubles with every failed attempt up to retry_max.
    retry_base: float = 1.0
    retry_max: float = 300.0
    #: Rows that failed this often are sent one key at a time, so that one key
    #: the CDN refuses cannot hold back the others.
    isolate_after: int = 3
    #: SQLite: how long a claimed row stays hidden from other workers.
    lease: float = 120.0

    @classmethod
    def from_config(cls, settings: Mapping[str, str]) -> WorkerSettings:
        """``purge_batch_size``, ``purge_poll_interval``, ``purge_retry_max`` from ``[cdn]``."""

        def number(key: str, default: float, kind: type = float) -> float:
            text = (settings.get(key) or "").strip()
            try:
                value = kind(text) if text else default
            except ValueError:
                raise ValueError(f"[cdn] {key}: {text!r} is not a number") from None
            if value <= 0:
                raise ValueError(f"[cdn] {key}: must be more than 0")
            return value

        return cls(
            batch_size=int(number("purge_batch_size", cls.batch_size, int)),
            poll_interval=number("purge_poll_interval", cls.poll_interval),
            retry_max=number("purge_retry_max", cls.retry_max),
        )


def retry_delay(attempts: int, settings: WorkerSettings, rng: random.Random) -> float:
    """Seconds before the next try after ``attempts`` failures: exponential, capped, with jitter.

    "Equal jitter": half the delay is fixed, half random, so retries from many
    rows spread out but never come sooner than half the nominal delay.
    """
    nominal = min(settings.retry_max, settings.retry_base * 2 ** max(attempts - 1, 0))
    return nominal / 2 + rng.uniform(0, nominal / 2)


def _iso(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@dataclass(frozen=True)
class Delivery:
    """What one pass delivered: rows deleted, rows rescheduled."""

    sent: int = 0
    failed: int = 0

    def __add__(self, other: Delivery) -> Delivery:
        return Delivery(self.sent + other.sent, self.failed + other.failed)


class PurgeWorker:
    """Sends due outbox rows through ``purger``; run ``deliver_due`` or a background ``start()``."""

    def __init__(
        self,
        db: Database,
        purger: Purger,
        settings: WorkerSettings | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], datetime.datetime] = _now,
    ) -> None:
        self.db = db
        self.purger = purger
        self.settings = settings or WorkerSettings()
        self.rng = rng or random.Random()
        self.clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one pass ---------------------------------------------------------
    def deliver_due(self) -> Delivery:
        """Claim and send one batch of due rows; what happened to them."""
        if self.db.dialect == "postgresql":
            with self.db.transaction(write=True) as tx:
                rows = tx.all(
                    "SELECT id, purge_key, paths, attempts FROM purge_outbox WHERE next_attempt <= ? "
                    "ORDER BY next_attempt, id LIMIT ? FOR UPDATE SKIP LOCKED",
                    (_iso(self.clock()), self.settings.batch_size),
                )
                results = self._send(rows)
                return self._record(tx, rows, results)
        with self.db.transaction(write=True) as tx:
            rows = tx.all(
                "SELECT id, purge_key, paths, attempts FROM purge_outbox WHERE next_attempt <= ? "
                "ORDER BY next_attempt, id LIMIT ?",
                (_iso(self.clock()), self.settings.batch_size),
            )
            lease = _iso(self.clock() + datetime.timedelta(seconds=self.settings.lease))
            for row in rows:
                tx.execute("UPDATE purge_outbox SET next_attempt = ? WHERE id = ?", (lease, row["id"]))
        results = self._send(rows)
        with self.db.transaction(write=True) as tx:
            return self._record(tx, rows, results)

    def deliver_all(self, *, limit: int = 1000) -> Delivery:
        """Repeat ``deliver_due`` while full batches keep coming (at most ``limit`` passes)."""
        total = Delivery()
        for _ in range(limit):
            done = self.deliver_due()
            total += done
            if done.sent + done.failed < self.settings.batch_size:
                break
        return total

    def _send(self, rows: Sequence) -> dict[int, str | None]:
        """row id -> None (purged) or the error; one purger call per group."""
        results: dict[int, str | None] = {}
        for group in self._groups(rows):
            keys = list(dict.fromkeys(r["purge_key"] for r in group))
            paths = list(dict.fromkeys(p for r in group for p in json.loads(r["paths"] or "[]")))
            try:
                self.purger.purge(keys, paths)
                outcome = None
            except PurgeError as exc:
                outcome = str(exc) or exc.__class__.__name__
            except Exception as exc:  # a plugin's bug must not stop the worker
                log.exception("purger %s raised", self.purger.describe())
                outcome = f"{exc.__class__.__name__}: {exc}"
            if outcome:
                log.warning("purge of %s failed: %s", " ".join(keys), outcome)
            for r in group:
                results[r["id"]] = outcome
        return results

    def _groups(self, rows: Sequence) -> list[list]:
        """Fresh rows in one call; rows that failed repeatedly, one call per key."""
        fresh = [r for r in rows if r["attempts"] < self.settings.isolate_after]
        by_key: dict[str, list] = {}
        for r in rows:
            if r["attempts"] >= self.settings.isolate_after:
                by_key.setdefault(r["purge_key"], []).append(r)
        return ([fresh] if fresh else []) + list(by_key.values())

    def _record(self, tx: Tx, rows: Sequence, results: Mapping[int, str | None]) -> Delivery:
        sent = failed = 0
        now = self.clock()
        for row in rows:
            error = results.get(row["id"])
            if error is None:
                tx.execute("DELETE FROM purge_outbox WHERE id = ?", (row["id"],))
                sent += 1
                continue
            attempts = row["attempts"] + 1
            delay = retry_delay(attempts, self.settings, self.rng)
            tx.execute(
                "UPDATE purge_outbox SET attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                (attempts, _iso(now + datetime.timedelta(seconds=delay)), error[:ERROR_CHARS], row["id"]),
            )
            failed += 1
        return Delivery(sent, failed)

    # -- in the background ----------------------------------------------
    def wake(self) -> None:
        """Ask the background loop to look at the outbox now (call after a commit). Never raises."""
        self._wake.set()

    def run(self) -> None:
        """Deliver until ``request_stop()``: at once when woken, else every poll interval."""
        while not self._stop.is_set():
            try:
                self.deliver_all()
            except DatabaseError as exc:
                log.warning("purge worker: database unavailable: %s", exc)
            except Exception:
                log.exception("purge worker: unexpected error")
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()

    def start(self) -> threading.Thread:
        """Run the loop in a daemon thread; ``stop()`` ends it."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="cloudpypi-purge-worker", daemon=True)
        self._thread.start()
        return self._thread

    def request_stop(self) -> None:
        """Ask the loop to end after the send in progress (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """End the background thread and wait for it."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def pending(db: Database) -> list[dict]:
    """Every row still in the outbox, oldest first, as plain dicts."""
    with db.transaction() as tx:
        rows = tx.all(
            "SELECT id, purge_key, paths, created, attempts, next_attempt, last_error "
            "FROM purge_outbox ORDER BY next_attempt, id"
        )
    return [dict(r) for r in rows]
