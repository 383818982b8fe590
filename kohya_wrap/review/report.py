"""A run's report: epoch × prompt sample grid, loss curve, and one self-contained index.html."""

from __future__ import annotations

import html
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kohya_wrap.errors import RunError
from kohya_wrap.files import write_bytes_atomic
from kohya_wrap.review.estimate import (
    RunTimings,
    duration,
    iso_seconds,
    last_attempt,
    per_step,
    read_events,
    run_timings,
)
from kohya_wrap.review.outputs import BestEpoch, LoraFile, best_epoch, collect, samples_by_epoch, validation_losses
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, read_config_toml, read_record, sample_prompts

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from PIL import Image

CELL = 256  # side of the square each grid image is fitted into
FONT_SIZE = 14
HEADER_LINES = 4  # prompt text lines above each column, the rest cut with an ellipsis
PAD = 8
TENSORBOARD_TAGS = ("loss/current", "loss/average", "loss/epoch_average")
PREVIEW_PNG = "preview.png"
PREVIEW_JSON = "preview.json"


# ---- reading the run ------------------------------------------------------------------------------


def read_prompts(layout: RunLayout) -> list[str]:
    """The sample prompts' texts, in sd-scripts' index order (empty when the run had none)."""
    return [str(p.get("prompt", "")) for p in sample_prompts(layout)]


def _record(layout: RunLayout) -> RunRecord | None:
    try:
        return read_record(layout)
    except RunError:
        return None


def _config(layout: RunLayout) -> dict[str, Any]:
    try:
        return read_config_toml(layout)
    except RunError:
        return {}


def run_name(layout: RunLayout, record: RunRecord | None) -> str:
    """The LoRA output name (run.json, else config.toml, else the folder name)."""
    if record is not None:
        return record.name
    save = _config(layout).get("save")
    name = save.get("output_name") if isinstance(save, dict) else None
    return name if isinstance(name, str) else layout.root.name


# ---- sample grid ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleGrid:
    """Rows are the epochs that have samples, columns the sample prompts."""

    epochs: tuple[int, ...]
    prompts: tuple[str, ...]
    cells: Mapping[tuple[int, int], Path]  # (epoch, prompt index) → the newest sample


def sample_grid(layout: RunLayout, name: str) -> SampleGrid:
    by_epoch = samples_by_epoch(layout, name)
    prompts = read_prompts(layout)
    columns = max([len(prompts), *(i + 1 for slots in by_epoch.values() for i in slots)])
    prompts += [""] * (columns - len(prompts))
    cells = {(epoch, i): path for epoch, slots in by_epoch.items() for i, path in slots.items()}
    return SampleGrid(tuple(sorted(by_epoch)), tuple(prompts), cells)


def load_font(size: int = FONT_SIZE) -> Any:
    """Pillow's default font at `size` pixels (its fixed bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # a Pillow without FreeType has only the fixed bitmap font
        return ImageFont.load_default()


def wrap_text(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels; the last kept line ends in an ellipsis when text is cut."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while font.getlength(word) > width and len(word) > 1:  # a very long token: break it anywhere
            cut = max(n for n in range(1, len(word) + 1) if font.getlength(word[:n]) <= width or n == 1)
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and font.getlength(last + "…") > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def fit_image(path: Path, cell: int) -> Image.Image:
    """The image at `path` in RGB, scaled to fit a `cell`-pixel square."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    # Tiny samples are blown up without smoothing so their pixels stay visible.
    small = max(rgb.size) * 2 <= cell
    method = Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS
    return ImageOps.contain(rgb, (cell, cell), method)


def labelled_grid(
    rows: Sequence[str], columns: Sequence[str], cells: Mapping[tuple[int, int], Path], cell: int = CELL
) -> Image.Image:
    """A white sheet: column titles on top, row titles on the left, each image fitted into its cell.

    `cells` maps (row, column) positions to image files; a missing or unreadable one is a grey box.
    """
    from PIL import Image, ImageDraw

    font = load_font()
    line_height = FONT_SIZE + 4
    titles = [wrap_text(text, font, cell - 4, HEADER_LINES) for text in columns]
    header = PAD + line_height * max([1, *(len(t) for t in titles)]) + PAD
    label_width = PAD + max([0, *(int(font.getlength(r)) for r in rows)]) + 2 * PAD
    width = label_width + len(columns) * (cell + PAD)
    height = header + len(rows) * (cell + PAD)
    sheet = Image.new("RGB", (max(width, 1), max(height, 1)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(titles):
        x = label_width + c * (cell + PAD)
        for n, line in enumerate(lines):
            draw.text((x + 2, PAD + n * line_height), line, fill="#222222", font=font)
    for r, label in enumerate(rows):
        y = header + r * (cell + PAD)
        draw.text((PAD, y + cell // 2 - line_height // 2), label, fill="#222222", font=font)
        for c in range(len(columns)):
            x = label_width + c * (cell + PAD)
            path = cells.get((r, c))
            try:
                image = fit_image(path, cell) if path is not None else None
            except OSError:  # a sample still being written when the run was killed
                image = None
            if image is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill="#eeeeee")
                draw.text((x + cell // 2, y + cell // 2), "no image", fill="#888888", font=font, anchor="mm")
                continue
            sheet.paste(image, (x + (cell - image.width) // 2, y + (cell - image.height) // 2))
    return sheet


def render_sample_grid(grid: SampleGrid) -> Image.Image:
    rows = [f"epoch {e}" for e in grid.epochs]
    columns = [f"#{i + 1} {text}".strip() for i, text in enumerate(grid.prompts)]
    cells = {
        (r, c): path
        for r, e in enumerate(grid.epochs)
        for c in range(len(grid.prompts))
        if (path := grid.cells.get((e, c))) is not None
    }
    return labelled_grid(rows, columns, cells)


# ---- loss -----------------------------------------------------------------------------------------

Points = tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class LossSeries:
    """The loss of a run, by step and by epoch, and where it was read from."""

    source: Literal["tensorboard", "events", "none"]
    per_step: Points  # the loss of each step (TensorBoard's loss/current; empty from events)
    average: Points  # moving average over the last epoch's worth of steps (the progress bar's avr_loss)
    per_epoch: Points  # (epoch, that epoch's average loss)
    steps_per_epoch: int | None
    validation: tuple[ev.Validation, ...] = ()  # the validated epochs, in order (events.jsonl)

    @property
    def validation_points(self) -> tuple[tuple[int, int, float], ...]:
        """(epoch, step, validation loss) of each validated epoch whose step is known: where to plot it."""
        points = []
        for v in self.validation:
            step = v.step if v.step is not None else v.epoch * self.steps_per_epoch if self.steps_per_epoch else None
            if step is not None:
                points.append((v.epoch, step, v.loss))
        return tuple(points)

    @property
    def steps(self) -> int:
        """How many distinct steps have a loss."""
        return len(self.per_step or self.average)


def _merge_attempts(
    attempts: Sequence[Mapping[str, Sequence[tuple[int, float]]]], steps_per_epoch: int | None
) -> dict[str, dict[int, float]]:
    """One series per tag across the attempts of a resumed run; a later attempt wins where they overlap.

    sd-scripts restarts its step counter when it resumes, but numbers epochs on: an attempt whose first
    epoch average is for epoch E started at step (E - 1) × steps per epoch. Without an epoch average
    it is assumed to have resumed at the last whole epoch logged before it.
    """
    merged: dict[str, dict[int, float]] = {tag: {} for tag in TENSORBOARD_TAGS}
    for attempt in attempts:
        current = attempt.get("loss/current", [])
        offset = 0
        seen = merged["loss/current"]
        if seen and current and steps_per_epoch and min(s for s, _ in current) <= max(seen):
            epochs = attempt.get("loss/epoch_average", [])
            first_epoch = min(e for e, _ in epochs) if epochs else max(seen) // steps_per_epoch + 1
            offset = (first_epoch - 1) * steps_per_epoch
        for tag in ("loss/current", "loss/average"):
            merged[tag].update((s + offset, v) for s, v in attempt.get(tag, []))
        merged["loss/epoch_average"].update(attempt.get("loss/epoch_average", []))
    return merged


def _tensorboard_attempts(logging_dir: Path) -> list[dict[str, list[tuple[int, float]]]] | None:
    """Each TensorBoard run folder's loss scalars, oldest first; None when tensorboard is not installed."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import (  # type: ignore[import-untyped]
            EventAccumulator,
        )
    except ImportError:
        return None
    # sd-scripts writes logs/<YYYYmmddHHMMSS>/network_train/, one folder per attempt: names sort by time.
    folders = sorted({p.parent for p in logging_dir.rglob("events.out.tfevents.*")})
    attempts = []
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = set(accumulator.Tags().get("scalars", []))
        attempts.append(
            {
                tag: [(int(s.step), float(s.value)) for s in accumulator.Scalars(tag)]
                for tag in TENSORBOARD_TAGS
                if tag in tags
            }
        )
    return attempts


def _points(series: Mapping[int, float]) -> Points:
    return tuple(sorted(series.items()))


def loss_series(layout: RunLayout, record: RunRecord | None = None) -> LossSeries:
    """The run's loss from sd-scripts' TensorBoard files, else from the Step events in events.jsonl."""
    record = record or _record(layout)
    per_epoch_steps = record.total_steps // record.epochs if record and record.epochs > 0 else None
    validation = tuple(validation_losses(layout).values())
    try:
        attempts = _tensorboard_attempts(layout.logging_dir)
    except Exception:  # noqa: BLE001 - a half-written event file must not cost the report; events.jsonl remains
        attempts = None
    if attempts and any(a.get("loss/current") for a in attempts):
        merged = _merge_attempts(attempts, per_epoch_steps)
        return LossSeries(
            "tensorboard",
            _points(merged["loss/current"]),
            _points(merged["loss/average"]),
            _points(merged["loss/epoch_average"]),
            per_epoch_steps,
            validation,
        )
    last: dict[int, float] = {}
    for event, _ in read_events(layout):
        # The bar redraws each step twice; the last redraw carries that step's loss.
        if isinstance(event, ev.Step) and event.loss is not None:
            last[event.step] = event.loss
    if not last:
        return LossSeries("none", (), (), (), per_epoch_steps, validation)
    per_epoch: dict[int, float] = {}
    if per_epoch_steps:
        # avr_loss averages the last epoch's worth of steps: at an epoch's last step, that epoch's mean.
        per_epoch = {s // per_epoch_steps: v for s, v in last.items() if s % per_epoch_steps == 0}
    return LossSeries("events", (), _points(last), _points(per_epoch), per_epoch_steps, validation)


def loss_axes(width: float, height: float) -> tuple[Figure, Axes]:
    """A `width` × `height` inch figure with one pair of axes on matplotlib's Agg canvas (no display, no
    global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def loss_png(figure: Figure, axes: Axes) -> bytes:
    """The finished loss chart as PNG bytes: step and loss axis labels, a light grid and the legend."""
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def render_loss(series: LossSeries, best: BestEpoch | None = None) -> bytes:
    """The loss curve as PNG bytes (matplotlib's Agg canvas: no display, no global backend switch).

    Validation loss shares the axes with the training loss; `best` marks the suggested epoch on it.
    """
    figure, axes = loss_axes(8, 3.6)
    if series.per_step:
        steps, losses = zip(*series.per_step, strict=True)
        axes.plot(
            steps,
            losses,
            color="#9ab",
            linewidth=0.8,
            marker="." if len(steps) < 50 else "",
            label="loss per step",
        )
    if series.average:
        steps, losses = zip(*series.average, strict=True)
        axes.plot(steps, losses, color="#1f5fa8", linewidth=1.8, label="moving average (last epoch's steps)")
    if series.per_epoch and series.steps_per_epoch:
        epochs, losses = zip(*series.per_epoch, strict=True)
        ends = [e * series.steps_per_epoch for e in epochs]
        axes.plot(ends, losses, "o", color="#d1495b", label="epoch average")
        for epoch, x, y in zip(epochs, ends, losses, strict=True):
            axes.annotate(f"e{epoch}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
        for x in ends:
            axes.axvline(x, color="#ddd", linewidth=0.6, zorder=0)
    if validation := series.validation_points:
        _, steps, losses = zip(*validation, strict=True)
        axes.plot(steps, losses, "s-", color="#2a8a3e", linewidth=1.4, markersize=5, label="validation loss")
        for epoch, x, y in validation:
            if best is not None and epoch == best.epoch:
                axes.plot([x], [y], "*", color="#e0a400", markersize=16, zorder=5, label=f"suggested: epoch {epoch}")
    return loss_png(figure, axes)


# ---- the page -------------------------------------------------------------------------------------


def save_png(image: Image.Image, path: Path) -> None:
    """Write `image` to `path` so that a reader never sees half a file."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    write_bytes_atomic(path, buffer.getvalue())


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1200px; padding: 0 16px; }
body { color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; }
h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
.status { display: inline-block; padding: 2px 10px; border-radius: 10px; color: white; font-weight: 600; }
.finished { background: #2a8a3e; } .failed { background: #c0392b; } .interrupted { background: #d68910; }
.running { background: #2e6fb7; } .planned, .unknown { background: #888; }
.error { border-left: 4px solid #c0392b; background: #fdf1f0; padding: 8px 12px; }
table { border-collapse: collapse; }
td, th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 12px; overflow-x: auto; font-size: 13px; }
.muted { color: #777; }
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: Path, layout: RunLayout) -> str:
    """A link from report/index.html to `path`, relative so the folder can be moved or copied whole."""
    return Path(os.path.relpath(path, layout.report_dir)).as_posix()


def _link(path: Path, layout: RunLayout, text: str | None = None) -> str:
    return f'<a href="{_esc(_rel(path, layout))}">{_esc(text if text is not None else path.name)}</a>'


def _errors(timed: Sequence[tuple[ev.Event, float | None]]) -> list[ev.Error]:
    unique: dict[tuple[str, str], ev.Error] = {}
    for event, _ in timed:
        if isinstance(event, ev.Error):
            unique.setdefault((event.kind, event.message), event)
    return list(unique.values())


def _header(
    layout: RunLayout,
    record: RunRecord | None,
    name: str,
    timed: Sequence[tuple[ev.Event, float | None]],
    series: LossSeries,
) -> list[str]:
    status = record.status if record else "unknown"
    out = [f"<h1>{_esc(name)} <span class='status {_esc(status)}'>{_esc(status)}</span></h1>"]
    if record is not None:
        facts = [
            record.family,
            record.script,
            f"{record.epochs} epochs",
            f"{record.total_steps} steps",
            f"config {record.config_hash}",
        ]
        out.append(f"<p class='muted'>{_esc(' · '.join(facts))} · {_esc(layout.root.name)}</p>")
        if record.reason and status != "finished":
            out.append(f"<p>Reason: {_esc(record.reason)}</p>")
    if status in ("failed", "unknown") or _errors(timed):
        for error in _errors(timed):
            out.append(
                f"<div class='error'><b>{_esc(error.kind)}</b>: {_esc(error.message)}<br>Fix: {_esc(error.hint)}</div>"
            )
        if layout.log.exists():
            out.append(f"<p>Full output: {_link(layout.log, layout)}</p>")
    if status == "interrupted":
        out.append(f"<p>Continue with <code>kohya-wrap train --resume {_esc(layout.root)}</code>.</p>")
    nan_steps = [s for s, v in (series.per_step or series.average) if math.isnan(v)]
    if nan_steps:
        out.append(
            f"<div class='error'>The loss became NaN at step {nan_steps[0]}: the LoRA from then on is "
            "broken (use bf16, a lower learning rate, or an earlier epoch).</div>"
        )
    return out


def _timings(record: RunRecord | None, timings: RunTimings) -> list[str]:
    rows: list[tuple[str, str]] = []
    if record is not None:
        rows += [
            ("created", record.created),
            ("started", record.started or "—"),
            ("ended", record.ended or "—"),
        ]
        if record.attempts > 1:
            rows.append(("attempts", f"{record.attempts} (resumed from {record.resumed_from})"))
        if record.exit_code is not None:
            rows.append(("exit code", str(record.exit_code)))
    if timings.wall > 0:
        rows.append(("wall time (last attempt)", duration(timings.wall)))
        rows.append(("start-up (imports, model load, caching)", duration(timings.seconds["startup"])))
        if timings.step_seconds is not None:
            rows.append(
                (
                    "training",
                    f"{duration(timings.seconds['training'])} for {timings.steps} steps "
                    f"({per_step(timings.step_seconds)}/step)",
                )
            )
        if timings.sample_seconds is not None:
            rows.append(
                (
                    "sampling",
                    f"{duration(timings.seconds['sampling'])} for {timings.samples} images "
                    f"({per_step(timings.sample_seconds)} each)",
                )
            )
        rows.append(("saving", duration(timings.seconds["saving"])))
    if record is not None and record.versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in record.versions.items())))
    body = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in rows)
    return ["<h2>Timings</h2>", f"<table>{body}</table>" if rows else "<p class='muted'>Not started.</p>"]


def _lora_table(layout: RunLayout, files: Sequence[LoraFile], series: LossSeries, best: BestEpoch | None) -> list[str]:
    out = ["<h2>LoRA files</h2>"]
    if not files:
        return [*out, "<p class='muted'>No LoRA file saved yet.</p>"]
    validation = {v.epoch: v.loss for v in series.validation}
    rows = []
    for lora in files:
        label = f"epoch {lora.epoch}" if lora.epoch is not None else f"step {lora.step}"
        samples = " ".join(_link(p, layout, f"#{i + 1}") for i, p in enumerate(lora.samples))
        loss = ""
        if validation:
            value = validation.get(lora.epoch) if lora.epoch is not None else None
            mark = " ★ suggested" if best is not None and lora.path == best.lora else ""
            loss = f"<td class='num'>{'—' if value is None else f'{value:.3g}'}{mark}</td>"
        rows.append(
            f"<tr><td>{_esc(label)}{' (final)' if lora.final else ''}</td>"
            f"<td>{_link(lora.path, layout, _rel(lora.path, layout))}</td>"
            f"<td class='num'>{lora.size / 2**20:.1f} MiB</td>{loss}<td>{samples}</td></tr>"
        )
    loss_head = "<th>validation loss</th>" if validation else ""
    head = f"<tr><th>epoch</th><th>file</th><th>size</th>{loss_head}<th>samples</th></tr>"
    return [*out, f"<table>{head}{''.join(rows)}</table>"]


def _suggestion(layout: RunLayout, series: LossSeries, best: BestEpoch | None) -> list[str]:
    """The suggested epoch, how it was chosen, and what validation loss cannot tell."""
    if not series.validation:
        return []
    if best is None:
        found = "<p>No suggested epoch: no saved epoch has a finite validation loss yet.</p>"
    else:
        found = (
            f"<p><b>Suggested epoch: {best.epoch}</b> ({_link(best.lora, layout, _rel(best.lora, layout))}): "
            f"{_esc(best.reason)}.</p>"
        )
    how = (
        "<p class='muted'>How it was chosen: sd-scripts held part of the dataset out of training "
        "(validation.split) and, after each validated epoch, measured the loss on those images at four fixed "
        "timesteps with the same noise every time, so the epochs compare; the lowest value marks the LoRA that "
        "fits images it never trained on best. sd-scripts prints 3 significant digits, and a tie goes to the "
        "earliest epoch. Validation loss sees overfitting, not likeness or style: the samples above have the "
        "last word.</p>"
    )
    return [found, how]


def _image(layout: RunLayout, name: str, alt: str) -> str:
    path = layout.report_dir / name
    return f"<p><a href='{_esc(name)}'><img src='{_esc(name)}' alt='{_esc(alt)}'></a></p>" if path.exists() else ""


def _preview(layout: RunLayout) -> list[str]:
    if not (layout.report_dir / PREVIEW_PNG).exists():
        return []
    out = ["<h2>Preview at several LoRA weights</h2>"]
    try:
        meta = json.loads((layout.report_dir / PREVIEW_JSON).read_text("utf-8"))
        out.append(
            f"<p class='muted'>Epochs {_esc(', '.join(map(str, meta['epochs'])))} at weights "
            f"{_esc(', '.join(f'{w:g}' for w in meta['weights']))}; "
            f"{_esc(meta['steps'])} steps, seed {_esc(meta['seed'])}, {_esc(meta['sampler'])}.</p>"
        )
        prompts = meta["prompts"]
        numbered = len(prompts) > 1
        out += [
            f"<p class='muted'>{f'#{i + 1} ' if numbered else ''}{_esc(text)}</p>" for i, text in enumerate(prompts)
        ]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a preview.json from an interrupted preview: the image alone still says most
    return [*out, _image(layout, PREVIEW_PNG, "LoRA preview by epoch and weight")]


def _page(
    layout: RunLayout,
    record: RunRecord | None,
    name: str,
    grid: SampleGrid | None,
    series: LossSeries,
    files: Sequence[LoraFile],
    timed: Sequence[tuple[ev.Event, float | None]],
    best: BestEpoch | None = None,
) -> str:
    started, ended = (iso_seconds(record.started), iso_seconds(record.ended)) if record else (None, None)
    timings = run_timings(last_attempt(timed), started, ended)
    body = _header(layout, record, name, timed, series)
    body += ["<h2>Samples</h2>"]
    if grid is not None and grid.epochs:
        body.append(f"<p class='muted'>Rows: epochs; columns: the sample prompts ({len(grid.prompts)}).</p>")
        body.append(_image(layout, "grid.png", "sample images by epoch and prompt"))
    else:
        body.append("<p class='muted'>No sample images yet.</p>")
    body += _preview(layout)
    body += ["<h2>Loss</h2>"]
    if series.source == "none":
        body.append("<p class='muted'>No loss recorded yet.</p>")
    else:
        source = "TensorBoard logs" if series.source == "tensorboard" else "the progress bar (events.jsonl)"
        body.append(f"<p class='muted'>{series.steps} steps, from {source}.</p>")
        body.append(_image(layout, "loss.png", "loss curve"))
    body += _suggestion(layout, series, best)
    body += _lora_table(layout, files, series, best)
    body += _timings(record, timings)
    body += ["<h2>Settings</h2>"]
    try:
        body.append(f"<pre>{_esc(layout.config.read_text('utf-8'))}</pre>")
    except OSError:
        body.append("<p class='muted'>config.toml is missing.</p>")
    if layout.command.exists():
        body.append(f"<p>Command: {_link(layout.command, layout)} · Log: {_link(layout.log, layout)}</p>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_esc(name)} — kohya_wrap report</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(part for part in body if part)
        + "\n</body></html>\n"
    )


def write_report(layout: RunLayout) -> Path:
    """Write report/grid.png, report/loss.png and report/index.html; returns the page's path.

    Works on any state of a run folder (planned, running, failed, interrupted): each part shows what
    exists, and no part's trouble stops the others. Every file is replaced atomically.
    """
    record = _record(layout)
    name = run_name(layout, record)
    timed = read_events(layout)
    grid: SampleGrid | None = None
    try:
        grid = sample_grid(layout, name)
        if grid.epochs:
            save_png(render_sample_grid(grid), layout.report_dir / "grid.png")
    except OSError:
        grid = None
    series = loss_series(layout, record)
    try:
        best = best_epoch(layout) if record is not None and series.validation else None
    except (RunError, OSError):
        best = None
    if series.source != "none":
        write_bytes_atomic(layout.report_dir / "loss.png", render_loss(series, best))
    try:
        files = collect(layout, name, record.epochs) if record is not None else []
    except OSError:  # a checkpoint removed (save_last_n_epochs) while a running run is reported
        files = []
    index = layout.report_dir / "index.html"
    write_bytes_atomic(index, _page(layout, record, name, grid, series, files, timed, best).encode("utf-8"))
    return index


def tensorboard_argv(layouts: Sequence[RunLayout], python: str, port: int) -> list[str]:
    """`python -m tensorboard.main --logdir_spec name:path,…`: each run's logs/ under its folder's name."""
    specs: list[str] = []
    names: set[str] = set()
    for layout in layouts:
        if not layout.logging_dir.is_dir():
            raise RunError(
                f"tensorboard: {layout.root} has no logs/ folder (sd-scripts writes it once training "
                "starts); is it a run folder?"
            )
        if "," in str(layout.logging_dir):
            raise RunError(
                f"tensorboard: {layout.logging_dir}: TensorBoard cannot read a path with a comma in "
                "--logdir_spec; rename the folder"
            )
        # TensorBoard splits the spec at commas and at a name's first colon.
        base = layout.root.name.replace(",", "_").replace(":", "_").lstrip("/") or "run"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.add(name)
        specs.append(f"{name}:{layout.logging_dir}")
    return [python, "-m", "tensorboard.main", "--logdir_spec", ",".join(specs), "--port", str(port)]
