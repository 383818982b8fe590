"""The queue database: claims, states, user commands, crash recovery, pause, and refusing foreign files."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kohya_wrap.queue.store import Claimant, NewJob, QueueError, QueueStore


@pytest.fixture
def store(tmp_path: Path) -> QueueStore:
    return QueueStore(tmp_path / "runs")


def dead_claimant() -> Claimant:
    """A claimant on this host whose process has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return Claimant(Claimant.current().host, proc.pid, "")


def test_new_database_is_ours_in_wal_mode(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "runs")
    store.close()
    conn = sqlite3.connect(tmp_path / "runs" / "queue.sqlite3")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
    conn.close()


def test_claim_order_is_priority_then_age(store: QueueStore) -> None:
    a = store.add(Path("/r/a"))
    b = store.add(Path("/r/b"), priority=5)
    c = store.add(Path("/r/c"), priority=5)
    me = Claimant.current()
    claimed = [store.claim(me), store.claim(me), store.claim(me), store.claim(me)]
    assert [j.id if j else None for j in claimed] == [b.id, c.id, a.id, None]
    first = claimed[0]
    assert first is not None
    assert first.state == "claimed" and first.attempts == 1 and first.claimant == me


def test_claim_skips_jobs_wider_than_the_slot(store: QueueStore) -> None:
    store.add_all([NewJob(Path("/r/wide"), gpus=2), NewJob(Path("/r/narrow"), gpus=1)])
    job = store.claim(Claimant.current(), max_gpus=1)
    assert job is not None and job.run_dir == Path("/r/narrow")
    assert store.claim(Claimant.current(), max_gpus=1) is None
    assert [j.run_dir for j in store.next_queued()] == [Path("/r/wide")]


def test_states_through_a_run(store: QueueStore) -> None:
    store.add(Path("/r/a"), sweep="s1")
    job = store.claim(Claimant.current())
    assert job is not None
    assert store.record_child(job, 4242)
    running = store.mark_running(job, 4242, [2, 3])
    assert running is not None
    assert (running.state, running.pgid, running.gpu_ids) == ("running", 4242, (2, 3))
    assert store.finish(job, "done", "completed")
    done = store.get(job.id)
    assert (done.state, done.reason, done.sweep, done.finished) == ("done", "completed", "s1", True)
    assert dataclasses.replace(done) == done  # every field is set, as __init__ would
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.state = "queued"  # type: ignore[misc]
    assert not store.finish(job, "failed", "late")  # an outcome is recorded once
    assert store.get(job.id).state == "done"


def test_concurrent_claims_never_share_a_job(tmp_path: Path) -> None:
    QueueStore(tmp_path).add_all(NewJob(Path(f"/r/{i}")) for i in range(60))
    taken: list[int] = []
    lock = threading.Lock()

    def claimer() -> None:
        store = QueueStore(tmp_path)
        while (job := store.claim(Claimant.current())) is not None:
            with lock:
                taken.append(job.id)
        store.close()

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(1, 61))


def test_cancel_retry_remove(store: QueueStore) -> None:
    a, b = store.add(Path("/r/a")), store.add(Path("/r/b"))
    (cancelled,) = store.cancel([a.id])
    assert (cancelled.state, cancelled.reason) == ("cancelled", "cancelled by the user")
    assert store.claim(Claimant.current()) == store.get(b.id)  # a cancelled job never starts
    (retried,) = store.retry([a.id])
    assert (retried.state, retried.resume) == ("queued", True)
    with pytest.raises(QueueError) as err:
        store.remove([b.id])
    assert err.value.lines == (f"queue remove: job {b.id} is claimed; cancel it first",)
    (removed,) = store.remove([a.id])
    assert removed.id == a.id
    assert [j.id for j in store.list()] == [b.id]


def test_unknown_or_finished_ids_change_nothing(store: QueueStore) -> None:
    a = store.add(Path("/r/a"))
    with pytest.raises(QueueError) as err:
        store.cancel([a.id, 99])
    assert err.value.lines == (f"queue cancel: no job 99 in {store.path}; see `kohya-wrap queue list`",)
    assert store.get(a.id).state == "queued"
    with pytest.raises(QueueError) as err:
        store.retry([a.id])
    assert err.value.lines == (f"queue retry: job {a.id} is queued",)


def test_finish_after_cancel_keeps_cancelled(store: QueueStore) -> None:
    store.add(Path("/r/a"))
    job = store.claim(Claimant.current())
    assert job is not None and store.mark_running(job, None) is not None
    store.cancel([job.id])
    assert not store.finish(job, "interrupted", "stopped")
    assert store.get(job.id).state == "cancelled"


def test_a_stale_claim_cannot_mark_running(store: QueueStore) -> None:
    store.add(Path("/r/a"))
    first = store.claim(dead_claimant())
    assert first is not None
    store.recover()  # requeued: the claim of `first` is over
    second = store.claim(Claimant.current())
    assert second is not None and second.attempts == 2
    assert store.mark_running(first, 1) is None
    assert store.mark_running(second, 2) is not None


def test_pause_and_resume_flag(store: QueueStore, tmp_path: Path) -> None:
    assert not store.paused()
    store.pause()
    assert QueueStore(tmp_path / "runs").paused()
    store.resume()
    assert not store.paused()


def test_recover_resumes_once_then_fails(store: QueueStore) -> None:
    job = store.add(Path("/r/a"))
    store.claim(dead_claimant())
    recovery = store.recover()
    (requeued,) = recovery.requeued
    assert (requeued.state, requeued.resume, requeued.crashes) == ("queued", True, 1)
    assert requeued.reason is not None and requeued.reason.startswith("interrupted: its runner (")
    again = store.claim(dead_claimant())
    assert again is not None
    recovery = store.recover()
    (failed,) = recovery.failed
    assert failed.id == job.id and failed.state == "failed"
    assert failed.reason is not None and failed.reason.startswith("interrupted again:")


def test_recover_leaves_live_claims_and_reports_orphans(store: QueueStore) -> None:
    store.add(Path("/r/live"))
    store.add(Path("/r/orphan"))
    live = store.claim(Claimant.current())
    orphan = store.claim(dead_claimant())
    assert live is not None and orphan is not None
    assert store.record_child(orphan, os.getpgid(0))  # its worker's group is alive (ours, here)
    recovery = store.recover()
    assert recovery.requeued == () and recovery.failed == ()
    assert [j.id for j in recovery.orphans] == [orphan.id]
    assert store.get(live.id).state == "claimed"


def test_recover_requeues_cleanly_interrupted_without_counting_a_crash(store: QueueStore) -> None:
    store.add(Path("/r/a"))
    job = store.claim(Claimant.current())
    assert job is not None
    store.finish(job, "interrupted", "stopped")
    (requeued,) = store.recover().requeued
    assert (requeued.state, requeued.resume, requeued.crashes) == ("queued", True, 0)


def test_claims_of_other_hosts_are_not_judged_here(store: QueueStore) -> None:
    store.add(Path("/r/a"))
    job = store.claim(Claimant("another-host.example", 1, ""))
    assert job is not None
    assert store.recover() == type(store.recover())()
    assert store.get(job.id).state == "claimed"


def test_foreign_database_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(QueueError) as err:
        QueueStore(tmp_path)
    assert err.value.lines == (
        f"queue: {path} is an SQLite database that is not a kohya_wrap queue; "
        "move it away or use another runs folder (it was left as it is)",
    )
    assert path.read_bytes() == before


def test_corrupt_database_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "queue.sqlite3"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(QueueError) as err:
        QueueStore(tmp_path)
    assert err.value.lines == (
        f"queue: {path} is corrupt or not a database (file is not a database); move it away to start a new "
        "queue (the run folders keep every run's record)",
    )
    assert path.read_bytes() == b"this is not sqlite at all" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["queue.sqlite3"]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    QueueStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "queue.sqlite3")
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(QueueError) as err:
        QueueStore(tmp_path)
    assert err.value.lines == (
        f"queue: {tmp_path / 'queue.sqlite3'} was written by a newer kohya_wrap (schema 99, this one reads 1); "
        "upgrade kohya_wrap",
    )


def test_set_priority_reorders_queued_jobs(store: QueueStore) -> None:
    a, b = store.add(Path("/r/a")), store.add(Path("/r/b"))
    (changed,) = store.set_priority([b.id], 9)
    assert changed.priority == 9
    assert [j.id for j in store.next_queued()] == [b.id, a.id]
    assert store.count_queued() == 2
    store.claim(Claimant.current())
    with pytest.raises(QueueError) as err:
        store.set_priority([b.id], 1)
    assert err.value.lines == (f"queue priority: job {b.id} is claimed; only a queued job waits for its turn",)
