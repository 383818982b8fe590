"""The queue page and the run page's stop / resume / queue-again buttons, over the queue database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kohya_wrap.errors import KohyaWrapError, RunError
from kohya_wrap.queue.store import HOLDING_STATES, RETRYABLE_STATES, QueueError
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.ui.app import UiContext, error_response, read_json

if TYPE_CHECKING:
    from kohya_wrap.queue.store import Job
    from kohya_wrap.train.runs import RunRecord


def snapshot(ctx: UiContext) -> dict[str, Any]:
    """The whole queue as the page shows it: jobs in the order they will run, then the finished ones."""
    from kohya_wrap.commands.queue import status

    state = status(ctx.runs_dir)
    jobs = [entry.job for entry in state.entries]
    order = {job.id: n for n, job in enumerate(sorted((j for j in jobs if j.state == "queued"), key=_run_order), 1)}
    rows = []
    for entry in state.entries:
        row = entry.to_json()
        job = entry.job
        row["run_id"] = job.run_dir.name if job.run_dir.resolve().parent == ctx.runs_dir else None
        row["position"] = order.get(job.id)
        row["finished"] = job.finished
        rows.append(row)
    rows.sort(key=lambda row: (row["finished"], row["position"] or 0, -row["id"]))
    return {"paused": state.paused, "jobs": rows}


def _run_order(job: Job) -> tuple[int, int]:
    return (-job.priority, job.id)


def job_for_run(ctx: UiContext, layout: RunLayout) -> Job | None:
    """The newest queue row of this run folder, if it was ever queued."""
    from kohya_wrap.commands.queue import status

    root = layout.root.resolve()
    jobs = [entry.job for entry in status(ctx.runs_dir).entries if entry.job.run_dir.resolve() == root]
    return jobs[-1] if jobs else None


def run_actions(ctx: UiContext, layout: RunLayout, status: str) -> list[str]:
    """Buttons for a run: stop while queued or training, resume once stopped, queue again (a new run) always.

    A run started with `kohya-wrap train` (no queue row) stops through its trainer process and resumes
    through the queue, like any other.
    """
    from kohya_wrap.commands.train import live_trainer, resumable

    job = job_for_run(ctx, layout)
    record = _record(layout)
    actions = []
    if job is not None and job.state in HOLDING_STATES and status != "finished":
        actions.append("stop")
    elif job is not None and job.state in RETRYABLE_STATES and status != "finished":
        actions.append("resume")
    elif job is None and record is not None and live_trainer(record) is not None:
        actions.append("stop")
    elif job is None and record is not None and resumable(record):
        actions.append("resume")
    if layout.config.is_file():
        actions.append("queue-again")
    return actions


def _record(layout: RunLayout) -> RunRecord | None:
    """The run's run.json; None when it cannot be read (the page then offers no stop or resume)."""
    from kohya_wrap.train.runs import read_record

    try:
        return read_record(layout)
    except KohyaWrapError:
        return None


def job_action(ctx: UiContext, job_id: int, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Cancel, retry, remove or re-prioritise one job through the queue's commands."""
    from kohya_wrap.commands import queue

    if action == "priority":
        (job,) = queue.set_priority(ctx.runs_dir, [job_id], priority_value((body or {}).get("priority")))
        return _job_json(job)
    commands = {"cancel": queue.cancel, "retry": queue.retry, "remove": queue.remove}
    if action not in commands:
        raise RunError(f"queue: unknown action {action!r}; use cancel, retry, remove or priority")
    (job,) = commands[action](ctx.runs_dir, [job_id])
    return _job_json(job)


def priority_value(value: object) -> int:
    """A priority from a form: a whole number, given as a number or as its text."""
    text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
    if not text.lstrip("-").isdigit():
        raise QueueError(f"queue priority: {value!r} is not a whole number; higher runs first, e.g. 5 or -1")
    return int(text)


def _job_json(job: Job) -> dict[str, Any]:
    from kohya_wrap.commands.queue import QueueEntry

    return QueueEntry(job, None).to_json()


def queue_config(preset: str, overrides: list[str], priority: int, before: Callable[[], None]) -> dict[str, Any]:
    """Check the preset + overrides for training, run `before` (it saves the config), then queue a new run."""
    from kohya_wrap.commands.queue import add, check_configs

    checked = check_configs([], overrides, preset)
    before()
    (job,) = add(checked, priority)
    return {"job": job.id, "run": job.run_dir.name}


def queue_sweep(
    preset: str, overrides: list[str], grid: list[str], priority: int, before: Callable[[], None]
) -> dict[str, Any]:
    """Check every combination of the grid, run `before`, then queue the whole sweep."""
    from kohya_wrap.commands.sweep import plan_sweep, queue_sweep

    plan = plan_sweep(None, grid, overrides, None, preset)
    before()
    queued = queue_sweep(plan, priority)
    return {"sweep": plan.name, "jobs": [job.id for job in queued.jobs], "runs": [j.run_dir.name for j in queued.jobs]}


def routes(ctx: UiContext) -> list[BaseRoute]:
    def queue_page(request: Request) -> Response:
        try:
            state = snapshot(ctx)
        except KohyaWrapError as exc:
            return ctx.page(request, "error.html", 500, lines=exc.lines, nav="queue")
        return ctx.page(request, "queue.html", queue=state, nav="queue")

    async def queue_events(request: Request) -> Response:
        return await ctx.stream(request, lambda: snapshot(ctx), lambda _: False)

    async def job_route(request: Request) -> Response:
        try:
            job_id = int(request.path_params["job"])
            body = await read_json(request, "queue: the request", QueueError)
            job = await asyncio.to_thread(job_action, ctx, job_id, request.path_params["action"], body)
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, "job": job})

    async def pause(request: Request) -> Response:
        flag = request.path_params["flag"]
        if flag not in ("pause", "resume"):
            return error_response(RunError(f"queue: unknown action {flag!r}; use pause or resume"), 404)
        paused = flag == "pause"

        def flip() -> None:
            from kohya_wrap.commands import queue

            queue.pause(ctx.runs_dir) if paused else queue.resume(ctx.runs_dir)

        try:
            await asyncio.to_thread(flip)
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, "paused": paused})

    return [
        Route("/queue", queue_page),
        Route("/events/queue", queue_events),
        Route("/queue/{job:int}/{action:str}", job_route, methods=["POST"]),
        Route("/queue/{flag:str}", pause, methods=["POST"]),
    ]


def run_action_routes(ctx: UiContext) -> list[BaseRoute]:
    async def run_action(request: Request) -> Response:
        action = request.path_params["action"]

        def act() -> dict[str, Any]:
            from kohya_wrap.commands.queue import add, check_configs, queue_resume
            from kohya_wrap.commands.train import stop

            layout = ctx.watcher.layout(request.path_params["run"])
            if action == "queue-again":
                (job,) = add(check_configs([layout.config]))
                return job_message(job)
            if action not in ("stop", "resume"):
                raise RunError(f"run: unknown action {action!r}; use stop, resume or queue-again")
            found = job_for_run(ctx, layout)
            held = found is not None and found.state in HOLDING_STATES
            stopped = found is not None and found.state in RETRYABLE_STATES
            if action == "stop":
                # Queued runs stop through the queue; one started with `kohya-wrap train` through its trainer.
                return (
                    job_message(job_action(ctx, found.id, "cancel"))
                    if held and found
                    else {"message": stop(layout.root)}
                )
            if stopped and found:
                return job_message(job_action(ctx, found.id, "retry"))
            return job_message(queue_resume(layout.root))

        try:
            result = await asyncio.to_thread(act)
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, **result})

    return [Route("/runs/{run}/{action:str}", run_action, methods=["POST"])]


def job_message(job: Job | dict[str, Any]) -> dict[str, Any]:
    """A run action's answer: the queue job it changed and a line saying so."""
    row = job if isinstance(job, dict) else _job_json(job)
    return {"job": row, "message": f"job {row['id']} is {row['state']}"}
