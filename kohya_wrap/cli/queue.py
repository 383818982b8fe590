"""Commands for many runs: `sweep` and the `queue` group (add, list, run, cancel, retry, remove, pause, resume)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.common import CONFIG_ARG, PRESET_OPTION, SET_OPTION, _print_warnings, echo_err, main

if TYPE_CHECKING:
    from kohya_wrap.commands.queue import QueueEntry
    from kohya_wrap.commands.sweep import SweepPlan
    from kohya_wrap.queue.local import RunnerResult
    from kohya_wrap.review.estimate import Estimate

RUNS_DIR_OPTION = click.option(
    "--runs-dir",
    type=click.Path(path_type=Path),
    default=Path("runs"),
    show_default=True,
    help="The runs folder whose queue to use.",
)
GPUS_OPTION = click.option(
    "--gpus", metavar="0,1,…", help="GPUs to train on [default: every GPU nvidia-smi lists; none: one CPU slot]."
)
PER_RUN_OPTION = click.option(
    "--per-run", type=int, default=1, show_default=True, help="GPUs per run: the GPUs are cut into slots of N."
)
PRIORITY_OPTION = click.option(
    "--priority", type=int, default=0, show_default=True, help="Higher runs first; equal priorities in order added."
)


@main.command()
@CONFIG_ARG
@click.option(
    "--grid",
    "grid_options",
    multiple=True,
    metavar="KEY=V1,V2",
    help="An axis of the sweep, e.g. --grid network.dim=16,32 (values typed like --set; repeatable).",
)
@SET_OPTION
@PRESET_OPTION
@click.option("--name", help="Sweep name (sweeps/NAME.json; compare --sweep NAME) [default: <name>-<timestamp>].")
@click.option("--dry-run", is_flag=True, help="List the runs with steps, time and VRAM; write nothing.")
@click.option("--run", "run_now", is_flag=True, help="Run the queue until it is empty right after queueing.")
@PRIORITY_OPTION
@GPUS_OPTION
@PER_RUN_OPTION
def sweep(
    config: Path | None,
    grid_options: tuple[str, ...],
    overrides: tuple[str, ...],
    preset: str | None,
    name: str | None,
    dry_run: bool,
    run_now: bool,
    priority: int,
    gpus: str | None,
    per_run: int,
) -> None:
    """Queue one run per combination of the grid (also from a [sweep] grid table in CONFIG)."""
    from kohya_wrap.commands import sweep as commands
    from kohya_wrap.errors import ConfigError

    if dry_run and run_now:
        raise ConfigError("sweep: --dry-run writes nothing, so it cannot --run; drop one of them")
    gpu_ids = _gpu_ids(gpus)
    if run_now:
        _check_slots(gpu_ids, per_run)
    plan = commands.plan_sweep(config, grid_options, overrides, name, preset)
    _print_warnings(plan.shared_warnings)
    for run in plan.runs:
        _print_warnings([f"[{run.combination}] {w}" for w in plan.own_warnings(run)])
    axes = " × ".join(f"{len(v)} {k}" for k, v in plan.axes.items())
    if dry_run:
        click.echo(f"sweep {plan.name}: {len(plan.runs)} runs ({axes}); nothing written")
        _print_estimates(plan, commands.estimate_sweep(plan))
        return
    queued = commands.queue_sweep(plan, priority)
    click.echo(f"sweep {plan.name}: {len(plan.runs)} runs ({axes}) queued in {plan.runs_dir}")
    for job, run in zip(queued.jobs, plan.runs, strict=True):
        click.echo(f"  {job.id:>4}  {job.run_dir.name}  {run.combination}")
    click.echo(f"record: {queued.record}")
    if not run_now:
        click.echo(
            f"next: kohya-wrap queue run --runs-dir {plan.runs_dir}; "
            f"then kohya-wrap compare --sweep {plan.name} --runs-dir {plan.runs_dir}"
        )
        return
    _run_queue(plan.runs_dir, gpu_ids, per_run, until_empty=True)


def _print_estimates(plan: SweepPlan, estimates: Sequence[Estimate]) -> None:
    from kohya_wrap.review.estimate import CLASS_GB, duration

    width = max(len(run.output_name) for run in plan.runs)
    for run, est in zip(plan.runs, estimates, strict=True):
        time = f"≈ {duration(est.time.seconds)}" if est.time is not None else "?"
        click.echo(
            f"  {run.output_name:{width}}  {run.combination}  steps {est.steps}  time {time}  "
            f"vram ≈ {est.vram.total_gb:.1f} GB"
        )
    steps = sum(est.steps for est in estimates)
    peak = max(est.vram.total_gb for est in estimates)
    known = [est.time.seconds for est in estimates if est.time is not None]
    if len(known) == len(estimates):
        click.echo(f"total: {steps} steps, time ≈ {duration(sum(known))} one after another, vram peak ≈ {peak:.1f} GB")
        return
    by_class = " · ".join(
        f"{'CPU' if c == 'cpu' else f'{CLASS_GB[c]:.0f} GB'} {duration(sum(est.time_by_class[c] for est in estimates))}"
        for c in estimates[0].time_by_class
    )
    click.echo(f"total: {steps} steps, vram peak ≈ {peak:.1f} GB")
    click.echo(f"time one after another (rough public figures by GPU memory): {by_class}")


@main.group()
def queue() -> None:
    """The run queue of a runs folder: add runs, list them, run them on this machine's GPUs."""


@queue.command("add")
@click.argument("configs", nargs=-1, type=click.Path(path_type=Path))
@SET_OPTION
@PRESET_OPTION
@PRIORITY_OPTION
def queue_add(configs: tuple[Path, ...], overrides: tuple[str, ...], preset: str | None, priority: int) -> None:
    """Queue CONFIGs: each gets a planned run folder in its run.runs_dir and a row in that folder's queue."""
    from kohya_wrap.commands import queue as commands

    checked = commands.check_configs(configs, overrides, preset)
    for config, one in zip(configs or (None,), checked, strict=True):
        prefix = f"{config}: " if len(checked) > 1 else ""
        _print_warnings([prefix + w for w in one.warnings])
    for job in commands.add(checked, priority):
        click.echo(f"queued {job.id}  {job.run_dir}")


@queue.command("list")
@RUNS_DIR_OPTION
@click.option("--json", "as_json", is_flag=True, help="One JSON document with every row and live progress.")
def queue_list(runs_dir: Path, as_json: bool) -> None:
    """Every queued, running and finished run with its state, epoch/step and ETA."""
    from kohya_wrap.commands import queue as commands

    status = commands.status(runs_dir)
    if as_json:
        doc = {"paused": status.paused, "jobs": [entry.to_json() for entry in status.entries]}
        click.echo(json.dumps(doc, indent=1, ensure_ascii=False))
        return
    if not status.entries:
        click.echo(f"the queue of {runs_dir} is empty")
    if status.entries:
        # One write for the whole list: a queue of thousands of rows prints in milliseconds.
        click.echo("\n".join(_entry_line(entry) for entry in status.entries))
    if status.paused:
        click.echo("paused: runners start no new run (`kohya-wrap queue resume`)")


def _entry_line(entry: QueueEntry) -> str:
    job, progress = entry.job, entry.progress
    where = ""
    if progress is not None:
        parts = []
        if progress.epoch is not None:
            parts.append(f"epoch {progress.epoch}/{progress.epochs or '?'}")
        if progress.step is not None:
            parts.append(f"step {progress.step}/{progress.total_steps or '?'}")
        if progress.eta_s is not None:
            parts.append(f"ETA {_clock(progress.eta_s)}")
        where = "  " + ", ".join(parts) if parts else "  starting"
        if job.gpu_ids:
            where += f"  GPU {','.join(map(str, job.gpu_ids))}"
    priority = f"  priority {job.priority}" if job.priority else ""
    reason = f"  {job.reason}" if job.reason and job.state not in ("done", "running") else ""
    return f"{job.id:>5}  {job.state:11}  {job.run_dir.name}{where}{priority}{reason}"


def _clock(seconds: float) -> str:
    """`1:02:03` / `2:03`, as sd-scripts' progress bar shows time left."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@queue.command("run")
@RUNS_DIR_OPTION
@GPUS_OPTION
@PER_RUN_OPTION
@click.option("--until-empty", is_flag=True, help="Stop when nothing is left to start (default: wait for more).")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="auto",
    default=None,
    metavar="[ADDRESS]",
    help="Place the runs on a Ray cluster: auto (the one this machine joined; the default), local (start one "
    "here) or HOST:PORT; runs whose config says run.executor = ray go there without it.",
)
def queue_run(runs_dir: Path, gpus: str | None, per_run: int, until_empty: bool, ray_address: str | None) -> None:
    """Train queued runs, one per GPU slot; Ctrl-C stops the running ones cleanly (they stay resumable)."""
    gpu_ids = _gpu_ids(gpus)
    if ray_address is None:
        _check_slots(gpu_ids, per_run)
    _run_queue(runs_dir, gpu_ids, per_run, until_empty, ray_address)


def _gpu_ids(gpus: str | None) -> list[int] | None:
    from kohya_wrap.queue.local import parse_gpus

    return None if gpus is None else parse_gpus(gpus)


def _check_slots(gpu_ids: list[int] | None, per_run: int) -> None:
    from kohya_wrap.queue.local import detect_gpus, plan_slots

    plan_slots(gpu_ids, per_run, detect_gpus())


def _run_queue(
    runs_dir: Path, gpu_ids: list[int] | None, per_run: int, until_empty: bool, ray_address: str | None = None
) -> None:
    from kohya_wrap.commands import queue as commands

    done = commands.run_queue(runs_dir, click.echo, gpu_ids, per_run, until_empty, ray_address)
    _print_result(done.result)
    if done.waiting:
        ids = ", ".join(str(job.id) for job in done.waiting)
        echo_err(f"note: jobs {ids} need more than {per_run} GPUs per run; run the queue with a larger --per-run")
    raise SystemExit(done.result.exit_code)


def _print_result(result: RunnerResult) -> None:
    counts = [
        f"{len(jobs)} {word}"
        for jobs, word in (
            (result.done, "done"),
            (result.failed, "failed"),
            (result.interrupted, "interrupted"),
            (result.cancelled, "cancelled"),
        )
        if jobs
    ]
    click.echo("queue: " + (", ".join(counts) if counts else "nothing ran"))
    if result.stopped_by_signal:
        echo_err("stopped: run `kohya-wrap queue run` again to resume the interrupted runs")


def _ids_command(name: str, verb: str, help_text: str) -> None:
    @queue.command(name, help=help_text)
    @click.argument("ids", nargs=-1)
    @RUNS_DIR_OPTION
    def command(ids: tuple[str, ...], runs_dir: Path) -> None:
        from kohya_wrap.commands import queue as commands

        action = {"cancel": commands.cancel, "retry": commands.retry, "remove": commands.remove}[name]
        for job in action(runs_dir, commands.parse_ids(ids, name)):
            click.echo(f"{verb} {job.id}  {job.run_dir.name}")


_ids_command("cancel", "cancelled", "Cancel jobs by ID: queued ones never start, running ones stop cleanly.")
_ids_command("retry", "queued", "Queue failed, cancelled or interrupted jobs again; they resume where they stopped.")
_ids_command("remove", "removed", "Delete jobs from the queue (their run folders stay); cancel running ones first.")


@queue.command("priority")
@click.argument("ids", nargs=-1)
@click.option("--to", "priority", type=int, required=True, help="The new priority (higher runs first).")
@RUNS_DIR_OPTION
def queue_priority(ids: tuple[str, ...], priority: int, runs_dir: Path) -> None:
    """Change when queued jobs run: `queue priority 12 13 --to 5` (higher first; equal ones in order added)."""
    from kohya_wrap.commands import queue as commands

    for job in commands.set_priority(runs_dir, commands.parse_ids(ids, "priority"), priority):
        click.echo(f"priority {job.priority}  {job.id}  {job.run_dir.name}")


@queue.command("pause")
@RUNS_DIR_OPTION
def queue_pause(runs_dir: Path) -> None:
    """Start no new run until `queue resume` (running runs go on)."""
    from kohya_wrap.commands import queue as commands

    commands.pause(runs_dir)
    click.echo("paused: running runs go on; no new run starts until `kohya-wrap queue resume`")


@queue.command("resume")
@RUNS_DIR_OPTION
def queue_resume(runs_dir: Path) -> None:
    """Start queued runs again after `queue pause`."""
    from kohya_wrap.commands import queue as commands

    commands.resume(runs_dir)
    click.echo("resumed: runners start queued runs again")
