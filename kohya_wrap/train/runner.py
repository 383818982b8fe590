"""One training run end to end: run folder, launch, events, status, never losing what was made."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from kohya_wrap.data.dataset import DatasetReport
from kohya_wrap.errors import RunError, TrainingFailed, TrainingInterrupted
from kohya_wrap.procs import ProcessRef
from kohya_wrap.train import events as ev
from kohya_wrap.train import launch
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.logparse import LogParser
from kohya_wrap.train.runs import RunRecord, now_iso, read_record, run_config, update_record
from kohya_wrap.train.view import View

RELEVANT_LINES = 12


@dataclass(frozen=True)
class ResumePoint:
    state_dir: Path
    epoch: int
    step: int


def versions(sd_scripts: Path) -> dict[str, str]:
    """Versions that explain a run later (read from metadata: importing torch here would cost seconds)."""
    found = {"python": platform.python_version()}
    for dist in ("kohya-wrap", "torch", "accelerate", "transformers", "diffusers"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    found["sd-scripts"] = launch.git_head(sd_scripts) or "unknown"
    return found


def dataset_hash(report: DatasetReport) -> str:
    """Hash of every image (name, size, mtime) and caption text: tells whether two runs saw the same data."""
    digest = hashlib.sha256()
    for folder in report.folders:
        digest.update(f"{folder.path}|{folder.repeats}|{folder.is_reg}\n".encode())
        for image in folder.images:
            stat = image.path.stat()
            digest.update(f"{image.path.name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
            if image.caption is not None:
                digest.update(image.caption.read_bytes())
    return digest.hexdigest()[:16]


def find_resume_point(layout: RunLayout, name: str) -> ResumePoint:
    """The newest saved state of a run (highest epoch/step in its train_state.json)."""
    best: ResumePoint | None = None
    for state in sorted(layout.output_dir.glob(f"{name}*-state")):
        try:
            data = json.loads((state / "train_state.json").read_text("utf-8"))
            point = ResumePoint(state, int(data["current_epoch"]), int(data["current_step"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if best is None or (point.epoch, point.step) > (best.epoch, best.step):
            best = point
    if best is None:
        raise RunError(
            f"resume: {layout.root} has no saved state to resume from; runs save state when "
            "save.save_state = true (the default)"
        )
    return best


class EventSink:
    """Parses child output into events, appends them to events.jsonl and shows them."""

    def __init__(
        self, layout: RunLayout, view: View, parser: LogParser, step_offset: int, total_steps: int, stop_on_nan: bool
    ) -> None:
        self.layout = layout
        self.view = view
        self.parser = parser
        self.step_offset = step_offset
        self.total_steps = total_steps
        self.stop_on_nan = stop_on_nan
        self.child: launch.Child | None = None
        self.errors: list[ev.Error] = []
        self.finished: ev.RunFinished | None = None
        self._file = layout.events.open("a", encoding="utf-8")

    def adjust(self, event: ev.Event) -> ev.Event:
        # sd-scripts never names its sample files; they follow `<name>_e<epoch>_<index>_<time>[_<seed>].png`.
        if isinstance(event, ev.SampleSaved) and event.path is None and event.epoch is not None:
            pattern = f"*_e{event.epoch:06d}_{event.index:02d}_*.png"
            found = sorted(self.layout.samples_dir.glob(pattern), key=lambda p: p.stat().st_mtime)
            if found:
                return dataclasses.replace(event, path=str(found[-1]))
        # sd-scripts restarts its step counter at 0 when it resumes; report steps of the whole run.
        if isinstance(event, ev.Step) and self.step_offset:
            return ev.Step(
                step=event.step + self.step_offset,
                total=self.total_steps,
                loss=event.loss,
                rate=event.rate,
                eta_s=event.eta_s,
                elapsed_s=event.elapsed_s,
            )
        return event

    def emit(self, event: ev.Event) -> None:
        event = self.adjust(event)
        self._file.write(ev.to_json(event, t=time.time()) + "\n")
        self._file.flush()
        self.view.event(event)
        if isinstance(event, ev.Error):
            self.errors.append(event)
            if event.kind == "nan" and self.stop_on_nan and self.child is not None:
                self.child.stop("nan")
        if isinstance(event, ev.RunFinished):
            self.finished = event

    def text(self, chunk: str) -> None:
        self.view.raw(chunk)
        for event in self.parser.feed(chunk):
            self.emit(event)

    def idle(self) -> None:
        for event in self.parser.idle():
            self.emit(event)

    def close(self, exit_code: int) -> None:
        for event in self.parser.finish(exit_code):
            self.emit(event)
        self._file.close()


def execute(layout: RunLayout, view: View, report: DatasetReport | None = None, resume: bool = False) -> RunRecord:
    """Launch the rendered run in `layout`, follow it to the end and record the outcome in run.json."""
    try:
        record = read_record(layout)
        if resume and record.status == "finished":
            raise RunError(
                f"resume: {layout.root} already finished all {record.epochs} epochs; start a new run to train longer"
            )
        cfg = run_config(layout)
        point = find_resume_point(layout, cfg.output_name) if resume else None
        if point is not None and point.epoch >= record.epochs:
            return _completed_before_interrupt(layout, record, cfg.output_name, view)
        plan = launch.plan_training(cfg, layout, record.script, point.state_dir if point else None)
    except BaseException:
        view.close()
        raise
    if resume and point is not None:
        view.note(f"resuming from {point.state_dir.name} (epoch {point.epoch}, step {point.step})")
    with layout.command.open("a", encoding="utf-8") as handle:
        handle.write(plan.command_text())
    record = update_record(
        layout,
        record,
        status="running",
        started=now_iso(),
        ended=None,
        exit_code=None,
        reason=None,
        attempts=record.attempts + 1,
        versions=versions(plan.cwd),
        dataset_hash=dataset_hash(report) if report else record.dataset_hash,
        resumed_from=str(point.state_dir) if point else record.resumed_from,
        trainer=ProcessRef.current().token(),
    )
    steps_per_epoch = record.total_steps // max(record.epochs, 1)
    offset = point.epoch * steps_per_epoch if point else 0
    sink = EventSink(layout, view, LogParser(record.script), offset, record.total_steps, cfg.run.stop_on_nan)

    def attach(child: launch.Child) -> None:
        sink.child = child

    try:
        result = launch.run(plan, layout.log, sink.text, on_start=attach, on_idle=sink.idle)
    finally:
        view.close()
    sink.close(result.exit_code)
    finished = sink.finished
    if finished is not None and finished.success and not sink.errors:
        # The final LoRA was saved: a Ctrl-C that came too late to stop anything changes nothing.
        status, reason = "finished", finished.reason
    elif result.interrupted:
        status, reason = "interrupted", "stopped by the user"
    else:
        status = "failed"
        reason = sink.errors[0].message if sink.errors else (finished.reason if finished else "no result")
    record = update_record(
        layout, record, status=status, ended=now_iso(), exit_code=result.exit_code, reason=reason, trainer=None
    )
    if status == "interrupted":
        raise TrainingInterrupted(
            f"interrupted: saved epochs and state are kept in {layout.output_dir}; "
            f"continue with `kohya-wrap train --resume {layout.root}`"
        )
    if status == "failed":
        lines = [f"training failed: {reason}"]
        if sink.errors:
            lines.append(f"fix: {sink.errors[0].hint}")
        relevant = sink.parser.last_relevant_lines(RELEVANT_LINES)
        if relevant:
            lines.append(f"last lines of {layout.log}:")
            lines += [f"  {line}" for line in relevant]
        raise TrainingFailed(*lines)
    return record


def _completed_before_interrupt(layout: RunLayout, record: RunRecord, name: str, view: View) -> RunRecord:
    """The stop came after the last epoch was saved: nothing is left to train (sd-scripts would refuse)."""
    view.close()
    final = layout.output_dir / f"{name}.safetensors"
    if not final.is_file():
        raise RunError(
            f"resume: {layout.root} saved the state of its last epoch but not {final.name}; "
            "start a new run to get the final LoRA"
        )
    view.note(f"nothing to resume: all {record.epochs} epochs were trained and {final.name} was saved")
    return update_record(
        layout, record, status="finished", reason="completed before the interrupt took effect", trainer=None
    )
