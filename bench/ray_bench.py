"""Dispatch overhead per run of `queue run --ray` against the local `queue run`, with the fake sd-scripts.

Both executors train the same fake runs (a replayed sd-scripts log, so the training itself takes about the
same short time) one at a time: the local queue has one slot on this GPU-less machine, and the local Ray
cluster is started with one CPU, which each run reserves. The difference per run is what Ray adds:
placing the task, a Ray worker starting the queue's worker, and the result coming back. Rounds are
interleaved; the cluster's start (once per `queue run --ray local`) is reported apart.
usage: python bench/ray_bench.py [--runs N] [--rounds N] [--out bench/results/ray.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from test_ray_executor import write_project  # noqa: E402

from kohya_wrap.commands.queue import add, check_configs  # noqa: E402
from kohya_wrap.commands.queue import run as run_local  # noqa: E402
from kohya_wrap.queue.ray_executor import run_queue as run_ray  # noqa: E402
from kohya_wrap.queue.store import QueueStore  # noqa: E402


def queued(folder: Path, runs: int) -> Path:
    folder.mkdir()
    config = write_project(folder)
    for _ in range(runs):
        add(check_configs([config]))
    return folder / "runs"


def timed(runs_dir: Path, executor: str) -> float:
    start = time.perf_counter()
    if executor == "ray":
        result = run_ray(runs_dir, lambda line: None, "auto", until_empty=True)
    else:
        result = run_local(runs_dir, lambda line: None, None, 1, until_empty=True)
    seconds = time.perf_counter() - start
    with QueueStore(runs_dir) as store:
        states = {job.state for job in store.list()}
    if result.exit_code != 0 or states != {"done"}:
        raise SystemExit(f"{executor}: the runs did not all finish ({sorted(states)})")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=6, help="fake runs per queue")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import ray

    start = time.perf_counter()
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    cluster_start = time.perf_counter() - start
    local: list[float] = []
    on_ray: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        timed(queued(Path(tmp) / "warm", 1), "ray")  # the first task pays for importing in a fresh worker
        for i in range(args.rounds):
            local.append(timed(queued(Path(tmp) / f"local-{i}", args.runs), "local") / args.runs)
            on_ray.append(timed(queued(Path(tmp) / f"ray-{i}", args.runs), "ray") / args.runs)
    ray.shutdown()
    load = os.getloadavg()[0]
    per_local, per_ray = statistics.median(local), statistics.median(on_ray)
    text = "\n".join(
        [
            "# Dispatch overhead of `queue run --ray` over the local `queue run`",
            "",
            f"Command: `python bench/ray_bench.py --runs {args.runs} --rounds {args.rounds}` (fake sd-scripts runs of",
            f"the same replayed log; one run at a time on both sides; ray {ray.__version__}, a local cluster of",
            "one CPU; each round queues fresh runs; rounds interleaved).",
            "",
            "| | median wall per run | rounds (s per run) |",
            "|---|---|---|",
            f"| local `queue run` | {per_local:.2f} s | {', '.join(f'{t:.2f}' for t in local)} |",
            f"| `queue run --ray` | {per_ray:.2f} s | {', '.join(f'{t:.2f}' for t in on_ray)} |",
            "",
            f"Difference per run (Ray − local): **{per_ray - per_local:+.2f} s** (ratio {per_ray / per_local:.2f});",
            "the per-queue storage check is included.",
            f"Starting the local cluster (`--ray local`, once per `queue run`): {cluster_start:.1f} s.",
            f"Load average when it ended: {load:.1f} on {os.cpu_count()} CPUs (runs of a loaded machine vary widely).",
            "",
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
