"""The run queue: one SQLite database per runs folder saying which run should train next and who holds it.

The run folder and its run.json stay the record of what happened; a row only says what should run next,
who claimed it (host, process, process start) and which process group trains it. Every write is one
short `BEGIN IMMEDIATE` transaction, so several runners (and the web app) share one database safely.

States: `queued` → `claimed` (a runner took it) → `running` (its worker started training) → `done` |
`failed` | `interrupted` (stopped cleanly, resumes when the queue next runs); `cancelled` by the user.
A row whose claimant process is gone is found by `recover()`: queued again to resume once, then failed.
"""

from __future__ import annotations

import builtins
import datetime as dt
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from kohya_wrap.errors import KohyaWrapError
from kohya_wrap.procs import ProcessRef, group_alive

State = Literal["queued", "claimed", "running", "done", "failed", "cancelled", "interrupted"]
STATES: tuple[State, ...] = get_args(State)
ACTIVE_STATES: tuple[State, ...] = ("claimed", "running")
# A row that holds its run folder: waiting for a runner or training in one.
HOLDING_STATES: tuple[State, ...] = ("queued", *ACTIVE_STATES)
# Stopped part-way, by an error, the user or a lost runner: `retry` queues these again to resume.
RETRYABLE_STATES: tuple[State, ...] = ("failed", "cancelled", "interrupted")
FINISHED_STATES: tuple[State, ...] = ("done", "failed", "cancelled")
DB_NAME = "queue.sqlite3"
SCHEMA_VERSION = 1
# Written into the SQLite header (PRAGMA application_id): tells our database from any other SQLite file.
APPLICATION_ID = 0x4B57_5131  # "KWQ1"
BUSY_TIMEOUT_S = 30.0
# What to do when a job is in the wrong state for a command, by command.
ID_HINTS = {"remove": "; cancel it first", "priority": "; only a queued job waits for its turn"}


class QueueError(KohyaWrapError):
    """The queue database is unusable, or a queue command names jobs it cannot act on (exit 2)."""


# The process that claimed a job: its host, pid and a start token that tells a reused pid apart.
Claimant = ProcessRef


@dataclass(frozen=True)
class Job:
    """One queue row (a snapshot: read it again with `QueueStore.get` to see changes)."""

    id: int
    run_dir: Path
    priority: int  # higher runs first; equal priorities run in the order they were added
    state: State
    sweep: str | None  # the sweep the run belongs to (sweeps/<name>.json), if any
    gpus: int  # GPUs the run needs (its run.num_processes)
    attempts: int  # how many times it was claimed; identifies the current claim
    resume: bool  # the next attempt continues from the run's last saved state
    crashes: int  # times its process died without recording an outcome (resumed once, then failed)
    claimant: Claimant | None  # who holds the current (or last) claim
    pgid: int | None  # process group training the current attempt (the worker's), when known
    gpu_ids: tuple[int, ...]  # GPUs the current attempt runs on (empty: not started, or no CUDA)
    reason: str | None  # why it is in its state (failure reason, interruption, cancellation)
    created: str  # ISO times
    updated: str
    claimed_at: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES


@dataclass(frozen=True)
class NewJob:
    """A row to add: a planned run folder and how to schedule it."""

    run_dir: Path
    priority: int = 0
    sweep: str | None = None
    gpus: int = 1
    resume: bool = False  # continue the run folder from its last saved state (it trained before)


@dataclass(frozen=True)
class Recovery:
    """What `recover()` changed: jobs queued again to resume, jobs failed, and live orphans left alone."""

    requeued: tuple[Job, ...] = ()
    failed: tuple[Job, ...] = ()
    orphans: tuple[Job, ...] = field(default=())  # claimant gone, worker process group still alive

    def announce(self, notify: Callable[[str], None]) -> None:
        """Say which jobs were queued again (and how they go on) and which failed; orphans are the caller's."""
        for job in self.requeued:
            how = "resumes from its last saved state" if job.resume else "starts again"
            notify(f"job {job.id}: {job.run_dir.name} was interrupted; it {how}")
        for job in self.failed:
            notify(f"job {job.id}: {job.run_dir.name} failed: {job.reason}")


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_dir TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
    sweep TEXT,
    gpus INTEGER NOT NULL DEFAULT 1,
    attempts INTEGER NOT NULL DEFAULT 0,
    resume INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0,
    claimant_host TEXT,
    claimant_pid INTEGER,
    claimant_start TEXT,
    claimed_at TEXT,
    pgid INTEGER,
    gpu_ids TEXT NOT NULL DEFAULT '',
    reason TEXT,
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (state, priority DESC, id);
"""
_COLUMNS = (
    "id, run_dir, priority, state, sweep, gpus, attempts, resume, crashes, claimant_host, claimant_pid, "
    "claimant_start, pgid, gpu_ids, reason, created, updated, claimed_at"
)


def now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


class QueueStore:
    """The queue of `<runs_dir>/queue.sqlite3` (created on first use; never deleted or replaced).

    Opening a file that is not our queue, is corrupt, or was written by a newer kohya_wrap raises a
    one-line `QueueError` and leaves the file untouched.
    """

    def __init__(self, runs_dir: Path) -> None:
        self.runs_dir = runs_dir
        self.path = runs_dir / DB_NAME
        self._conn = self._open()

    # --- opening -------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        exists = self.path.exists()
        if exists and not self.path.is_file():
            raise QueueError(f"queue: {self.path} is not a file; move it away so the queue can be created there")
        if not exists:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise QueueError(f"queue: cannot open {self.path}: {exc}") from None
        try:
            self._check_or_create(conn, exists)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise QueueError(
                f"queue: {self.path} is corrupt or not a database ({exc}); move it away to start a new queue "
                "(the run folders keep every run's record)"
            ) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_or_create(self, conn: sqlite3.Connection, existed: bool) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == 0 and not tables:
            # A new (or empty) file: make it ours. IMMEDIATE so two runners creating it at once take turns.
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("PRAGMA application_id").fetchone()[0] == 0:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    # Statement by statement: executescript() would commit the transaction first.
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                    conn.execute("INSERT OR IGNORE INTO flags (name, value) VALUES ('paused', '0')")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise QueueError(
                f"queue: {self.path} is an SQLite database that is not a kohya_wrap queue; "
                "move it away or use another runs folder (it was left as it is)"
            )
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            raise QueueError(f"queue: {self.path} has no schema version; move it away to start a new queue")
        if version > SCHEMA_VERSION:
            raise QueueError(
                f"queue: {self.path} was written by a newer kohya_wrap (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade kohya_wrap"
            )
        # WAL lets readers (queue list, the web app) read while a runner writes.
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and not existed:
            raise QueueError(f"queue: {self.path}: the file system does not support SQLite's WAL mode")
        conn.execute("PRAGMA synchronous = NORMAL")

    def close(self) -> None:
        """Close the connection (the store cannot be used afterwards)."""
        self._conn.close()

    def __enter__(self) -> QueueStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taken up front so a read-then-write can never be overtaken."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # --- reading -------------------------------------------------------------------------------------

    def list(self, states: Iterable[State] | None = None, sweep: str | None = None) -> builtins.list[Job]:
        """Jobs in the order they were added (optionally only in `states` / of one `sweep`)."""
        where: builtins.list[str] = []
        args: builtins.list[str] = []
        if states is not None:
            wanted = builtins.list(states)
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            args += wanted
        if sweep is not None:
            where.append("sweep = ?")
            args.append(sweep)
        sql = f"SELECT {_COLUMNS} FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY id"
        return [_job(row) for row in self._conn.execute(sql, args)]

    def get(self, job_id: int) -> Job:
        """The job with this id (QueueError when there is none)."""
        row = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise QueueError(f"queue: no job {job_id} in {self.path}; see `kohya-wrap queue list`")
        return _job(row)

    def next_queued(self, max_gpus: int | None = None) -> builtins.list[Job]:
        """Queued jobs in the order `claim` takes them."""
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued'"
        args: builtins.list[int] = []
        if max_gpus is not None:
            sql += " AND gpus <= ?"
            args.append(max_gpus)
        return [_job(row) for row in self._conn.execute(sql + " ORDER BY priority DESC, id", args)]

    def count_queued(self, max_gpus: int | None = None) -> int:
        """How many jobs wait (fitting `max_gpus` when given): a cheap read for runners that poll."""
        sql, args = "SELECT count(*) FROM jobs WHERE state = 'queued'", []
        if max_gpus is not None:
            sql += " AND gpus <= ?"
            args.append(max_gpus)
        return int(self._conn.execute(sql, args).fetchone()[0])

    def paused(self) -> bool:
        """Whether runners are told to start nothing new (running jobs go on)."""
        row = self._conn.execute("SELECT value FROM flags WHERE name = 'paused'").fetchone()
        return row is not None and row[0] == "1"

    # --- adding and claiming -------------------------------------------------------------------------

    def add(self, run_dir: Path, priority: int = 0, sweep: str | None = None, gpus: int = 1) -> Job:
        """Queue one planned run folder."""
        return self.add_all([NewJob(run_dir, priority, sweep, gpus)])[0]

    def add_all(self, jobs: Iterable[NewJob]) -> builtins.list[Job]:
        """Queue several run folders in one transaction (all or none)."""
        stamp = now_iso()
        ids = []
        with self._write() as conn:
            for new in jobs:
                cur = conn.execute(
                    "INSERT INTO jobs (run_dir, priority, state, sweep, gpus, resume, created, updated) "
                    "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (str(new.run_dir), new.priority, new.sweep, new.gpus, int(new.resume), stamp, stamp),
                )
                assert cur.lastrowid is not None
                ids.append(cur.lastrowid)
        return [self.get(i) for i in ids]

    def claim(self, claimant: Claimant, max_gpus: int | None = None) -> Job | None:
        """Atomically take the next queued job (highest priority, then oldest), or None when none fits.

        One `UPDATE … WHERE state = 'queued'` inside a write transaction: two runners never get one job.
        `max_gpus` skips jobs that need more GPUs than the caller's slot has.
        """
        limit = "" if max_gpus is None else f" AND gpus <= {int(max_gpus)}"
        with self._write() as conn:
            row = conn.execute(
                "UPDATE jobs SET state = 'claimed', attempts = attempts + 1, claimant_host = ?, claimant_pid = ?, "
                "claimant_start = ?, claimed_at = ?, updated = ?, pgid = NULL, gpu_ids = '', reason = NULL "
                "WHERE id = (SELECT id FROM jobs WHERE state = 'queued'" + limit + " ORDER BY priority DESC, id "
                f"LIMIT 1) AND state = 'queued' RETURNING {_COLUMNS}",
                (claimant.host, claimant.pid, claimant.start, now_iso(), now_iso()),
            ).fetchone()
        return None if row is None else _job(row)

    def record_child(self, job: Job, pgid: int) -> bool:
        """Record the process group that will train this claim (before it starts, so a crash can find it)."""
        return self._update_claim(job, ("claimed", "running"), pgid=pgid)

    def mark_running(self, job: Job, pgid: int | None, gpu_ids: Sequence[int] = ()) -> Job | None:
        """The claim's worker starts training; None when the claim is no longer this one (cancelled, taken over)."""
        changes: dict[str, object] = {"state": "running", "gpu_ids": ",".join(str(g) for g in gpu_ids)}
        if pgid is not None:
            changes["pgid"] = pgid
        if not self._update_claim(job, ("claimed", "running"), **changes):
            return None
        return self.get(job.id)

    def finish(self, job: Job, state: State, reason: str | None = None) -> bool:
        """Record the outcome of the claim: done, failed or interrupted (resumes when the queue next runs).

        False (and nothing written) when the claim is no longer this one, e.g. the job was cancelled.
        """
        if state not in ("done", "failed", "interrupted"):
            raise ValueError(f"finish: {state!r} is not an outcome")
        changes: dict[str, object] = {"state": state, "reason": reason}
        if state == "interrupted":
            changes["resume"] = 1
        return self._update_claim(job, ACTIVE_STATES, **changes)

    def _update_claim(self, job: Job, states: Sequence[State], **changes: object) -> bool:
        sets = ", ".join(f"{key} = ?" for key in changes)
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE jobs SET {sets}, updated = ? WHERE id = ? AND attempts = ? "
                f"AND state IN ({', '.join('?' * len(states))})",
                (*changes.values(), now_iso(), job.id, job.attempts, *states),
            )
        return cur.rowcount == 1

    # --- user commands -------------------------------------------------------------------------------

    def cancel(self, ids: Sequence[int]) -> builtins.list[Job]:
        """Cancel jobs: queued ones never start; a runner stops claimed/running ones (they stay resumable).

        Every id is checked first: an unknown or already finished one raises QueueError and changes nothing.
        """
        return self._change(ids, "cancel", (*HOLDING_STATES, "interrupted"), "cancelled", 0)

    def retry(self, ids: Sequence[int]) -> builtins.list[Job]:
        """Queue failed, cancelled or interrupted jobs again; they continue from their last saved state."""
        return self._change(ids, "retry", RETRYABLE_STATES, "queued", 1)

    def _change(
        self, ids: Sequence[int], verb: str, allowed: Sequence[State], state: State, resume: int
    ) -> builtins.list[Job]:
        with self._write() as conn:
            problems = self._check_ids(conn, ids, verb, allowed)
            if problems:
                raise QueueError(*problems)
            reason = "cancelled by the user" if state == "cancelled" else None
            for job_id in dict.fromkeys(ids):
                conn.execute(
                    "UPDATE jobs SET state = ?, resume = ?, crashes = 0, reason = ?, updated = ? WHERE id = ?",
                    (state, resume, reason, now_iso(), job_id),
                )
        return [self.get(i) for i in dict.fromkeys(ids)]

    def set_priority(self, ids: Sequence[int], priority: int) -> builtins.list[Job]:
        """Change when queued jobs run (higher first); every id must be queued, else nothing changes."""
        with self._write() as conn:
            problems = self._check_ids(conn, ids, "priority", ("queued",))
            if problems:
                raise QueueError(*problems)
            for job_id in dict.fromkeys(ids):
                conn.execute("UPDATE jobs SET priority = ?, updated = ? WHERE id = ?", (priority, now_iso(), job_id))
        return [self.get(i) for i in dict.fromkeys(ids)]

    def remove(self, ids: Sequence[int]) -> builtins.list[Job]:
        """Delete rows (not their run folders); claimed or running jobs must be cancelled first."""
        removed = []
        with self._write() as conn:
            problems = self._check_ids(conn, ids, "remove", ("queued", "done", "failed", "cancelled", "interrupted"))
            if problems:
                raise QueueError(*problems)
            for job_id in dict.fromkeys(ids):
                row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
                removed.append(_job(row))
                conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return removed

    def _check_ids(
        self, conn: sqlite3.Connection, ids: Sequence[int], verb: str, allowed: Sequence[State]
    ) -> builtins.list[str]:
        problems = []
        if not ids:
            problems.append(f"queue {verb}: give at least one job ID (see `kohya-wrap queue list`)")
        for job_id in dict.fromkeys(ids):
            row = conn.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                problems.append(f"queue {verb}: no job {job_id} in {self.path}; see `kohya-wrap queue list`")
            elif row[0] not in allowed:
                hint = ID_HINTS.get(verb, "")
                problems.append(f"queue {verb}: job {job_id} is {row[0]}{hint}")
        return problems

    def pause(self) -> None:
        """Runners start no new job until `resume()`; running jobs go on."""
        self._set_flag("paused", "1")

    def resume(self) -> None:
        """Runners start queued jobs again."""
        self._set_flag("paused", "0")

    def _set_flag(self, name: str, value: str) -> None:
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (name, value))

    # --- crashes -------------------------------------------------------------------------------------

    def crashed(self, job: Job, why: str) -> Job | None:
        """The claim's process died without recording an outcome (`why`, e.g. "its worker was killed"):
        queued again to resume from its last saved state the first time, failed the second time.
        None when the claim is no longer this one."""
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND attempts = ? AND state IN ('claimed', 'running')",
                (job.id, job.attempts),
            ).fetchone()
            if row is None:
                return None
            _crash(conn, _job(row), why)
        return self.get(job.id)

    def recover(self) -> Recovery:
        """Find jobs whose claimant process (on this host) is gone and put them right.

        - Its worker's process group still runs: left alone and returned as an orphan (the caller stops it
          or waits for it; never start a second trainer on that run folder).
        - Otherwise the run died without an outcome: queued again to resume from its last saved state
          the first time, failed with the reason the second time.
        - `interrupted` jobs (stopped cleanly) are queued again to resume; that is not a crash.
        Claims held on other hosts are never touched here.
        """
        requeued: builtins.list[Job] = []
        failed: builtins.list[Job] = []
        orphans: builtins.list[Job] = []
        with self._write() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('claimed', 'running', 'interrupted') ORDER BY id"
            ).fetchall()
            for row in rows:
                job = _job(row)
                if job.state == "interrupted":
                    conn.execute(
                        "UPDATE jobs SET state = 'queued', resume = 1, updated = ? WHERE id = ?", (now_iso(), job.id)
                    )
                    requeued.append(job)
                    continue
                if job.claimant is None or job.claimant.alive() is not False:
                    continue
                if job.pgid is not None and group_alive(job.pgid):
                    orphans.append(job)
                    continue
                who = f"its runner ({job.claimant.host} pid {job.claimant.pid}) died"
                (requeued if _crash(conn, job, who) == "queued" else failed).append(job)
        return Recovery(tuple(self.get(j.id) for j in requeued), tuple(self.get(j.id) for j in failed), tuple(orphans))


def _crash(conn: sqlite3.Connection, job: Job, why: str) -> State:
    """Apply the resume-once rule to a job whose process died (inside the caller's transaction)."""
    if job.crashes == 0:
        state: State = "queued"
        reason = f"interrupted: {why}; resuming from the last saved state"
    else:
        state = "failed"
        reason = f"interrupted again: {why}; `kohya-wrap queue retry {job.id}` to try once more"
    conn.execute(
        "UPDATE jobs SET state = ?, resume = 1, crashes = crashes + 1, reason = ?, pgid = NULL, updated = ? "
        "WHERE id = ?",
        (state, reason, now_iso(), job.id),
    )
    return state


_PARENTS: dict[str, Path] = {}


def _run_path(text: str) -> Path:
    """`Path(text)` for a stored run folder, parsing the shared runs folder once: listing 10,000 rows spent
    a third of its time in pathlib parsing the same parent again and again."""
    head, _, name = text.rpartition(os.sep)
    if not head or not name:
        return Path(text)
    parent = _PARENTS.get(head)
    if parent is None:
        parent = _PARENTS[head] = Path(head)
    return parent / name


def _job(row: Sequence[Any]) -> Job:
    (id_, run_dir, priority, state, sweep, gpus, attempts, resume, crashes, host, pid, start, pgid, gpu_ids) = row[:14]
    reason, created, updated, claimed_at = row[14:18]
    values = {
        "id": id_,
        "run_dir": _run_path(run_dir),
        "priority": priority,
        "state": state,
        "sweep": sweep,
        "gpus": gpus,
        "attempts": attempts,
        "resume": bool(resume),
        "crashes": crashes,
        "claimant": Claimant(host, pid, start or "") if host is not None and pid is not None else None,
        "pgid": pgid,
        "gpu_ids": tuple(int(g) for g in gpu_ids.split(",")) if gpu_ids else (),
        "reason": reason,
        "created": created,
        "updated": updated,
        "claimed_at": claimed_at,
    }
    # A frozen dataclass's __init__ sets every field through object.__setattr__, which made up a third of
    # listing 10,000 rows; filling the instance dict directly gives the same (still frozen) Job.
    job = object.__new__(Job)
    job.__dict__.update(values)
    return job
