"""Turn sd-scripts' console output (prints, rich log records, tqdm redraws, tracebacks) into events."""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from kohya_wrap.train.events import (
    CheckpointSaved,
    EpochFinished,
    EpochStarted,
    Error,
    ErrorKind,
    Event,
    Phase,
    PhaseName,
    RunFinished,
    RunStarted,
    SampleSaved,
    StateSaved,
    Step,
    Validation,
    Warning,
)

# Complete escape sequences: OSC (rich's hyperlinks), CSI (colours, tqdm's cursor-up) and two-byte ones.
_ANSI: Final = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# An escape sequence cut off by the end of a chunk: held back until the rest of it arrives.
_ANSI_TAIL: Final = re.compile(r"\x1b(?:\][^\x07\x1b]*\x1b?|\[[0-?]*[ -/]*)?\Z")
_BREAK: Final = re.compile(r"\r\n|\r|\n")
# tqdm's `{desc}: {percentage}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]`, and the
# `{n}it [...]` form it draws when the total is unknown.
_BAR: Final = re.compile(
    r"(?:(?P<desc>[^|\[]*?): )? *(?:\d{1,3}%\|[^|]*\| *(?P<n>\d+)/(?P<total>\d+) |\d+it )"
    r"\[(?P<elapsed>[\d:]+)(?:<(?P<eta>[\d:]+|\?))?, *"
    r"(?P<rate>[\d.]+|\?)(?P<unit>s/it|it/s)(?P<postfix>[^\]]*)\]"
)
_NUMBER: Final = r"(nan|[-+]?inf|[-+]?\d+(?:\.\d*)?(?:e[-+]?\d+)?)"
_AVR_LOSS: Final = re.compile(r"avr_loss=" + _NUMBER)
# The bar of the validation pass at the end of an epoch (train_network.py); its postfix is the mean so far.
_EPOCH_VALIDATION_BAR: Final = "epoch validation steps"
_VALIDATION_LOSS: Final = re.compile(r"val_epoch_avg_loss=" + _NUMBER)
# rich's RichHandler line: time (blank when repeated), level, message column, `file.py:line` column.
_HEADER: Final = re.compile(
    r" *(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d )? *(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) +"
    r"(?P<message>.*?)(?P<gap> +)(?P<path>[\w.-]+:\d+) *"
)
# Where rich's message column starts: 19 columns of time, a space, 8 of level, a space.
_RECORD_INDENT: Final = 29

_IMAGES: Final = re.compile(r"num train images \* repeats / .*?: (\d+)")
_BATCHES: Final = re.compile(r"num batches per epoch / .*?: (\d+)")
_EPOCHS: Final = re.compile(r"num epochs / .*?: (\d+)")
_ACCUMULATION: Final = re.compile(r"gradient accumulation steps / .*? = (\d+)")
_TOTAL_STEPS: Final = re.compile(r"total optimization steps / .*?: (\d+)")
_EPOCH: Final = re.compile(r"epoch (\d+)/(\d+)")
_CHECKPOINT: Final = re.compile(r"saving checkpoint: (.+)")
_STEP_FILE: Final = re.compile(r"-step(\d{8})\.\w+$")
_EPOCH_FILE: Final = re.compile(r"-(\d{6})\.\w+$")
_STATE: Final = re.compile(r"save train state to (.+)[\\/]train_state\.json at epoch (\d+) step (\d+)")
_SAMPLING: Final = re.compile(r"generating sample images at step / .*?(\d+)")
_LOAD_MODEL: Final = re.compile(
    r"load (?:StableDiffusion checkpoint|Diffusers pretrained models): (.+?)(?:, variant=\S*)?"
    r"|Loading state dict from (.+)"
)
_MODEL_FILE: Final = re.compile(r".+\.(?:safetensors|ckpt|pt|pth|bin|sft)")
_NETWORK_MODULE: Final = re.compile(r"import network module: (.+)")
_CACHING: Final[dict[str, PhaseName]] = {
    "caching latents...": "caching_latents",
    "caching Text Encoder outputs...": "caching_text_encoder_outputs",
}
_ARGPARSE_ERROR: Final = re.compile(r"[\w.-]+\.py: error: .+")
_CONFIG_NOT_FOUND: Final = re.compile(r".+\.toml not found\.")
# Logged on nearly every run (few LoRA datasets have regularization images): showing it teaches users
# to ignore warnings.
_NOISE_WARNINGS: Final = ("no regularization images",)

_TRACEBACK: Final = "Traceback (most recent call last):"
_CHAINED: Final = frozenset(
    {
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    }
)
_EXCEPTION: Final = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?:: ?(?P<message>.*))?")
# `accelerate launch` re-raises the child's failure as its own traceback (CalledProcessError), and
# prints one of its own on Ctrl-C; neither says what went wrong in training.
_LAUNCHER_FRAME: Final = re.compile(r"accelerate[\\/]commands[\\/]")
# Negative exit codes are signals (subprocess), 128+N the shell's way of saying the same.
_INTERRUPT_EXIT_CODES: Final = frozenset({-2, 130, -15, 143})
# sd-scripts' own checks read "English / 日本語".
_BILINGUAL: Final = re.compile(r" / .*[\u3040-\u30ff\u4e00-\u9fff]")
_MISSING_MODULE: Final = re.compile(r"No module named '(\w+)|^No (\w+) /")
# sd-scripts' names for optional packages → what pip calls them.
_PIP_NAMES: Final = {
    "bitsandbytes": "bitsandbytes",
    "dadaptation": "dadaptation",
    "lion_pytorch": "lion-pytorch",
    "prodigy": "prodigyopt",
    "prodigyopt": "prodigyopt",
    "schedulefree": "schedulefree",
    "wandb": "wandb",
    "xformers": "xformers",
}

HINTS: Final[dict[ErrorKind, str]] = {
    "oom": (
        "Set training.gradient_checkpointing = true, lower training.batch_size, "
        'use optimizer.type = "AdamW8bit" or set training.cache_latents = true.'
    ),
    "nan": 'Use training.mixed_precision = "bf16" (fp16 overflows) or a lower optimizer.learning_rate.',
    "missing_file": (
        "Check that model.base and every other path in the config exist (or that the hub repo id is right)."
    ),
    "import": "Install the missing package into the Python that runs sd-scripts.",
    "config": "Change the setting the message names: sd-scripts refuses it.",
    "no_data": (
        "Point dataset.dirs at folders that hold the images themselves (plain or `<repeats>_<name>`), "
        "as .png, .jpg, .jpeg, .webp or .bmp files."
    ),
    "unknown": "Read the last lines of the log (above the error) for the cause.",
}
_WARMUP_HINT: Final = (
    "This scheduler takes no warmup: set optimizer.warmup_percent = 0 "
    'or use optimizer.scheduler = "constant_with_warmup".'
)
# torch's CPU layer_norm refuses bf16/fp16 input with float32 weights, which sd-scripts' SD1.5 text encoder
# gives it under mixed precision; GPUs have no such limit.
_CPU_PRECISION_HINT: Final = (
    'Mixed precision does not run on a CPU: set training.mixed_precision = "no" (full precision), '
    "or train on a CUDA GPU."
)
_HISTORY_LINES: Final = 200


@dataclass
class _Record:
    """A rich log record being reassembled from its wrapped lines."""

    level: str
    path_width: int
    text: str
    # The last piece ended where rich cut a word too long for the column, so the next piece goes on
    # without a space. rich cuts such words at exactly the column width, so the piece is followed by
    # only the one-space gutter and the blank path column.
    folded: bool

    def add(self, line: str) -> None:
        body = line[_RECORD_INDENT:]
        piece = body.strip()
        if not piece:
            self.folded = False
            return
        self.text += piece if self.folded else " " + piece
        padding = len(body) - len(body.rstrip())
        self.folded = " " not in piece and 0 < padding <= self.path_width + 1


@dataclass
class _Raised:
    """One exception of a traceback: where it was raised and what it said."""

    type: str
    message: list[str]
    frame: list[str]

    def lines(self) -> list[str]:
        first = f"{self.type}: {self.message[0]}" if self.message[0] else self.type
        return [first, *self.message[1:]]


@dataclass
class _Traceback:
    """A Python traceback being read, with the exceptions chained to it."""

    state: Literal["frames", "message", "after", "chained"] = "frames"
    frames: list[str] = field(default_factory=list)
    chain: list[_Raised] = field(default_factory=list)
    launcher: bool = False


def _seconds(clock: str | None) -> float | None:
    """tqdm's `MM:SS` or `H:MM:SS` in seconds; None for its `?`."""
    if clock is None or not clock[:1].isdigit():
        return None
    total = 0
    for part in clock.split(":"):
        total = total * 60 + int(part)
    return float(total)


def _classify(raised: _Raised) -> tuple[ErrorKind, str] | None:
    name = raised.type.rsplit(".", 1)[-1]
    message = "\n".join(raised.message)
    lowered = message.lower()
    if name == "OutOfMemoryError" or "out of memory" in lowered:
        return "oom", HINTS["oom"]
    if name in ("ImportError", "ModuleNotFoundError"):
        module = _MISSING_MODULE.search(message)
        if module is None:
            return "import", HINTS["import"]
        package = _PIP_NAMES.get((module[1] or module[2]).lower(), module[1] or module[2])
        return "import", f"Run `python -m pip install {package}` with the Python that runs sd-scripts."
    if name == "FileNotFoundError" or any(
        words in lowered
        for words in ("neither a valid local path nor a valid repo id", "file not found", "no such file")
    ):
        return "missing_file", HINTS["missing_file"]
    if "does not require `num_warmup_steps`" in message:
        return "config", _WARMUP_HINT
    if "mixed dtype (cpu)" in lowered or "mixed precision requires a gpu" in lowered:
        return "config", _CPU_PRECISION_HINT
    if name in ("MultipleInvalid", "Invalid") or (
        name in ("AssertionError", "ValueError") and (_BILINGUAL.search(message) or "`num_" in message)
    ):
        return "config", HINTS["config"]
    return None


class LogParser:
    """Feed it sd-scripts' merged stdout+stderr in chunks of any size; it returns the events they complete.

    Pure and deterministic: the same text gives the same events however it is chunked. A log record
    is only known to be complete when the next line starts, so call `idle()` when the child has been
    quiet for a moment, and `finish()` once it has exited.
    """

    def __init__(self, script: str | None = None) -> None:
        self._script = script
        self._escape = ""  # an incomplete escape sequence from the end of the last chunk
        self._partial = ""  # text after the last line break, ANSI-free
        self._after_bar = False  # `_partial` starts right after a bar that was already parsed
        self._record: _Record | None = None
        self._traceback: _Traceback | None = None
        self._history: deque[str] = deque(maxlen=_HISTORY_LINES)
        self._relevant: list[str] | None = None  # the history when the child's last traceback ended
        # Saved files are reported once the next thing happens, so a crash while writing them
        # (shown by a traceback) does not report a file that was never finished.
        self._pending: Event | None = None
        self._plan: dict[str, int] = {}
        self._total_steps: int | None = None
        self._epochs: int | None = None
        self._open_epoch: int | None = None
        self._model_file: str | None = None
        self._last_phase: tuple[str, str] | None = None
        self._last_step: tuple[int, int, str | None] | None = None
        self._sampling_step: int | None = None
        # The epoch's validation mean, held until the bar is known to be finished (see `_validation_bar`).
        self._validation: float | None = None
        self._validation_n: int | None = None  # the count the epoch's validation bar showed last
        self._validated_epoch: int | None = None
        self._sample_index = 0
        self._warned: set[str] = set()
        self._errors: list[ErrorKind] = []
        self._nan = False
        self._interrupted = False
        self._model_saved = False
        self._launcher_failure: str | None = None

    def last_relevant_lines(self, n: int = 15) -> list[str]:
        """The lines that most likely explain a failure, oldest first, at most `n` of them.

        After a traceback in the training script: what it logged before, where the exception was
        raised and the exception itself, without accelerate's CalledProcessError that follows.
        Otherwise the last lines of the log. Progress bars and traceback frames are left out.
        """
        lines = self._relevant if self._relevant is not None else list(self._history)
        return lines[-n:] if n > 0 else []

    def feed(self, chunk: str) -> list[Event]:
        """Parse the next piece of output and return the events it completes."""
        events: list[Event] = []
        text = self._escape + chunk
        tail = _ANSI_TAIL.search(text)
        self._escape = text[tail.start() :] if tail else ""
        text = self._partial + _ANSI.sub("", text[: tail.start()] if tail else text)
        start = 0
        for brk in _BREAK.finditer(text):
            if brk.end() == len(text) and brk.group() == "\r":
                break  # the \r of a \r\n whose \n is still to come
            self._line(text[start : brk.start()], events)
            start = brk.end()
        self._partial = text[start:]
        # tqdm ends a redraw with nothing (the next one starts with \r): parse a complete bar now,
        # not when the next redraw arrives a whole step later.
        bar = _BAR.match(self._partial)
        while bar is not None:
            self._end_record(events)
            self._bar(bar, events)
            self._partial = self._partial[bar.end() :]
            self._after_bar = True
            bar = _BAR.match(self._partial)
        return events

    def idle(self) -> list[Event]:
        """The child has been quiet for a while: treat the log record it printed last as complete."""
        events: list[Event] = []
        self._end_record(events)
        return events

    def finish(self, exit_code: int | None) -> list[Event]:
        """The child exited with `exit_code` (None if unknown): flush, judge the run, end with RunFinished."""
        events: list[Event] = []
        if self._partial:
            self._line(self._partial.rstrip("\r"), events)
        self._partial = self._escape = ""
        self._end_record(events)
        self._end_validation(events)
        if self._traceback is not None:
            self._end_traceback(events)
        exited_badly = exit_code not in (None, 0)
        if exit_code in _INTERRUPT_EXIT_CODES:
            self._interrupted = True
        if self._pending is not None and not exited_badly:
            events.append(self._pending)
        self._pending = None
        # An error that came first (a NaN, say, on which the runner stops the child) is the reason.
        reason: str
        if self._errors:
            reason = self._errors[0]
        elif self._interrupted:
            reason = "interrupted"
        elif exited_badly or not self._model_saved:
            message = (
                self._launcher_failure or f"sd-scripts exited with code {exit_code}"
                if exited_badly
                else "sd-scripts ended without saving the final model"
            )
            self._error("unknown", message, HINTS["unknown"], events)
            reason = "unknown"
        else:
            reason = "completed"
        events.append(RunFinished(exit_code=exit_code, success=reason == "completed", reason=reason))
        return events

    # -- lines ---------------------------------------------------------------------------------

    def _line(self, line: str, events: list[Event]) -> None:
        if self._after_bar:
            self._after_bar = False
            if not line:
                return  # the line break that ended a bar parsed early
        if self._record is not None and line.startswith(" " * _RECORD_INDENT):
            self._record.add(line)
            return
        self._end_record(events)
        bar = _BAR.match(line) if "it" in line else None
        if bar is not None:
            self._bar(bar, events)
            # tqdm draws no line break before what comes next, e.g. a log record.
            if rest := line[bar.end() :]:
                self._line(rest, events)
            return
        header = _HEADER.fullmatch(line)
        if header is not None:
            self._end_traceback_by_other_output(events)
            message = header["message"]
            self._record = _Record(
                level=header["level"],
                path_width=len(header["path"]),
                text=message,
                folded=bool(message) and " " not in message and len(header["gap"]) == 1,
            )
            return
        if not self._traceback_line(line.rstrip(), events) and (text := line.strip()):
            self._message(text, None, events)

    def _end_record(self, events: list[Event]) -> None:
        record, self._record = self._record, None
        if record is not None and (text := record.text.strip()):
            self._message(text, record.level, events)

    def _bar(self, bar: re.Match[str], events: list[Event]) -> None:
        self._end_traceback_by_other_output(events)
        if bar["desc"] == _EPOCH_VALIDATION_BAR and bar["n"] is not None:
            self._validation_bar(int(bar["n"]), int(bar["total"]), bar["postfix"], events)
            return
        self._end_validation(events)
        if bar["desc"] != "steps" or bar["n"] is None:
            return  # caching, loading and sampling bars: their phases are reported from the log
        step, total = int(bar["n"]), int(bar["total"])
        loss_text = loss.group(1) if (loss := _AVR_LOSS.search(bar["postfix"])) else None
        if step == 0 or (step, total, loss_text) == self._last_step:
            return
        self._last_step = (step, total, loss_text)
        rate = None if bar["rate"] == "?" else float(bar["rate"])
        if rate is not None and bar["unit"] == "s/it":
            rate = 1 / rate if rate > 0 else None
        value = None if loss_text is None else float(loss_text)
        elapsed = _seconds(bar["elapsed"])
        self._emit(
            Step(
                step=step,
                total=total,
                loss=value,
                rate=rate,
                eta_s=_seconds(bar["eta"]),
                elapsed_s=0.0 if elapsed is None else elapsed,
            ),
            events,
        )
        if value is not None and math.isnan(value) and not self._nan:
            self._nan = True
            self._error("nan", f"The average loss became NaN at step {step}/{total}.", HINTS["nan"], events)

    def _validation_bar(self, n: int, total: int, postfix: str, events: list[Event]) -> None:
        """One redraw of the validation bar; its mean is reported once other output follows the last one.

        At the last count tqdm draws twice: after the update (still with the previous mean) and after
        the new mean is set, so the value is taken from the last redraw before other output. A bar is
        closed, and drawn once more, when the next epoch's bar replaces it and when training ends:
        such a redraw jumps to the last count from the start of another bar, so a full count counts
        only where the count before it was one short or already full.
        """
        epoch = self._open_epoch
        if epoch is None or epoch == self._validated_epoch:
            return
        self._phase("validating", f"epoch {epoch}", events)
        previous, self._validation_n = self._validation_n, n
        loss = _VALIDATION_LOSS.search(postfix)
        if n < total or loss is None or previous is None or previous < total - 1:
            self._validation = None
            return
        self._validation = float(loss[1])

    def _end_validation(self, events: list[Event]) -> None:
        loss, self._validation = self._validation, None
        if loss is None or self._open_epoch is None:
            return
        self._validated_epoch = self._open_epoch
        step = self._last_step[0] if self._last_step is not None else None
        self._emit(Validation(epoch=self._open_epoch, step=step, loss=loss), events)

    # -- tracebacks ----------------------------------------------------------------------------

    def _traceback_line(self, line: str, events: list[Event]) -> bool:
        """Read `line` as part of a traceback if it is one; False if it is ordinary output."""
        tb = self._traceback
        if tb is None:
            if line != _TRACEBACK:
                return False
            self._pending = None  # the crash may have cut short the file being written
            self._traceback = _Traceback()
            return True
        if tb.state == "frames":
            if line.startswith(" "):
                tb.frames.append(line)
                tb.launcher = tb.launcher or bool(_LAUNCHER_FRAME.search(line))
                return True
            exception = _EXCEPTION.fullmatch(line)
            if exception is None:
                self._traceback = None  # not a traceback after all
                return False
            tb.chain.append(_Raised(exception["type"], [exception["message"] or ""], self._raised_at(tb)))
            tb.state = "message"
            return True
        if tb.state == "message":
            if line and line != _TRACEBACK and line not in _CHAINED:
                tb.chain[-1].message.append(line)
                return True
            tb.state = "after"
        if not line:
            return True
        if line in _CHAINED:
            tb.state = "chained"
            return True
        if line == _TRACEBACK and tb.state == "chained":
            tb.state, tb.frames = "frames", []
            return True
        self._end_traceback(events)
        return self._traceback_line(line, events)

    @staticmethod
    def _raised_at(tb: _Traceback) -> list[str]:
        """The innermost frame's `File …` line and source line, without the ^^^ markers."""
        starts = [i for i, line in enumerate(tb.frames) if line.lstrip().startswith("File ")]
        frame = tb.frames[starts[-1] :] if starts else []
        return [line for line in frame if line.strip(" ^~")][:2]

    def _end_traceback_by_other_output(self, events: list[Event]) -> None:
        # A record or bar after the exception's message means the traceback is over; one in the
        # middle of the frames comes from another process and is not a reason to stop reading.
        if self._traceback is not None and self._traceback.state != "frames":
            self._end_traceback(events)

    def _end_traceback(self, events: list[Event]) -> None:
        tb, self._traceback = self._traceback, None
        if tb is None or not tb.chain:
            return
        last = tb.chain[-1]
        interrupted = last.type.rsplit(".", 1)[-1] == "KeyboardInterrupt"
        self._interrupted = self._interrupted or interrupted
        if tb.launcher:
            if last.type.endswith("CalledProcessError"):
                self._launcher_failure = "\n".join(last.lines())
            return
        for raised in tb.chain:
            self._history.extend(raised.frame)
            self._history.extend(raised.lines())
        self._relevant = list(self._history)
        if interrupted:
            return
        kind, hint = next(
            (found for raised in reversed(tb.chain) if (found := _classify(raised)) is not None),
            ("unknown", HINTS["unknown"]),
        )
        self._error(kind, "\n".join(last.lines()), hint, events)

    # -- messages (log records and prints alike) -----------------------------------------------

    def _message(self, text: str, level: str | None, events: list[Event]) -> None:
        self._end_validation(events)
        self._history.append(text)
        if match := _CHECKPOINT.fullmatch(text):
            self._checkpoint(match[1], events)
        elif match := _EPOCH.fullmatch(text):
            self._close_epoch(events)
            self._open_epoch, self._epochs = int(match[1]), int(match[2])
            self._validation_n = None
            self._emit(EpochStarted(epoch=self._open_epoch, total=self._epochs), events)
        elif match := _STATE.fullmatch(text):
            self._defer(StateSaved(path=match[1], epoch=int(match[2]), step=int(match[3])), events)
        elif match := _SAMPLING.fullmatch(text):
            self._sampling_step, self._sample_index = int(match[1]), 0
            self._phase("sampling", f"step {self._sampling_step}", events)
        elif text.startswith("prompt: ") and self._sampling_step is not None:
            step = self._sampling_step
            self._defer(
                SampleSaved(path=None, epoch=self._epoch_of(step), step=step, index=self._sample_index),
                events,
            )
            self._sample_index += 1
        elif text in ("saving last state.", "model saved."):
            self._close_epoch(events)
            self._model_saved = self._model_saved or text == "model saved."
        elif match := _TOTAL_STEPS.fullmatch(text):
            self._run_started(int(match[1]), events)
        elif text in _CACHING:
            self._phase(_CACHING[text], "", events)
        elif match := _LOAD_MODEL.fullmatch(text):
            path = match[1] or match[2]
            if self._model_file is None and _MODEL_FILE.fullmatch(path):
                self._model_file = path
            self._phase("loading_model", path, events)
        elif match := _NETWORK_MODULE.fullmatch(text):
            self._phase("preparing_network", match[1], events)
        elif text.startswith("No data found"):
            self._error("no_data", text, HINTS["no_data"], events)
        elif _ARGPARSE_ERROR.fullmatch(text) or _CONFIG_NOT_FOUND.fullmatch(text):
            kind: ErrorKind = "config" if _ARGPARSE_ERROR.fullmatch(text) else "missing_file"
            self._error(kind, text, HINTS[kind], events)
        else:
            self._plan_line(text)
            if level in ("WARNING", "ERROR", "CRITICAL") and text not in self._warned:
                self._warned.add(text)
                if not text.startswith(_NOISE_WARNINGS):
                    self._emit(Warning(message=text), events)

    def _plan_line(self, text: str) -> None:
        for key, pattern in (
            ("images", _IMAGES),
            ("batches", _BATCHES),
            ("epochs", _EPOCHS),
            ("accumulation", _ACCUMULATION),
        ):
            if match := pattern.fullmatch(text):
                self._plan[key] = int(match[1])

    def _run_started(self, total_steps: int, events: list[Event]) -> None:
        self._total_steps = total_steps
        self._epochs = self._plan.get("epochs", self._epochs)
        self._emit(
            RunStarted(
                script=self._script,
                total_steps=total_steps,
                epochs=self._epochs,
                batches_per_epoch=self._plan.get("batches"),
                images=self._plan.get("images"),
            ),
            events,
        )
        if self._model_file is not None:
            # Next, sd-scripts reads the whole base model file to hash it for the LoRA's metadata.
            self._phase("hashing_model", self._model_file, events)

    def _steps_per_epoch(self) -> int | None:
        batches = self._plan.get("batches")
        return None if batches is None else math.ceil(batches / self._plan.get("accumulation", 1))

    def _epoch_of(self, step: int) -> int | None:
        """The epoch that global step `step` belongs to (0 before training)."""
        steps_per_epoch = self._steps_per_epoch()
        return self._open_epoch if steps_per_epoch is None else math.ceil(step / steps_per_epoch)

    def _checkpoint(self, path: str, events: list[Event]) -> None:
        if match := _STEP_FILE.search(path):
            step = int(match[1])
            saved = CheckpointSaved(path=path, epoch=self._epoch_of(step), step=step, final=False)
        elif match := _EPOCH_FILE.search(path):
            epoch = int(match[1])
            steps_per_epoch = self._steps_per_epoch()
            step = None
            if steps_per_epoch is not None and self._total_steps is not None:
                step = min(epoch * steps_per_epoch, self._total_steps)
            saved = CheckpointSaved(path=path, epoch=epoch, step=step, final=False)
        else:
            # sd-scripts writes no numbered file for the last epoch: the final file is that epoch's.
            self._close_epoch(events)
            saved = CheckpointSaved(path=path, epoch=self._epochs, step=self._total_steps, final=True)
        self._emit(saved, events)

    # -- emitting ------------------------------------------------------------------------------

    def _phase(self, name: PhaseName, detail: str, events: list[Event]) -> None:
        if self._last_phase != (name, detail):
            self._last_phase = (name, detail)
            self._emit(Phase(name=name, detail=detail), events)

    def _close_epoch(self, events: list[Event]) -> None:
        if self._open_epoch is not None and self._epochs is not None:
            self._emit(EpochFinished(epoch=self._open_epoch, total=self._epochs), events)
        self._open_epoch = None

    def _error(self, kind: ErrorKind, message: str, hint: str, events: list[Event]) -> None:
        self._errors.append(kind)
        self._emit(Error(kind=kind, message=message, hint=hint), events)

    def _defer(self, event: Event, events: list[Event]) -> None:
        self._flush(events)
        self._pending = event

    def _flush(self, events: list[Event]) -> None:
        if self._pending is not None:
            events.append(self._pending)
            self._pending = None

    def _emit(self, event: Event, events: list[Event]) -> None:
        # A warning may be logged while a file is still being written; anything else means it is done.
        if not isinstance(event, Warning):
            self._flush(events)
        events.append(event)
