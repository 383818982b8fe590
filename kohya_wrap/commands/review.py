"""Review workflows (estimate, report, preview, TensorBoard) as plain functions: no click, no printing."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import LoadedConfig
from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.train.layout import RunLayout

if TYPE_CHECKING:
    from kohya_wrap.review.estimate import Estimate, Hardware
    from kohya_wrap.review.preview import PreviewOptions


@dataclass(frozen=True)
class ConfigEstimate:
    """A config's step plan and its time, VRAM and cost estimate; `hardware` is None when no GPU was found."""

    plan: StepPlan
    estimate: Estimate
    hardware: Hardware | None


def plan_estimate(cfg: Config, plan: StepPlan, read_gpu: bool = False) -> Estimate:
    """The estimate `validate` and `train` show, from earlier runs on this machine.

    Only `train` reads the GPU's free memory (nvidia-smi, well under a second); validate stays instant.
    """
    from kohya_wrap.review.estimate import estimate, measured_runs, query_nvidia_smi
    from kohya_wrap.train.layout import runs_dir

    hardware = query_nvidia_smi(gpu_index(cfg)) if read_gpu else None
    return estimate(cfg, plan, hardware, measured_runs(runs_dir(cfg)))


def estimate(
    loaded: LoadedConfig, gpu_class: str | None = None, free_vram: float | None = None, probe: bool = False
) -> ConfigEstimate:
    """Steps, time, peak VRAM (with the cheapest fixes) and SeaArt cost of a config.

    A GPU class or free memory given by the user replaces the GPU found here, and then earlier runs (which
    tell how fast this machine is) are not used; `probe` asks the sd-scripts interpreter's torch instead of
    nvidia-smi.
    """
    from kohya_wrap.commands.train import scan_dataset
    from kohya_wrap.review import estimate as est
    from kohya_wrap.train.layout import runs_dir

    _, plan = scan_dataset(loaded)
    cfg = loaded.config
    assumed = gpu_class is not None or free_vram is not None
    hardware: est.Hardware | None
    if assumed:
        hardware = est.assumed_hardware(gpu_class, free_vram)
    elif probe:
        from kohya_wrap.train.doctor import probe_config

        hardware = est.hardware_from_probe(probe_config(cfg))
    else:
        hardware = est.query_nvidia_smi(gpu_index(cfg))
    history = [] if assumed else est.measured_runs(runs_dir(cfg))
    return ConfigEstimate(plan, est.estimate(cfg, plan, hardware, history), hardware)


def gpu_index(cfg: Config) -> int:
    """The GPU index nvidia-smi is asked about: run.gpu_ids' first, GPU 0 for "all"."""
    from kohya_wrap.train.launch import first_gpu

    gpu = first_gpu(cfg)
    return 0 if gpu is None else gpu


def report(run_dir: Path) -> Path:
    """Write RUN_DIR's report (unfinished runs too); returns its index.html."""
    from kohya_wrap.review.report import write_report
    from kohya_wrap.train.runs import read_record

    layout = RunLayout(run_dir.resolve())
    read_record(layout)  # one clear line for a folder that is not a run
    return write_report(layout)


def preview(
    run_dir: Path,
    options: PreviewOptions,
    on_text: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> Path:
    """Render RUN_DIR's LoRA at the chosen epochs × weights with gen_img.py, refresh the report; returns
    report/preview.png. `on_text` receives gen_img.py's output as it comes, `note` what is being rendered."""
    from kohya_wrap.review.preview import run_preview

    return run_preview(run_dir, options, on_text, note)


@dataclass(frozen=True)
class TensorBoard:
    """The command that shows the runs' logs; `installed` says whether TensorBoard can start here."""

    argv: list[str]
    installed: bool


def tensorboard(run_dirs: Sequence[Path], port: int) -> TensorBoard:
    """TensorBoard over one or more runs' loss and learning-rate logs, each under its run's name."""
    from kohya_wrap.review.report import tensorboard_argv

    argv = tensorboard_argv([RunLayout(d.resolve()) for d in run_dirs], sys.executable, port)
    return TensorBoard(argv, importlib.util.find_spec("tensorboard") is not None)
