"""The runs pages: every run with live progress, and one run's report (samples, loss, LoRA files, config)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from kohya_wrap.errors import KohyaWrapError, RunError
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.ui.app import UiContext, refuse

CHART_W, CHART_H, CHART_PAD = 640, 220, 36


@dataclass(frozen=True)
class LoraRow:
    label: str
    url: str
    name: str
    size_mb: float
    validation_loss: float | None
    best: bool


@dataclass(frozen=True)
class RunReport:
    """What the report part of a run's page shows, read from the run folder alone."""

    epochs: tuple[int, ...]
    prompts: tuple[str, ...]
    cells: dict[tuple[int, int], str]  # (epoch, prompt index) → image URL
    loras: tuple[LoraRow, ...]
    loss_svg: str
    loss_source: str
    has_validation: bool
    best: str | None  # the suggested epoch and why (lowest validation loss)
    config: str
    command: str
    report_url: str | None


def polyline(points: Sequence[tuple[float, float]], x_max: float, y_min: float, y_max: float) -> str:
    span = (y_max - y_min) or 1.0
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD
    coords = (
        f"{CHART_PAD + inner_w * x / (x_max or 1):.1f},{CHART_PAD + inner_h * (1 - (y - y_min) / span):.1f}"
        for x, y in points
    )
    return " ".join(coords)


def loss_svg(
    average: Sequence[tuple[int, float]],
    per_epoch: Sequence[tuple[int, float]],
    steps_per_epoch: int,
    validation: Sequence[tuple[int, float]] = (),
) -> str:
    """Training loss by step, each epoch's mean, and validation loss (at its step) as a small inline SVG."""
    if not average:
        return ""
    values = [v for _, v in average] + [v for _, v in per_epoch] + [v for _, v in validation]
    y_min, y_max = min(values), max(values)
    x_max = max(s for s, _ in (*average, *validation))
    epoch_points = [(e * steps_per_epoch, v) for e, v in per_epoch]
    parts = [
        f'<svg class="chart" viewBox="0 0 {CHART_W} {CHART_H}" role="img" aria-label="loss by step">',
        f'<text x="{CHART_PAD}" y="20">loss {y_min:.4f} – {y_max:.4f} over {x_max} steps</text>',
        f'<polyline class="avg" points="{polyline(average, x_max, y_min, y_max)}"/>',
    ]
    if epoch_points:
        parts.append(f'<polyline class="epoch" points="{polyline(epoch_points, x_max, y_min, y_max)}"/>')
    if validation:
        parts.append(f'<polyline class="validation" points="{polyline(validation, x_max, y_min, y_max)}"/>')
    parts.append("</svg>")
    return "".join(parts)


def _text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except OSError:
        return ""


def run_report(ctx: UiContext, layout: RunLayout) -> RunReport:
    from kohya_wrap.review.outputs import best_epoch, collect
    from kohya_wrap.review.report import loss_series, sample_grid
    from kohya_wrap.train.runs import read_record

    record = read_record(layout)
    grid = sample_grid(layout, record.name)
    cells = {key: ctx.run_file_url(path) for key, path in grid.cells.items()}
    try:
        files = collect(layout, record.name, record.epochs)
    except OSError:  # a checkpoint removed while a running run is read
        files = []
    series = loss_series(layout, record)
    validation = {v.epoch: v.loss for v in series.validation}
    best = best_epoch(layout)
    loras = tuple(
        LoraRow(
            "final" if f.final else (f"epoch {f.epoch}" if f.epoch is not None else f"step {f.step}"),
            ctx.run_file_url(f.path),
            f.path.name,
            f.size / 2**20,
            validation.get(f.epoch) if f.epoch is not None else None,
            best is not None and f.path == best.lora,
        )
        for f in files
    )
    steps_per_epoch = series.steps_per_epoch or 1
    index = layout.report_dir / "index.html"
    return RunReport(
        grid.epochs,
        grid.prompts,
        cells,
        loras,
        loss_svg(
            series.per_step or series.average,
            series.per_epoch,
            steps_per_epoch,
            [(step, loss) for _, step, loss in series.validation_points],
        ),
        series.source,
        bool(validation),
        f"epoch {best.epoch}: {best.reason}" if best else None,
        _text(layout.config),
        _text(layout.command),
        ctx.run_file_url(index) if index.is_file() else None,
    )


def routes(ctx: UiContext) -> list[BaseRoute]:
    def runs_page(request: Request) -> Response:
        return ctx.page(request, "runs.html", runs=ctx.watcher.all(), nav="runs")

    def run_page(request: Request) -> Response:
        try:
            layout = ctx.watcher.layout(request.path_params["run"])
            summary = ctx.watcher.summary(layout)
            report = run_report(ctx, layout)
        except KohyaWrapError as exc:
            return ctx.page(request, "error.html", status_code=404, lines=exc.lines, nav="runs")
        actions = run_actions(ctx, layout, summary.status)
        return ctx.page(request, "run.html", run=summary, report=report, actions=actions, nav="runs")

    def report_part(request: Request) -> Response:
        try:
            layout = ctx.watcher.layout(request.path_params["run"])
            summary = ctx.watcher.summary(layout)
            report = run_report(ctx, layout)
        except KohyaWrapError as exc:
            return refuse(404, exc.lines[0])
        return ctx.page(request, "run_report.html", report=report, actions=run_actions(ctx, layout, summary.status))

    async def runs_events(request: Request) -> Response:
        return await ctx.stream(request, lambda: [s.to_dict() for s in ctx.watcher.all()], lambda _: False)

    async def run_events(request: Request) -> Response:
        try:
            layout = ctx.watcher.layout(request.path_params["run"])
        except RunError as exc:
            return refuse(404, exc.lines[0])

        def snapshot() -> dict[str, Any]:
            return ctx.watcher.summary(layout).to_dict()

        # Kept open after the run ended: a resumed or re-queued run goes on in the same folder.
        return await ctx.stream(request, snapshot, lambda _: False)

    return [
        Route("/runs", runs_page),
        Route("/runs/{run}", run_page),
        Route("/runs/{run}/report", report_part),
        Route("/events/runs", runs_events),
        Route("/events/runs/{run}", run_events),
        *action_routes(ctx),
    ]


def run_actions(ctx: UiContext, layout: RunLayout, status: str) -> list[str]:
    """The buttons a run's page offers for its state (filled in by the queue's actions)."""
    from kohya_wrap.ui import queue

    return queue.run_actions(ctx, layout, status)


def action_routes(ctx: UiContext) -> list[BaseRoute]:
    from kohya_wrap.ui import queue

    return queue.run_action_routes(ctx)
