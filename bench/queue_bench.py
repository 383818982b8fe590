"""Queue bookkeeping per run and `queue list` over 10,000 rows, against bare SQLite doing the same work.

usage: python bench/queue_bench.py [--runs N] [--rows N] [--out bench/results/queue.md]

Bookkeeping per run is what a runner and its worker write for one run: claim, record the worker's
process group, mark running, finish (four short write transactions). The baseline writes the same
four transactions to a bare table in the same WAL mode. `queue list` is timed twice: the function the
CLI and the web app call (`commands.queue.status`, progress of running runs included) against a bare
`SELECT *`, and the whole `kohya-wrap queue list` process against `python -c pass`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kohya_wrap.commands.queue import status
from kohya_wrap.queue.store import Claimant, NewJob, QueueStore
from kohya_wrap.train import events as ev

GOAL_BOOKKEEPING_MS = 50.0
GOAL_LIST_S = 0.5
RUNNING_ROWS = 8  # rows shown with live progress read from their events.jsonl
STEPS_PER_EVENTS_FILE = 5000


def bookkeeping(store: QueueStore, runs: int) -> list[float]:
    """Seconds per run for claim + record_child + mark_running + finish."""
    store.add_all(NewJob(store.runs_dir / f"run-{i}") for i in range(runs))
    me = Claimant.current()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        job = store.claim(me)
        assert job is not None
        store.record_child(job, os.getpid())
        store.mark_running(job, os.getpid(), [0])
        store.finish(job, "done", "completed")
        times.append(time.perf_counter() - start)
    return times


def bare_bookkeeping(path: Path, runs: int) -> list[float]:
    """The same four write transactions per run on a bare table (the baseline)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, state TEXT, pgid INTEGER, reason TEXT)")
    conn.executemany("INSERT INTO jobs (state) VALUES ('queued')", [()] * runs)
    times = []
    for i in range(1, runs + 1):
        start = time.perf_counter()
        for sql, args in (
            ("UPDATE jobs SET state = 'claimed' WHERE id = ?", (i,)),
            ("UPDATE jobs SET pgid = 1 WHERE id = ?", (i,)),
            ("UPDATE jobs SET state = 'running' WHERE id = ?", (i,)),
            ("UPDATE jobs SET state = 'done', reason = 'completed' WHERE id = ?", (i,)),
        ):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(sql, args)
            conn.execute("COMMIT")
        times.append(time.perf_counter() - start)
    conn.close()
    return times


def fill(runs_dir: Path, rows: int) -> None:
    """`rows` jobs in every state; RUNNING_ROWS of them running with a long events.jsonl each."""
    with QueueStore(runs_dir) as store:
        store.add_all(NewJob(runs_dir / f"run-{i:05d}", priority=i % 3, sweep="bench") for i in range(rows))
        me = Claimant.current()
        for i in range(rows // 2):
            job = store.claim(me)
            assert job is not None
            if i < RUNNING_ROWS:
                store.mark_running(job, os.getpid(), [0])
                write_events(job.run_dir)
            else:
                store.finish(job, "done" if i % 5 else "failed", "completed" if i % 5 else "out of memory")


def write_events(run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    lines = [ev.to_json(ev.RunStarted("train_network.py", STEPS_PER_EVENTS_FILE, 10, 500, 100), t=0.0)]
    for step in range(1, STEPS_PER_EVENTS_FILE + 1):
        if step % 500 == 1:
            lines.append(ev.to_json(ev.EpochStarted(step // 500 + 1, 10), t=float(step)))
        lines.append(ev.to_json(ev.Step(step, STEPS_PER_EVENTS_FILE, 0.1, 2.0, 100.0, float(step)), t=float(step)))
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300, help="runs for the bookkeeping measurement")
    parser.add_argument("--rows", type=int, default=10_000, help="rows in the queue that is listed")
    parser.add_argument("--repeat", type=int, default=9, help="interleaved repetitions of each list timing")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with QueueStore(root / "book") as store:
            ours = bookkeeping(store, args.runs)
        bare = bare_bookkeeping(root / "bare.sqlite3", args.runs)

        listed = root / "listed"
        fill(listed, args.rows)
        db = listed / "queue.sqlite3"

        def bare_select() -> None:
            conn = sqlite3.connect(db)
            conn.execute("SELECT * FROM jobs ORDER BY id").fetchall()
            conn.close()

        def list_function() -> None:
            assert len(status(listed).entries) == args.rows

        cli = [sys.executable, "-m", "kohya_wrap", "queue", "list", "--runs-dir", str(listed)]
        python = [sys.executable, "-c", "pass"]
        samples: dict[str, list[float]] = {"select": [], "status": [], "cli": [], "python": []}
        for warm in (bare_select, list_function):
            timed(warm)  # the file cache
        for _ in range(args.repeat):
            samples["select"].append(timed(bare_select))
            samples["status"].append(timed(list_function))
            samples["cli"].append(timed(lambda: subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)))
            samples["python"].append(timed(lambda: subprocess.run(python, check=True)))
        shown = subprocess.run(cli, check=True, capture_output=True, text=True).stdout.splitlines()
        assert len(shown) == args.rows and sum("ETA" in line for line in shown) == RUNNING_ROWS, shown[:3]
    book_ms, bare_ms = statistics.median(ours) * 1000, statistics.median(bare) * 1000
    med = {name: statistics.median(values) for name, values in samples.items()}
    lines = [
        "# Queue bookkeeping and `queue list` (medians; baselines measured in the same run)",
        "",
        f"Command: `python bench/queue_bench.py --runs {args.runs} --rows {args.rows} --repeat {args.repeat}`",
        "",
        "| measure | ours | baseline | ratio | goal | met |",
        "|---|---|---|---|---|---|",
        f"| bookkeeping per run (claim, record child, running, finish) | {book_ms:.2f} ms | {bare_ms:.2f} ms "
        f"(4 bare SQLite write transactions) | {book_ms / bare_ms:.2f}× | ≤ {GOAL_BOOKKEEPING_MS:g} ms | "
        f"{'yes' if book_ms <= GOAL_BOOKKEEPING_MS else 'NO'} |",
        f"| `commands.queue.status` over {args.rows:,} rows ({RUNNING_ROWS} running, progress read) | "
        f"{med['status'] * 1000:.0f} ms | {med['select'] * 1000:.0f} ms (bare `SELECT *`) | "
        f"{med['status'] / med['select']:.2f}× | ≤ {GOAL_LIST_S * 1000:g} ms | "
        f"{'yes' if med['status'] <= GOAL_LIST_S else 'NO'} |",
        f"| `kohya-wrap queue list` process over {args.rows:,} rows | {med['cli'] * 1000:.0f} ms "
        f"(best {min(samples['cli']) * 1000:.0f} ms) | "
        f"{med['python'] * 1000:.0f} ms (`python -c pass`) | {med['cli'] / med['python']:.2f}× | "
        f"≤ {GOAL_LIST_S * 1000:g} ms | {'yes' if med['cli'] <= GOAL_LIST_S else 'NO'} |",
        "",
        f"Machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; Python "
        f"{sys.version.split()[0]}; SQLite {sqlite3.sqlite_version}.",
        "Medians of interleaved runs; on a busy machine every row slows down together, so read the ratios "
        "next to the absolute numbers (the goals are absolute).",
        f"The running rows' events.jsonl hold {STEPS_PER_EVENTS_FILE:,} steps each; `queue list` reads only their "
        "last 64 KiB.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    print(json.dumps({"bookkeeping_ms": book_ms, "status_s": med["status"], "cli_s": med["cli"]}))


if __name__ == "__main__":
    main()
