"""What the user sees while a run goes: a rich bar on a terminal, plain lines in logs, JSON for tools."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task, TaskID, TextColumn
from rich.text import Text

from kohya_wrap.train import events as ev
from kohya_wrap.train.view import View

PHASE_TEXT = {
    "loading_model": "loading the base model",
    "hashing_model": "hashing the base model (large files take a minute)",
    "caching_latents": "caching latents",
    "caching_text_encoder_outputs": "caching text encoder outputs",
    "preparing_network": "preparing the LoRA network",
    "sampling": "rendering sample images",
    "validating": "validating on the held-out images",
}


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


def fmt_rate(rate: float | None) -> str:
    if not rate:
        return ""
    return f"{rate:.2f} it/s" if rate >= 1 else f"{1 / rate:.2f} s/it"


def describe(event: ev.Event) -> str | None:
    """One human line for an event worth a line of its own (steps are shown by the bar)."""
    if isinstance(event, ev.RunStarted):
        return (
            f"training: {event.total_steps} steps, {event.epochs} epochs, "
            f"{event.batches_per_epoch} batches per epoch, {event.images} images with repeats"
        )
    if isinstance(event, ev.Phase):
        return PHASE_TEXT.get(event.name, event.name) + (f": {event.detail}" if event.detail else "")
    if isinstance(event, ev.CheckpointSaved):
        label = f"epoch {event.epoch}" if event.epoch is not None else f"step {event.step}"
        return f"saved LoRA ({label}{', final' if event.final else ''}): {event.path}"
    if isinstance(event, ev.Validation):
        return f"validation loss (epoch {event.epoch}): {event.loss:.3g}"
    if isinstance(event, ev.SampleSaved):
        return f"sample: {event.path}" if event.path else None
    if isinstance(event, ev.StateSaved):
        return f"saved state: {event.path}" if event.path else None
    if isinstance(event, ev.Warning):
        return f"warning: {event.message}"
    if isinstance(event, ev.Error):
        return f"error ({event.kind}): {event.message}\n  fix: {event.hint}"
    if isinstance(event, ev.RunFinished):
        return f"{'finished' if event.success else 'stopped'}: {event.reason}"
    return None


class _Counting(ProgressColumn):
    """Shows `column` once the step count is known; before that (model loading, latent caching) nothing."""

    def __init__(self, column: ProgressColumn) -> None:
        super().__init__()
        self.column = column

    def render(self, task: Task) -> RenderableType:
        return Text("") if task.total is None else self.column.render(task)


class _Waiting(ProgressColumn):
    """A spinner while the step count is unknown, so a phase without a count still shows life."""

    def __init__(self) -> None:
        super().__init__()
        self.spinner = SpinnerColumn()

    def render(self, task: Task) -> RenderableType:
        return self.spinner.render(task) if task.total is None else Text("")


class RichView:
    """A bar sized from the total steps, with epoch, loss, speed and ETA; event lines print above it."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.progress = Progress(
            _Waiting(),
            TextColumn("[bold]{task.description}"),
            _Counting(BarColumn()),
            _Counting(TextColumn("{task.completed}/{task.total}")),
            TextColumn("{task.fields[epoch]}"),
            _Counting(TextColumn("loss {task.fields[loss]}")),
            _Counting(TextColumn("{task.fields[rate]}")),
            _Counting(TextColumn("ETA {task.fields[eta]}")),
            console=console,
            transient=False,
        )
        self.task: TaskID = self.progress.add_task("starting", total=None, epoch="", loss="-", rate="", eta="--:--")
        self.progress.start()

    def event(self, event: ev.Event) -> None:
        p, task = self.progress, self.task
        if isinstance(event, ev.Phase):
            p.update(task, description=PHASE_TEXT.get(event.name, event.name))
        elif isinstance(event, ev.RunStarted):
            p.update(task, total=event.total_steps, description="training")
        elif isinstance(event, ev.EpochStarted):
            p.update(task, epoch=f"epoch {event.epoch}/{event.total}", description="training")
        elif isinstance(event, ev.Step):
            p.update(
                task,
                completed=event.step,
                total=event.total,
                description="training",
                loss="-" if event.loss is None else f"{event.loss:.4g}",
                rate=fmt_rate(event.rate),
                eta=fmt_seconds(event.eta_s),
            )
        line = describe(event)
        if line and not isinstance(event, ev.Phase | ev.RunStarted):
            p.console.print(line, markup=False, highlight=False)

    def raw(self, text: str) -> None:
        if self.verbose:
            self.progress.console.out(text, end="", highlight=False)

    def note(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


class PlainView:
    """One line per event; steps at most every 10 % or 30 s, so logs stay readable."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        self.out = out
        self.verbose = verbose
        self._last_step_at = 0.0
        self._last_tenth = -1

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def event(self, event: ev.Event) -> None:
        if isinstance(event, ev.Step):
            tenth = event.step * 10 // event.total if event.total else 0
            now = time.monotonic()
            if tenth != self._last_tenth or now - self._last_step_at >= 30 or event.step == event.total:
                self._last_tenth, self._last_step_at = tenth, now
                loss = "-" if event.loss is None else f"{event.loss:.4g}"
                self._print(
                    f"step {event.step}/{event.total} loss {loss} {fmt_rate(event.rate)} ETA {fmt_seconds(event.eta_s)}"
                )
            return
        if isinstance(event, ev.EpochStarted):
            self._print(f"epoch {event.epoch}/{event.total}")
            return
        line = describe(event)
        if line:
            self._print(line)

    def raw(self, text: str) -> None:
        if self.verbose:
            self.out.write(text)
            self.out.flush()

    def note(self, line: str) -> None:
        self._print(line)

    def close(self) -> None:
        self.out.flush()


class JsonView:
    """Every event as one JSON line on stdout, for other tools; notes go to stderr."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def event(self, event: ev.Event) -> None:
        print(ev.to_json(event), file=self.out, flush=True)

    def raw(self, text: str) -> None:
        return None

    def note(self, line: str) -> None:
        print(json.dumps({"kind": "note", "message": line}, ensure_ascii=False), file=self.out, flush=True)

    def close(self) -> None:
        self.out.flush()


def make_view(json_lines: bool = False, verbose: bool = False, out: TextIO | None = None) -> View:
    stream = out or sys.stdout
    if json_lines:
        return JsonView(stream)
    if stream.isatty():
        return RichView(Console(file=stream), verbose)
    return PlainView(stream, verbose)
