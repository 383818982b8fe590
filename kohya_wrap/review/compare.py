"""Several runs side by side: a sample sheet labelled by the settings that differ, loss curves and a table."""

from __future__ import annotations

import html
import io
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kohya_wrap.errors import RunError
from kohya_wrap.files import write_new_folder
from kohya_wrap.review.estimate import duration, iso_seconds, last_attempt, read_events, run_timings
from kohya_wrap.review.outputs import best_epoch, collect, samples_by_epoch
from kohya_wrap.review.report import (
    CELL,
    FONT_SIZE,
    PAD,
    STYLE,
    LossSeries,
    fit_image,
    load_font,
    loss_axes,
    loss_png,
    loss_series,
    read_prompts,
    run_name,
    wrap_text,
)
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.runs import RunRecord, read_record

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

EpochChoice = int | Literal["final", "best"]

SHEET_PNG = "compare.png"
PAGE = "index.html"
# Keys that name a run rather than change what it learns: a sweep gives every run its own output name.
NAMING_KEYS = frozenset({"save.output_name"})
NOT_SET = "(not set)"
_TABLE = re.compile(r"^(.*\[\d+\])\.")
LINE = FONT_SIZE + 4
ROW_LABEL_WIDTH = 220
BAR = 6  # the coloured strip above a column, matching its loss curve
MAX_LABEL_LINES = 8
TABLE_COLUMN_MAX = 280
# matplotlib's tab10, named here so that the sheet's column strips and the curves agree.
COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


# ---- settings -------------------------------------------------------------------------------------


def flatten_settings(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys for a resolved config: `optimizer.type`, `sampling.prompts[2].text` (tables numbered from 1)."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_settings(value, f"{path}."))
        elif isinstance(value, list) and value and all(isinstance(item, Mapping) for item in value):
            for n, item in enumerate(value, 1):
                flat.update(flatten_settings(item, f"{path}[{n}]."))
        else:
            flat[path] = value
    return flat


def format_value(value: object) -> str:
    """A setting's value as in TOML, strings bare (`optimizer.type=Lion`), lists and tables as JSON."""
    if value is None:
        return NOT_SET
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def differing_keys(settings: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The keys whose value is not the same in every run (a key missing somewhere differs), in config order."""
    order: dict[str, None] = {}
    for flat in settings:
        order.update(dict.fromkeys(flat))
    missing = object()
    return tuple(key for key in order if len({json.dumps(s.get(key, missing), default=repr) for s in settings}) > 1)


def collapse_absent_tables(keys: Sequence[str], settings: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """A numbered table that some runs lack entirely counts as one key (`sampling.prompts[2]`), not one per entry."""
    collapsed: dict[str, None] = {}
    for key in keys:
        table = _TABLE.match(key)
        if table and any(not any(k.startswith(f"{table[1]}.") for k in flat) for flat in settings):
            collapsed[table[1]] = None
        else:
            collapsed[key] = None
    return tuple(collapsed)


def setting_value(settings: Mapping[str, Any], key: str) -> Any:
    """A flattened setting, or for a collapsed table key its entries as one table (None when absent)."""
    if key in settings:
        return settings[key]
    entries = {k[len(key) + 1 :]: v for k, v in settings.items() if k.startswith(f"{key}.")}
    return entries or None


def read_settings(layout: RunLayout) -> dict[str, Any]:
    """A run's resolved config.toml, flattened."""
    try:
        return flatten_settings(tomllib.loads(layout.config.read_text("utf-8")))
    except OSError as exc:
        raise RunError(f"compare: cannot read {layout.config}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RunError(f"compare: {layout.config} is not valid TOML: {exc}") from None


# ---- choosing what to show ------------------------------------------------------------------------


def parse_epoch(text: str) -> EpochChoice:
    """`final`, `best` or an epoch number (from 1)."""
    word = text.strip().lower()
    if word in ("final", "best"):
        return "final" if word == "final" else "best"
    try:
        number = int(word)
    except ValueError:
        raise RunError(f"compare: --epoch {text}: give final, best or an epoch number") from None
    if number < 1:
        raise RunError(f"compare: --epoch {text}: epochs are numbered from 1")
    return number


@dataclass(frozen=True)
class Cell:
    """One sample of the sheet: its image, or why there is none."""

    image: Path | None
    reason: str | None = None


@dataclass(frozen=True)
class ComparedRun:
    """One column of the sheet."""

    layout: RunLayout
    record: RunRecord
    settings: Mapping[str, Any]
    epoch: int | None  # the epoch whose samples are shown; None when none could be chosen
    epoch_note: str  # which epoch that is and why, e.g. "epoch 2 (final)"
    prompts: tuple[str, ...]
    cells: tuple[Cell, ...]  # one per row of the sheet
    loss: LossSeries
    wall_seconds: float

    @property
    def final_loss(self) -> tuple[float, str] | None:
        """The run's last loss and what it is: the last epoch's average, else the last moving average."""
        if self.loss.per_epoch:
            epoch, value = self.loss.per_epoch[-1]
            return value, f"epoch {epoch} average"
        points = self.loss.average or self.loss.per_step
        if points:
            step, value = points[-1]
            return value, f"step {step}"
        return None

    @property
    def wall_time(self) -> str:
        """The wall time of the run's newest attempt, for the table."""
        if self.wall_seconds <= 0:
            return "—"
        text = duration(self.wall_seconds)
        return f"{text} (last of {self.record.attempts} attempts)" if self.record.attempts > 1 else text


@dataclass(frozen=True)
class Comparison:
    """Runs side by side: columns labelled by `keys`, the settings that differ between them."""

    runs: tuple[ComparedRun, ...]
    keys: tuple[str, ...]
    rows: tuple[str, ...]  # one title per sample prompt
    epoch: EpochChoice

    def labels(self, index: int) -> tuple[str, ...]:
        """`key=value` for each differing setting; the folder name when the runs' settings are all alike."""
        run = self.runs[index]
        if not self.keys:
            return (run.layout.root.name,)
        return tuple(f"{key}={format_value(setting_value(run.settings, key))}" for key in self.keys)

    def missing(self) -> list[tuple[ComparedRun, int, str]]:
        """(run, row, reason) for every cell drawn as a placeholder."""
        return [
            (run, row, cell.reason or "")
            for run in self.runs
            for row, cell in enumerate(run.cells)
            if cell.image is None
        ]


@dataclass(frozen=True)
class _RunFacts:
    layout: RunLayout
    record: RunRecord
    name: str
    settings: dict[str, Any]
    prompts: tuple[str, ...]
    samples: dict[int, dict[int, Path]]
    saved_epochs: frozenset[int]  # epochs with a LoRA file or samples


def _facts(layout: RunLayout) -> _RunFacts:
    record = read_record(layout)
    name = run_name(layout, record)
    settings = read_settings(layout)
    samples = samples_by_epoch(layout, name)
    try:
        loras = {f.epoch for f in collect(layout, name, record.epochs) if f.epoch is not None}
    except OSError:  # a checkpoint removed (save_last_n_epochs) while the folder was read
        loras = set()
    prompts = read_prompts(layout)
    indexes = [i for slots in samples.values() for i in slots]
    count = max([len(prompts), *(i + 1 for i in indexes)])
    prompts += [""] * (count - len(prompts))
    return _RunFacts(layout, record, name, settings, tuple(prompts), samples, frozenset(loras | set(samples)))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _cell(facts: _RunFacts, epoch: int, row: int) -> Cell:
    record = facts.record
    slot = facts.samples.get(epoch, {})
    if row in slot:
        return Cell(slot[row])
    if not facts.prompts:
        return Cell(None, "this run has no sample prompts")
    if row >= len(facts.prompts):
        return Cell(None, f"this run has no prompt #{row + 1}")
    if epoch > record.epochs:
        return Cell(None, f"this run has {_plural(record.epochs, 'epoch')}: no epoch {epoch}")
    if slot:
        return Cell(None, f"no sample of prompt #{row + 1} at epoch {epoch}")
    reached = max(facts.saved_epochs, default=0)
    if epoch > reached and record.status != "finished":
        return Cell(
            None,
            {
                "planned": "not trained yet",
                "running": f"epoch {epoch} not reached yet (running)",
            }.get(record.status, f"run {record.status} before epoch {epoch}"),
        )
    return Cell(None, f"no samples saved at epoch {epoch}")


def _choose(facts: _RunFacts, choice: EpochChoice, rows: int) -> tuple[int | None, str, tuple[Cell, ...]]:
    if choice == "final":
        epoch, note = facts.record.epochs, f"epoch {facts.record.epochs} (final)"
    elif choice == "best":
        best = best_epoch(facts.layout)
        if best is None:
            # sd-scripts validates only with a validation split; without one there is nothing to rank by.
            reason = "no validation loss recorded, so no best epoch"
            return None, "no best epoch (no validation loss)", tuple(Cell(None, reason) for _ in range(rows))
        epoch, note = best.epoch, f"epoch {best.epoch} (best: validation loss {best.validation_loss:.3g})"
    else:
        epoch, note = choice, f"epoch {choice}"
    return epoch, note, tuple(_cell(facts, epoch, row) for row in range(rows))


def _row_titles(runs: Sequence[_RunFacts], rows: int) -> tuple[str, ...]:
    if not any(f.prompts for f in runs):
        return ("no sample prompts",)
    titles = []
    for row in range(rows):
        texts = {f.prompts[row] for f in runs if row < len(f.prompts) and f.prompts[row]}
        if len(texts) == 1:
            titles.append(f"#{row + 1} {texts.pop()}")
        elif texts:
            titles.append(f"#{row + 1} (the prompt differs between runs; see the page)")
        else:
            titles.append(f"#{row + 1}")
    return tuple(titles)


def _wall_seconds(layout: RunLayout, record: RunRecord) -> float:
    timed = last_attempt(read_events(layout))
    return run_timings(timed, iso_seconds(record.started), iso_seconds(record.ended)).wall


def compare_runs(layouts: Sequence[RunLayout], epoch: EpochChoice = "final") -> Comparison:
    """Read the run folders and choose each one's samples; refuses an epoch number that no run has saved."""
    facts = [_facts(layout) for layout in layouts]
    if isinstance(epoch, int) and not any(epoch in f.saved_epochs for f in facts):
        saved = sorted(set().union(*(f.saved_epochs for f in facts)))
        have = f"saved epochs: {', '.join(map(str, saved))}" if saved else "no run has saved an epoch yet"
        raise RunError(f"compare: --epoch {epoch}: no run has saved epoch {epoch} ({have}); choose another, or final")
    rows = max([1, *(len(f.prompts) for f in facts)])
    runs = []
    for f in facts:
        chosen, note, cells = _choose(f, epoch, rows)
        runs.append(
            ComparedRun(
                f.layout,
                f.record,
                f.settings,
                chosen,
                note,
                f.prompts,
                cells,
                loss_series(f.layout, f.record),
                _wall_seconds(f.layout, f.record),
            )
        )
    settings = [{k: v for k, v in f.settings.items() if k not in NAMING_KEYS} for f in facts]
    keys = collapse_absent_tables(differing_keys(settings), settings)
    return Comparison(tuple(runs), keys, _row_titles(facts, rows), epoch)


# ---- the sheet ------------------------------------------------------------------------------------


def colour(index: int) -> str:
    """The colour of a run's column strip and loss curve."""
    return COLOURS[index % len(COLOURS)]


def _header_lines(comparison: Comparison, index: int, font: Any, width: int) -> list[tuple[str, str]]:
    """(text, colour) lines above a column: each differing setting, then which epoch is shown."""
    lines: list[tuple[str, str]] = []
    labels = comparison.labels(index)
    for n, label in enumerate(labels):
        wrapped = wrap_text(label, font, width, 2)
        if len(lines) + len(wrapped) > MAX_LABEL_LINES - 1 and n < len(labels) - 1:
            lines.append((f"… and {len(labels) - n} more settings (see the table)", "#222222"))
            break
        lines += [(line, "#222222") for line in wrapped]
    lines += [(line, "#777777") for line in wrap_text(comparison.runs[index].epoch_note, font, width, 2)]
    return lines


def _placeholder(draw: ImageDraw.ImageDraw, x: int, y: int, reason: str, font: Any) -> None:
    draw.rectangle((x, y, x + CELL - 1, y + CELL - 1), fill="#eeeeee", outline="#cccccc")
    lines = wrap_text(reason, font, CELL - 2 * PAD, CELL // LINE - 1)
    top = y + CELL // 2 - len(lines) * LINE // 2
    for n, line in enumerate(lines):
        draw.text((x + CELL // 2, top + n * LINE + LINE // 2), line, fill="#555555", font=font, anchor="mm")


def render_grid(comparison: Comparison) -> Image.Image:
    """Columns: the runs, titled by their differing settings; rows: the sample prompts; placeholders say why."""
    from PIL import Image, ImageDraw

    font = load_font()
    headers = [_header_lines(comparison, i, font, CELL - 4) for i in range(len(comparison.runs))]
    header = PAD + BAR + PAD + LINE * max(len(h) for h in headers) + PAD
    width = ROW_LABEL_WIDTH + len(comparison.runs) * (CELL + PAD)
    height = header + len(comparison.rows) * (CELL + PAD)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(headers):
        x = ROW_LABEL_WIDTH + c * (CELL + PAD)
        draw.rectangle((x, PAD, x + CELL - 1, PAD + BAR - 1), fill=colour(c))
        for n, (line, fill) in enumerate(lines):
            draw.text((x + 2, PAD + BAR + PAD + n * LINE), line, fill=fill, font=font)
    for r, title in enumerate(comparison.rows):
        y = header + r * (CELL + PAD)
        for n, line in enumerate(wrap_text(title, font, ROW_LABEL_WIDTH - 2 * PAD, CELL // LINE)):
            draw.text((PAD, y + n * LINE), line, fill="#222222", font=font)
        for c, run in enumerate(comparison.runs):
            x = ROW_LABEL_WIDTH + c * (CELL + PAD)
            cell = run.cells[r]
            try:
                image = fit_image(cell.image, CELL) if cell.image is not None else None
            except OSError:  # a sample still being written when the run was killed
                image = None
            if image is None:
                _placeholder(draw, x, y, cell.reason or "the sample image cannot be read", font)
                continue
            sheet.paste(image, (x + (CELL - image.width) // 2, y + (CELL - image.height) // 2))
    return sheet


def _legend(comparison: Comparison, index: int) -> str:
    text = ", ".join(comparison.labels(index))
    return text if len(text) <= 70 else text[:69] + "…"


def render_losses(comparison: Comparison, width_px: int) -> bytes:
    """Every run's loss by step on one pair of axes, coloured like its column (PNG bytes, Agg canvas)."""
    figure, axes = loss_axes(max(width_px, 800) / 100, 4.0)
    for i, run in enumerate(comparison.runs):
        series, label = run.loss, _legend(comparison, i)
        if series.source == "none":
            axes.plot([], [], color=colour(i), linestyle=":", label=f"{label} (no loss recorded)")
            continue
        if series.per_step:
            steps, losses = zip(*series.per_step, strict=True)
            axes.plot(steps, losses, color=colour(i), linewidth=0.8, alpha=0.3)
        line = series.average or series.per_step
        steps, losses = zip(*line, strict=True)
        axes.plot(steps, losses, color=colour(i), linewidth=1.8, label=label)
        if series.per_epoch and series.steps_per_epoch:
            epochs, values = zip(*series.per_epoch, strict=True)
            axes.plot([e * series.steps_per_epoch for e in epochs], values, "o", color=colour(i), markersize=4)
    axes.set_title("loss: moving average over an epoch's steps (faint: each step; dots: epoch averages)", fontsize=9)
    return loss_png(figure, axes)


def table_rows(comparison: Comparison) -> list[list[str]]:
    """The settings table: a header, then per run its differing settings, final loss, wall time and status."""
    rows = [[*(comparison.keys or ("run",)), "final loss", "wall time", "status"]]
    for run in comparison.runs:
        values = [format_value(setting_value(run.settings, k)) for k in comparison.keys] or [run.layout.root.name]
        final = run.final_loss
        loss = "—" if final is None else f"{_loss_text(final[0])} ({final[1]})"
        rows.append([*values, loss, run.wall_time, run.record.status])
    return rows


def _loss_text(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.4f}"


def render_table(comparison: Comparison) -> Image.Image:
    """The settings table as an image, each value cut to its column with an ellipsis (the page has them whole)."""
    from PIL import Image, ImageDraw

    font = load_font()
    rows = table_rows(comparison)
    swatch = LINE
    widths = [
        min(TABLE_COLUMN_MAX, max(int(font.getlength(row[c])) for row in rows)) + 2 * PAD for c in range(len(rows[0]))
    ]
    width = PAD + swatch + PAD + sum(widths) + PAD
    height = PAD + len(rows) * (LINE + PAD) + PAD
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for r, row in enumerate(rows):
        y = PAD + r * (LINE + PAD)
        if r:
            draw.rectangle((PAD, y + 2, PAD + swatch - 1, y + swatch - 3), fill=colour(r - 1))
            draw.line((PAD, y - PAD // 2, width - PAD, y - PAD // 2), fill="#dddddd")
        x = PAD + swatch + PAD
        for c, text in enumerate(row):
            shown = (wrap_text(text, font, widths[c] - 2 * PAD, 1) or [""])[0]
            draw.text((x, y), shown, fill="#222222" if r else "#555555", font=font)
            x += widths[c]
    return image


def render_sheet(comparison: Comparison) -> Image.Image:
    """The whole sheet: the sample grid, the loss curves below it, then the table."""
    from PIL import Image

    grid = render_grid(comparison)
    with Image.open(io.BytesIO(render_losses(comparison, grid.width))) as png:
        losses = png.convert("RGB")
    table = render_table(comparison)
    parts = (grid, losses, table)
    sheet = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts) + 2 * PAD), "white")
    y = 0
    for part in parts:
        sheet.paste(part, (0, y))
        y += part.height + PAD
    return sheet


# ---- the page -------------------------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _epoch_words(choice: EpochChoice) -> str:
    if choice == "final":
        return "each run's final epoch"
    if choice == "best":
        return "each run's best epoch (lowest validation loss)"
    return f"epoch {choice}"


def comparison_page(comparison: Comparison) -> str:
    """index.html: the sheet, the table with every value whole, the prompts and every missing sample's reason."""
    n = len(comparison.runs)
    body = [
        f"<h1>{n} runs compared</h1>",
        f"<p class='muted'>Samples at {_esc(_epoch_words(comparison.epoch))}. "
        + (
            f"Columns are labelled by the {len(comparison.keys)} settings that differ."
            if comparison.keys
            else "The runs' settings are all alike: columns are labelled by run folder."
        )
        + "</p>",
        f"<p><a href='{SHEET_PNG}'><img src='{SHEET_PNG}' alt='samples, loss curves and settings of {n} runs'></a></p>",
        "<h2>Runs</h2>",
    ]
    rows = table_rows(comparison)
    head = "".join(f"<th>{_esc(h)}</th>" for h in ["", *rows[0], "epoch shown", "run folder"])
    lines = []
    for i, (run, values) in enumerate(zip(comparison.runs, rows[1:], strict=True)):
        swatch = f"<td><span class='swatch' style='background:{colour(i)}'></span></td>"
        cells = "".join(f"<td>{_esc(v)}</td>" for v in values)
        lines.append(f"<tr>{swatch}{cells}<td>{_esc(run.epoch_note)}</td><td>{_esc(run.layout.root)}</td></tr>")
    body.append(f"<div class='wide'><table><tr>{head}</tr>{''.join(lines)}</table></div>")
    body.append("<h2>Sample prompts</h2><ol>")
    for row in range(len(comparison.rows)):
        texts = {r.prompts[row] for r in comparison.runs if row < len(r.prompts) and r.prompts[row]}
        body.append(f"<li>{'<br>'.join(_esc(t) for t in sorted(texts)) or '<span class=muted>(none)</span>'}</li>")
    body.append("</ol>")
    missing = comparison.missing()
    if missing:
        body.append("<h2>Samples without an image</h2><ul>")
        body += [
            f"<li>{_esc(run.layout.root.name)}, prompt #{row + 1}: {_esc(reason)}</li>" for run, row, reason in missing
        ]
        body.append("</ul>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{n} runs compared — kohya_wrap</title><style>{STYLE}"
        ".swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px; } .wide { overflow-x: auto; }"
        "</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_comparison(comparison: Comparison, output: Path) -> Path:
    """Create the folder `output` with compare.png and index.html, whole or not at all; returns the page.

    Raises FileExistsError when `output` exists: nothing is ever overwritten.
    """
    buffer = io.BytesIO()
    render_sheet(comparison).save(buffer, format="PNG", optimize=True)
    page = comparison_page(comparison).encode("utf-8")
    # One rename into place: a reader never sees half a comparison.
    write_new_folder(output, {SHEET_PNG: buffer.getvalue(), PAGE: page})
    return output / PAGE
