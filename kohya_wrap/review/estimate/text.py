"""The estimate in words: durations, the lines `validate`, `train` and `estimate` print, and the warnings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kohya_wrap.review.estimate.model import TIGHT_SHARE, Estimate

if TYPE_CHECKING:
    from kohya_wrap.config.models import Config
    from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.review.gpu_classes import CLASS_GB, GpuClass


def duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 20 min', '2.5 d'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        hours, rest = divmod(round(minutes), 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{minutes / 1440:.1f} d"


def per_step(seconds: float) -> str:
    """'0.25 s', '7.8 s', '12 s', '4 min'."""
    return f"{seconds:.2g} s" if seconds < 90 else duration(seconds)


def smallest_fitting_class(total_gb: float) -> GpuClass | None:
    return next((c for c, gb in CLASS_GB.items() if total_gb <= TIGHT_SHARE * gb), None)


def plan_lines(cfg: Config, plan: StepPlan) -> list[str]:
    """What a run will train, as `validate` and `train` show it before the estimate's lines."""
    reg = f" + {plan.reg_images_with_repeats} regularisation" if plan.reg_images_with_repeats else ""
    processes = f" (over {plan.num_processes} processes)" if plan.num_processes > 1 else ""
    lines = [
        f"{cfg.model.family} LoRA '{cfg.output_name}', {count(plan.images, 'image')} × repeats = "
        f"{plan.images_with_repeats}{reg}, batch {plan.batch_size}, {plan.epochs} epochs",
        f"steps: {plan.batches_per_epoch} per epoch × {plan.epochs} epochs = {plan.total_steps}{processes}",
    ]
    if plan.validation_images:
        every = cfg.validation.every_n_epochs
        lines.append(
            f"validation: {count(plan.validation_images, 'image')} held out, their loss measured "
            + ("after every epoch" if every == 1 else f"every {every} epochs")
        )
    return lines


def describe(est: Estimate) -> list[str]:
    """The estimate as lines for `validate` and `train` (warnings come from `warnings`)."""
    lines = []
    hw = est.hardware
    if est.time is not None:
        where = f" on {hw.name}" if hw is not None and not est.time.source.startswith("measured") else ""
        lines.append(
            f"time: ≈ {duration(est.time.seconds)}{where} ({per_step(est.time.step_seconds)}/step; {est.time.source})"
        )
    else:
        by_class = " · ".join(
            f"{'CPU' if c == 'cpu' else f'{CLASS_GB[c]:.0f} GB'} {duration(s)}" for c, s in est.time_by_class.items()
        )
        lines.append(f"time (rough public figures by GPU memory): {by_class}")
    v = est.vram
    parts = (
        f"base model {v.weights_gb:.1f}, LoRA + optimizer {v.lora_gb:.1f}, "
        f"activations {v.activations_gb:.1f}, "
        f"overhead {v.overhead_gb:.1f}"
    )
    if hw is not None and hw.gpu_class == "cpu":
        lines.append(f"vram: training on the CPU (a GPU would need ≈ {v.total_gb:.1f} GB: {parts})")
    elif v.free_gb is not None:
        verdict = {"fits": "fits", "tight": "tight", "too_big": "does NOT fit"}[v.verdict]
        lines.append(f"vram: ≈ {v.total_gb:.1f} GB peak of {v.free_gb:.1f} GB free: {verdict} ({parts})")
    else:
        smallest = smallest_fitting_class(v.total_gb)
        fits = f"fits GPUs with {CLASS_GB[smallest]:.0f} GB or more" if smallest else "fits no single GPU class"
        lines.append(f"vram: ≈ {v.total_gb:.1f} GB peak, {fits} ({parts})")
    lines.append(f"cost: {est.cost} (images × repeats × epochs, as SeaArt counts it)")
    return lines


def warnings(est: Estimate) -> list[str]:
    """What to tell the user before launch: the run will not fit, or only just."""
    v = est.vram
    if v.verdict not in ("too_big", "tight") or v.free_gb is None:
        return []
    if v.verdict == "tight":
        head = (
            f"vram: ≈ {v.total_gb:.1f} GB of {v.free_gb:.1f} GB free is tight; other programs on the GPU can "
            "push it over"
        )
    else:
        head = (
            f"vram: ≈ {v.total_gb:.1f} GB needed but {v.free_gb:.1f} GB free: on Windows the driver spills "
            "into shared system memory and steps get 10–100× slower without an error; on Linux it stops "
            "with CUDA out of memory"
        )
    if not v.fixes:
        return [head]
    fixes = "; then ".join(f"{f.setting} (≈ {f.total_gb:.1f} GB: {f.why})" for f in v.fixes)
    tail = "" if v.fixes[-1].total_gb <= TIGHT_SHARE * v.free_gb else "; still too big: lower dataset.resolution"
    return [f"{head}. Cheapest fix first: {fixes}{tail}"]


def count(n: int, noun: str) -> str:
    """`1 image`, `2 images`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"
