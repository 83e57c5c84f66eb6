"""The outbox and its worker, on SQLite and PostgreSQL: grouping, retry with backoff and
jitter, nothing dropped, wake-up after commit, and two workers never sending a row twice."""

from __future__ import annotations

import datetime
import random
import threading
import time

from cdn.purge import PurgeError, Purger
from pypi.index import cache_keys, outbox
from pypi.operations.purge_worker import PurgeWorker, WorkerSettings, pending, retry_delay


class FakePurger(Purger):
    """Records calls; fails while ``failing`` (or for keys in ``refused``); waits ``delay`` per call."""

    name = "fake"

    def __init__(self, *, failing: bool = False, delay: float = 0.0) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []
        self.failing = failing
        self.refused: set[str] = set()
        self.delay = delay
        self.lock = threading.Lock()

    @classmethod
    def from_config(cls, settings):
        return cls()

    def purge(self, keys, paths):
        time.sleep(self.delay)
        with self.lock:
            self.calls.append((list(keys), list(paths)))
        if self.failing:
            raise PurgeError("cdn.example.org answered 503 Service Unavailable")
        if self.refused & set(keys):
            raise PurgeError(f"refused {sorted(self.refused & set(keys))}")

    @property
    def keys(self) -> list[str]:
        return [k for keys, _ in self.calls for k in keys]


def queue(db, purges):
    with db.transaction(write=True) as tx:
        outbox.enqueue(tx, purges)


def make_due(db):
    with db.transaction(write=True) as tx:
        tx.execute("UPDATE purge_outbox SET next_attempt = ?", ("2000-01-01T00:00:00.000000Z",))


def test_a_batch_goes_out_in_one_call_and_is_deleted(db):
    queue(db, cache_keys.change_purges("demo", new_project=True))
    queue(db, cache_keys.change_purges("demo"))
    purger = FakePurger()
    done = PurgeWorker(db, purger).deliver_due()
    assert (done.sent, done.failed) == (5, 0)
    [(keys, paths)] = purger.calls
    assert keys == ["project/demo", "recent", "index"]
    assert set(paths) == {*cache_keys.project_paths("demo"), "/", "/simple/"}
    assert pending(db) == []


def test_failure_is_retried_with_backoff_and_nothing_is_dropped(db):
    queue(db, {"project/demo": ["/simple/demo/"]})
    purger = FakePurger(failing=True)
    settings = WorkerSettings(retry_base=1.0, retry_max=8.0)
    worker = PurgeWorker(db, purger, settings, rng=random.Random(1))
    before = datetime.datetime.now(datetime.timezone.utc)
    assert worker.deliver_due().failed == 1
    [row] = pending(db)
    assert row["attempts"] == 1
    assert "503" in row["last_error"]
    next_at = datetime.datetime.strptime(row["next_attempt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    )
    assert 0.4 <= (next_at - before).total_seconds() <= 2.0
    # Not due yet: nothing is sent.
    assert worker.deliver_due().failed == 0 and len(purger.calls) == 1
    for attempt in range(2, 8):
        make_due(db)
        worker.deliver_due()
        assert pending(db)[0]["attempts"] == attempt
    purger.failing = False
    make_due(db)
    assert worker.deliver_due().sent == 1
    assert pending(db) == []
    assert len(purger.calls) == 8


def test_retry_delay_doubles_is_capped_and_jittered():
    settings = WorkerSettings(retry_base=1.0, retry_max=300.0)
    rng = random.Random(7)
    for attempts, nominal in [(1, 1), (2, 2), (3, 4), (5, 16), (9, 256), (10, 300), (50, 300)]:
        delays = {retry_delay(attempts, settings, rng) for _ in range(20)}
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert len(delays) > 1


def test_rows_that_keep_failing_are_sent_one_key_at_a_time(db):
    queue(db, {"project/bad": [], "project/good": []})
    purger = FakePurger()
    purger.refused = {"project/bad"}
    worker = PurgeWorker(db, purger, WorkerSettings(isolate_after=2))
    for _ in range(2):
        worker.deliver_due()
        make_due(db)
    assert [r["purge_key"] for r in pending(db)] == ["project/bad", "project/good"]
    # Isolated now: the good key goes through, the bad one keeps being retried.
    worker.deliver_due()
    assert [r["purge_key"] for r in pending(db)] == ["project/bad"]
    assert purger.calls[-2:] in (
        [(["project/bad"], []), (["project/good"], [])],
        [(["project/good"], []), (["project/bad"], [])],
    )


def test_a_purger_bug_does_not_stop_the_worker(db):
    class Broken(FakePurger):
        def purge(self, keys, paths):
            raise RuntimeError("oops")

    queue(db, {"index": []})
    assert PurgeWorker(db, Broken()).deliver_due().failed == 1
    assert "RuntimeError: oops" in pending(db)[0]["last_error"]


def test_woken_worker_delivers_within_milliseconds(db):
    purger = FakePurger()
    worker = PurgeWorker(db, purger, WorkerSettings(poll_interval=30))
    worker.start()
    try:
        time.sleep(0.2)  # the first pass has run and the loop sleeps
        queue(db, {"project/demo": []})
        started = time.monotonic()
        worker.wake()
        while not purger.calls and time.monotonic() - started < 5:
            time.sleep(0.005)
        assert purger.keys == ["project/demo"]
        assert time.monotonic() - started < 0.5
    finally:
        worker.stop()


def test_the_poll_finds_rows_written_elsewhere(db):
    purger = FakePurger()
    worker = PurgeWorker(db, purger, WorkerSettings(poll_interval=0.2))
    worker.start()
    try:
        queue(db, {"index": []})  # no wake(): another process wrote it
        deadline = time.monotonic() + 3
        while pending(db) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pending(db) == [] and purger.keys == ["index"]
    finally:
        worker.stop()


def test_two_workers_never_send_the_same_row(db_url, db):
    """PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: the claim's write transaction and its lease."""
    from pypi.index.db import Database

    queue(db, {f"project/p{i}": [] for i in range(40)})
    purgers = [FakePurger(delay=0.3), FakePurger(delay=0.3)]
    dbs = [Database(db_url), Database(db_url)]
    workers = [PurgeWorker(d, p, WorkerSettings(batch_size=10)) for d, p in zip(dbs, purgers, strict=True)]
    barrier = threading.Barrier(2)

    def run(worker):
        barrier.wait()
        while worker.deliver_due().sent:
            pass

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for d in dbs:
        d.close()
    sent = purgers[0].keys + purgers[1].keys
    assert sorted(sent) == sorted(f"project/p{i}" for i in range(40))  # each exactly once
    assert purgers[0].keys and purgers[1].keys  # both took part, in parallel
    assert pending(db) == []


def test_upload_succeeds_when_the_after_commit_hook_fails(config, db, users, tmp_path):
    """The hook is the worker's wake-up; whatever happens there, the upload stands."""
    import webtest

    from pypi.app import make_app
    from tests.uploading import upload_wheel as upload

    def broken_hook():
        raise RuntimeError("worker gone")

    app = webtest.TestApp(make_app(config, db=db, after_commit=broken_hook))
    assert upload(app, tmp_path, "demo", "1.0").status_int == 200
    assert [r["purge_key"] for r in pending(db)] == ["project/demo", "recent", "index"]


def test_a_worker_skips_rows_another_is_sending_instead_of_waiting(db_url, db):
    """While worker A is stuck sending its batch (rows locked or leased), B takes the rest at once."""
    from pypi.index.db import Database

    queue(db, {f"project/p{i}": [] for i in range(4)})
    release = threading.Event()

    class Stuck(FakePurger):
        def purge(self, keys, paths):
            super().purge(keys, paths)
            release.wait(10)

    stuck, free = Stuck(), FakePurger()
    dbs = [Database(db_url), Database(db_url)]
    a = PurgeWorker(dbs[0], stuck, WorkerSettings(batch_size=2))
    b = PurgeWorker(dbs[1], free, WorkerSettings(batch_size=2))
    thread = threading.Thread(target=a.deliver_due)
    thread.start()
    try:
        while not stuck.calls:
            time.sleep(0.01)
        started = time.monotonic()
        assert b.deliver_due().sent == 2
        assert time.monotonic() - started < 2
        assert b.deliver_due().sent == 0  # nothing else is due: A's rows are not sent twice
    finally:
        release.set()
        thread.join(10)
        for d in dbs:
            d.close()
    assert sorted(stuck.keys + free.keys) == [f"project/p{i}" for i in range(4)]
    assert pending(db) == []
