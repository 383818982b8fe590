"""Launch sd-scripts through accelerate as a child process group; stream, tee and stop it safely."""

from __future__ import annotations

import codecs
import contextlib
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from kohya_wrap.config.models import Config
from kohya_wrap.errors import SdScriptsError
from kohya_wrap.train.layout import RunLayout

# Seconds between the escalation steps SIGINT → SIGTERM → SIGKILL. sd-scripts needs a moment after
# SIGINT to unwind its dataloader and CUDA context; anything longer means it is stuck.
GRACE_SECONDS = 15.0


def default_sd_scripts_dir() -> Path:
    """$KOHYA_WRAP_SD_SCRIPTS, else the submodule beside the package (vendor/sd-scripts)."""
    env = os.environ.get("KOHYA_WRAP_SD_SCRIPTS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "vendor" / "sd-scripts"


def sd_scripts_dir(cfg: Config) -> Path:
    return Path(cfg.run.sd_scripts_dir).expanduser() if cfg.run.sd_scripts_dir else default_sd_scripts_dir()


def sd_python(cfg: Config | None) -> str:
    """The interpreter that runs sd-scripts: run.python, else this one."""
    return (cfg.run.python if cfg is not None else None) or sys.executable


def first_gpu(cfg: Config) -> int | None:
    """The GPU a single-GPU job (preview, the memory check) uses: the first of run.gpu_ids; None for "all"."""
    ids = cfg.run.gpu_ids
    return ids[0] if isinstance(ids, list) and ids else None


def git_head(path: Path) -> str | None:
    """The commit a git checkout (sd-scripts) is at, or None when it is not one or git is missing."""
    try:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@dataclass(frozen=True)
class LaunchPlan:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)  # added to (or replacing in) os.environ

    def command_text(self) -> str:
        """The command, shell-quoted, for copy-paste (with the variables we set)."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()))
        return f"cd {shlex.quote(str(self.cwd))} && {env} {shlex.join(self.argv)}\n"


def child_env() -> dict[str, str]:
    return {
        "PYTHONUNBUFFERED": "1",
        "PYTHONIOENCODING": "utf-8",
        # Rich wraps log records at 80 columns without a TTY; wide columns keep paths on one line.
        "COLUMNS": "400",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def require_script(cfg: Config, script: str) -> Path:
    """The sd-scripts checkout that has `script`, or one clear error before anything is written."""
    root = sd_scripts_dir(cfg)
    if not (root / script).is_file():
        where = "run.sd_scripts_dir" if cfg.run.sd_scripts_dir else "sd-scripts"
        raise SdScriptsError(
            f"{where}: no {script} in {root}; run `make setup` (it fetches the vendor/sd-scripts "
            "submodule) or set run.sd_scripts_dir to an sd-scripts checkout"
        )
    return root


def plan_training(cfg: Config, layout: RunLayout, script: str, resume_state: Path | None = None) -> LaunchPlan:
    """The exact argv that trains this run: accelerate launch <script> with our rendered files."""
    root = require_script(cfg, script)
    python = sd_python(cfg)
    argv = [
        python,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(layout.accelerate),
        "--num_cpu_threads_per_process",
        str(cfg.run.cpu_threads_per_process),
        script,
        "--config_file",
        str(layout.train_toml),
        "--dataset_config",
        str(layout.dataset_toml),
    ]
    if resume_state is not None:
        argv += ["--resume", str(resume_state)]
    return LaunchPlan(tuple(argv), root.resolve(), child_env())


@dataclass(frozen=True)
class LaunchResult:
    exit_code: int
    interrupted: bool  # the user (Ctrl-C / SIGTERM) stopped it
    stopped: str | None  # why we stopped it ourselves (e.g. NaN loss), if we did
    seconds: float


class Child:
    """A running training process group; `stop()` escalates SIGINT → SIGTERM → SIGKILL."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stop_reason: str | None = None
        self.interrupted = False
        self._signals_sent = 0
        self._next_signal_at: float | None = None

    def stop(self, reason: str | None = None) -> None:
        if reason and self.stop_reason is None and not self.interrupted:
            self.stop_reason = reason
        if self._next_signal_at is None:
            self._escalate()

    def _escalate(self) -> None:
        sig = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)[min(self._signals_sent, 2)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self._signals_sent += 1
        self._next_signal_at = time.monotonic() + GRACE_SECONDS

    def tick(self) -> None:
        if self._next_signal_at is not None and time.monotonic() >= self._next_signal_at and self.proc.poll() is None:
            self._escalate()


def run(
    plan: LaunchPlan,
    log_path: Path,
    on_text: Callable[[str], None],
    on_start: Callable[[Child], None] | None = None,
    on_idle: Callable[[], None] | None = None,
) -> LaunchResult:
    """Run the plan in its own process group; every byte goes to `log_path` (appended) and `on_text`.

    Ctrl-C and SIGTERM reach us, not the child directly: we forward SIGINT to the whole group and
    escalate if it does not end, so no orphaned worker keeps the GPU.
    """
    env = {**os.environ, **plan.env}
    started = time.monotonic()
    children: list[Child] = []
    interrupted_early = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal interrupted_early
        if not children:
            interrupted_early = True
            return
        children[0].interrupted = True
        children[0].stop()

    # Our handlers go in before the child starts: a process started with SIGINT ignored (e.g. from a
    # `nohup … &` script) would pass SIG_IGN on and the child would never stop; a caught signal is
    # reset to its default on exec, so sd-scripts gets its normal KeyboardInterrupt.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen(
            plan.argv,
            cwd=plan.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise SdScriptsError(f"run.python: cannot start {plan.argv[0]}: {exc.strerror}") from None
    child = Child(proc)
    children.append(child)
    if interrupted_early:
        child.interrupted = True
        child.stop()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        if on_start is not None:
            on_start(child)
        with open(log_path, "ab") as log, selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                child.tick()
                if not sel.select(timeout=0.5):
                    if on_idle is not None:
                        on_idle()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                on_text(decoder.decode(chunk))
            tail = decoder.decode(b"", final=True)
            if tail:
                on_text(tail)
        while proc.poll() is None:
            child.tick()
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    code = proc.returncode
    # A child killed by a signal reports -N; shells and users expect 128 + N.
    exit_code = 128 - code if code < 0 else code
    return LaunchResult(exit_code, child.interrupted, child.stop_reason, time.monotonic() - started)
