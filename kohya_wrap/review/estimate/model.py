"""The time and VRAM model: a run's steps, wall time, peak memory (with the cheapest fixes) and SeaArt cost."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from kohya_wrap.review.estimate.hardware import GIB, Hardware
from kohya_wrap.review.estimate.history import Measured, speed_key
from kohya_wrap.review.gpu_classes import CLASS_GB, GPU_CLASSES, GpuClass

if TYPE_CHECKING:
    from kohya_wrap.config.models import Config
    from kohya_wrap.data.dataset import StepPlan

# Every figure below is explained, with its source, in docs/estimate.md. GPU figures are rough public
# community figures (sd-scripts docs and kohya_ss / sd-scripts issue threads), not our measurements;
# the CPU figures were measured on this project's 2-core CI machines. Measured runs on the user's own
# machine replace the table whenever they exist (`measured_runs`).

# ---- time -----------------------------------------------------------------------------------------

# The square resolution the step table is for.
REFERENCE_RESOLUTION: Mapping[str, int] = {"sd15": 512, "sdxl": 1024, "flux": 1024}
# Seconds per step at the reference resolution, batch 1, fp16/bf16 mixed precision, no gradient
# checkpointing, latents cached, bf16 base weights (fp32 on the CPU).
STEP_SECONDS: Mapping[str, Mapping[GpuClass, float]] = {
    "sd15": {"cpu": 68.0, "8gb": 0.75, "12gb": 0.55, "16gb": 0.40, "24gb": 0.25, "48gb": 0.25, "80gb": 0.15},
    "sdxl": {"cpu": 270.0, "8gb": 2.6, "12gb": 2.2, "16gb": 1.6, "24gb": 1.0, "48gb": 1.0, "80gb": 0.5},
    "flux": {"cpu": 950.0, "8gb": 9.0, "12gb": 7.0, "16gb": 5.0, "24gb": 3.0, "48gb": 3.0, "80gb": 1.0},
}
# Python and sd-scripts imports, model load and hashing, network creation: seconds before the first step.
STARTUP_SECONDS: Mapping[str, Mapping[GpuClass, float]] = {
    "sd15": {"cpu": 30.0, **dict.fromkeys(CLASS_GB, 30.0)},
    "sdxl": {"cpu": 60.0, **dict.fromkeys(CLASS_GB, 60.0)},
    "flux": {"cpu": 180.0, **dict.fromkeys(CLASS_GB, 150.0)},
}
# VAE encoding while caching latents, seconds per image at the reference resolution.
CACHE_SECONDS_PER_IMAGE: Mapping[str, Mapping[GpuClass, float]] = {
    "sd15": {"cpu": 3.0, **dict.fromkeys(CLASS_GB, 0.05)},
    "sdxl": {"cpu": 12.0, **dict.fromkeys(CLASS_GB, 0.2)},
    "flux": {"cpu": 12.0, **dict.fromkeys(CLASS_GB, 0.2)},
}
# A sampling step (two forward passes for CFG, no backward) costs this share of a training step.
SAMPLE_STEP_SHARE = 0.7
SAMPLE_IMAGE_OVERHEAD_SECONDS = 0.5  # pipeline set-up and VAE decode per sample image
# Validation loss: each held-out batch goes forward once (no backward, no CFG) at each of sd-scripts' 4 fixed
# timesteps, after every N-th epoch; one forward pass is half a sampling step.
VALIDATION_TIMESTEPS = 4
VALIDATION_FORWARD_SHARE = SAMPLE_STEP_SHARE / 2
SAVE_SECONDS = 1.0  # one LoRA file plus its training state
# Multipliers for settings that differ from the table's reference.
PRECISION_FACTOR: Mapping[str, Mapping[str, float]] = {
    "gpu": {"no": 2.0, "fp16": 1.0, "bf16": 1.0},
    "cpu": {"no": 1.0, "fp16": 1.0, "bf16": 0.9},
}
BATCH_EXPONENT: Mapping[str, float] = {"gpu": 0.8, "cpu": 1.0}  # step time grows as batch ** exponent
GRADIENT_CHECKPOINTING_FACTOR = 1.3
UNCACHED_LATENTS_FACTOR = 1.15
FP8_FACTOR = 1.1
BLOCK_SWAP_FACTOR_PER_BLOCK = 0.02

# ---- VRAM -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelParts:
    """Parameter counts in billions."""

    unet: float  # the U-Net (SD1.5, SDXL) or the transformer (Flux)
    text_encoders: float  # CLIP text encoders
    t5: float  # Flux's T5-XXL (fp8_base stores it in fp8 too)
    vae: float


PARAMS: Mapping[str, ModelParts] = {
    "sd15": ModelParts(unet=0.860, text_encoders=0.123, t5=0.0, vae=0.084),
    "sdxl": ModelParts(unet=2.567, text_encoders=0.817, t5=0.0, vae=0.084),
    "flux": ModelParts(unet=11.90, text_encoders=0.123, t5=4.762, vae=0.084),
}
# LoRA parameters in millions per unit of rank: (U-Net or transformer, CLIP text encoders).
LORA_PARAMS_PER_RANK: Mapping[str, tuple[float, float]] = {
    "sd15": (0.41, 0.17),
    "sdxl": (2.6, 0.9),
    "flux": (5.2, 0.17),
}
# Optimizer state in bytes per trained parameter (besides its fp32 weight and gradient, 8 bytes).
OPTIMIZER_STATE_BYTES: Mapping[str, float] = {
    "AdamW": 8,
    "AdamW8bit": 2,
    "Lion": 4,
    "Adafactor": 1,
    "DAdaptation": 12,
    "DAdaptAdam": 12,
    "Prodigy": 16,
}
# Activation memory in GiB per image at the reference resolution in 16 bits: (plain, checkpointed).
ACTIVATIONS_GB: Mapping[str, tuple[float, float]] = {
    "sd15": (2.0, 0.6),
    "sdxl": (10.0, 2.0),
    "flux": (24.0, 2.5),
}
# VAE encoding of an image (only when latents are not cached), GiB per image at the reference resolution.
VAE_ENCODE_GB: Mapping[str, float] = {"sd15": 0.6, "sdxl": 2.4, "flux": 2.4}
CUDA_CONTEXT_GB = 0.7
ALLOCATOR_SHARE = 0.10  # PyTorch's caching allocator keeps about this much on top of what is live
# Flux block swap: sd-scripts moves n // 2 double blocks (~0.34 B params) and (n - n // 2) * 2 single
# blocks (~0.14 B) to the CPU, about 0.31 B parameters per swapped block.
SWAP_PARAMS_PER_BLOCK = 0.311
MAX_BLOCKS_TO_SWAP = 35
TIGHT_SHARE = 0.9  # above this share of free memory, allocation peaks and other programs push it over


# ---- the estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    step_seconds: float
    startup_seconds: float
    sampling_seconds: float
    source: str  # where the speed comes from, for the user
    validation_seconds: float = 0.0  # measuring validation loss on the held-out images


@dataclass(frozen=True)
class VramFix:
    setting: str  # `section.key = value`, as the user writes it
    why: str
    total_gb: float  # the estimated peak with this and every earlier fix applied


@dataclass(frozen=True)
class VramEstimate:
    weights_gb: float
    lora_gb: float  # LoRA weights, gradients and optimizer state
    activations_gb: float
    overhead_gb: float
    free_gb: float | None
    fixes: tuple[VramFix, ...]  # cheapest first, cumulative, up to the first that fits

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.lora_gb + self.activations_gb + self.overhead_gb

    @property
    def verdict(self) -> Literal["fits", "tight", "too_big", "unknown"]:
        if self.free_gb is None:
            return "unknown"
        if self.total_gb > self.free_gb:
            return "too_big"
        return "tight" if self.total_gb > TIGHT_SHARE * self.free_gb else "fits"


@dataclass(frozen=True)
class Estimate:
    steps: int
    cost: int  # SeaArt's measure: images × repeats × epochs
    sample_images: int
    hardware: Hardware | None
    time: TimeEstimate | None  # None when the hardware is unknown and no earlier run matches
    time_by_class: Mapping[GpuClass, float]  # table-only totals, for when the hardware is unknown
    vram: VramEstimate


@dataclass(frozen=True)
class Knobs:
    """The settings the VRAM model reads, so that a fix can change them without rebuilding a Config."""

    family: str
    resolution: int
    batch_size: int
    precision: str
    gradient_checkpointing: bool
    cache_latents: bool
    cache_text_encoders: bool
    fp8_base: bool
    optimizer: str
    dim: int
    train_unet: bool
    train_text_encoder: bool
    blocks_to_swap: int


def knobs(cfg: Config) -> Knobs:
    """The settings the time and VRAM model read, taken from a resolved config."""
    tr, net, res = cfg.training, cfg.network, cfg.dataset.resolution
    return Knobs(
        family=cfg.model.family,
        resolution=res,
        batch_size=tr.batch_size,
        precision=tr.mixed_precision,
        gradient_checkpointing=tr.gradient_checkpointing,
        cache_latents=tr.cache_latents,
        cache_text_encoders=tr.cache_text_encoder_outputs,
        fp8_base=tr.fp8_base,
        optimizer=cfg.optimizer.type,
        dim=net.dim,
        train_unet=not net.train_text_encoder_only,
        train_text_encoder=not net.train_unet_only,
        blocks_to_swap=cfg.flux.blocks_to_swap if cfg.flux is not None else 0,
    )


def _pixels(k: Knobs) -> float:
    return (k.resolution / REFERENCE_RESOLUTION[k.family]) ** 2


def vram_parts(k: Knobs) -> tuple[float, float, float, float]:
    """(weights, LoRA with gradients and optimizer state, activations, overhead) in GiB."""
    parts, width = PARAMS[k.family], 4 if k.precision == "no" else 2
    unet_width = 1 if k.fp8_base else width
    unet = max(parts.unet - k.blocks_to_swap * SWAP_PARAMS_PER_BLOCK, 0.0) * unet_width
    # sd-scripts moves cached text encoders and a caching VAE to the CPU once they are done.
    clip = 0.0 if k.cache_text_encoders and not k.train_text_encoder else parts.text_encoders * width
    t5 = 0.0 if k.cache_text_encoders else parts.t5 * (1 if k.fp8_base else width)
    vae = 0.0 if k.cache_latents else parts.vae * width
    weights = (unet + clip + t5 + vae) * 1e9 / GIB
    unet_rank, te_rank = LORA_PARAMS_PER_RANK[k.family]
    trained = k.dim * 1e6 * (unet_rank * k.train_unet + te_rank * k.train_text_encoder)
    lora = trained * (8 + OPTIMIZER_STATE_BYTES.get(k.optimizer, 8)) / GIB
    plain, checkpointed = ACTIVATIONS_GB[k.family]
    scale = k.batch_size * _pixels(k) * (2 if k.precision == "no" else 1)
    activations = (checkpointed if k.gradient_checkpointing else plain) * scale
    if not k.cache_latents:
        # The VAE encodes the batch before the U-Net runs, so only the larger of the two peaks counts.
        activations = max(activations, VAE_ENCODE_GB[k.family] * scale)
    overhead = CUDA_CONTEXT_GB + ALLOCATOR_SHARE * (weights + lora + activations)
    return weights, lora, activations, overhead


def _total(k: Knobs) -> float:
    return sum(vram_parts(k))


def vram_fixes(k: Knobs, free_gb: float) -> tuple[VramFix, ...]:
    """The cheapest changes that bring the peak under `free_gb`, in the order users should try them."""
    fixes: list[VramFix] = []
    budget = TIGHT_SHARE * free_gb

    def add(changed: Knobs, setting: str, why: str) -> Knobs:
        fixes.append(VramFix(setting, why, _total(changed)))
        return changed

    if not k.gradient_checkpointing and _total(k) > budget:
        k = add(
            replace(k, gradient_checkpointing=True),
            "training.gradient_checkpointing = true",
            "recomputes activations instead of storing them; about 30% slower",
        )
    if k.batch_size > 1 and _total(k) > budget:
        batch = k.batch_size
        while batch > 1 and _total(replace(k, batch_size=batch)) > budget:
            batch //= 2
        k = add(
            replace(k, batch_size=batch),
            f"training.batch_size = {batch}",
            "fewer images per step; raise repeats or epochs to see them as often",
        )
    if OPTIMIZER_STATE_BYTES.get(k.optimizer, 8) > OPTIMIZER_STATE_BYTES["AdamW8bit"] and _total(k) > budget:
        k = add(
            replace(k, optimizer="AdamW8bit"),
            'optimizer.type = "AdamW8bit"',
            "keeps optimizer state in 8 bits (needs bitsandbytes)",
        )
    if not k.cache_latents and _total(k) > budget:
        k = add(
            replace(k, cache_latents=True),
            "training.cache_latents = true",
            "encodes the images once, so the VAE leaves the GPU",
        )
    if k.family in ("sdxl", "flux") and not k.fp8_base and k.precision != "no" and _total(k) > budget:
        k = add(replace(k, fp8_base=True), "training.fp8_base = true", "stores the frozen base model in 8 bits")
    if k.family in ("sdxl", "flux") and not k.cache_text_encoders and _total(k) > budget:
        k = add(
            replace(k, cache_text_encoders=True, train_text_encoder=False),
            "training.cache_text_encoder_outputs = true",
            "encodes captions once so the text encoders leave the GPU; needs network.train_unet_only = true "
            "and shuffle_tags = false",
        )
    if k.family == "flux" and _total(k) > budget:
        swap = k.blocks_to_swap
        while swap < MAX_BLOCKS_TO_SWAP and _total(replace(k, blocks_to_swap=swap)) > budget:
            swap += 1
        if swap != k.blocks_to_swap:
            add(
                replace(k, blocks_to_swap=swap),
                f"flux.blocks_to_swap = {swap}",
                "keeps transformer blocks in CPU memory; slower",
            )
    return tuple(fixes)


def estimate_vram(cfg: Config, free_gb: float | None) -> VramEstimate:
    k = knobs(cfg)
    weights, lora, activations, overhead = vram_parts(k)
    fixes = vram_fixes(k, free_gb) if free_gb is not None else ()
    return VramEstimate(weights, lora, activations, overhead, free_gb, fixes)


def table_step_seconds(k: Knobs, gpu_class: GpuClass) -> float:
    """Seconds per training step from the table and the documented multipliers."""
    device = "cpu" if gpu_class == "cpu" else "gpu"
    seconds = STEP_SECONDS[k.family][gpu_class] * _pixels(k) * PRECISION_FACTOR[device].get(k.precision, 1.0)
    seconds *= math.pow(k.batch_size, BATCH_EXPONENT[device])
    if k.gradient_checkpointing:
        seconds *= GRADIENT_CHECKPOINTING_FACTOR
    if not k.cache_latents:
        seconds *= UNCACHED_LATENTS_FACTOR
    if k.fp8_base and device == "gpu":
        seconds *= FP8_FACTOR
    return seconds * (1 + BLOCK_SWAP_FACTOR_PER_BLOCK * k.blocks_to_swap)


def sample_images(cfg: Config) -> int:
    """Sample images sd-scripts renders: every prompt at every N-th epoch."""
    every = cfg.sampling.every_n_epochs
    return len(cfg.sampling.prompts) * (cfg.training.epochs // every) if every > 0 else 0


def _sample_steps(cfg: Config) -> float:
    prompts = cfg.sampling.prompts
    return statistics.fmean(p.steps for p in prompts) if prompts else 0.0


def validation_batches(cfg: Config, plan: StepPlan) -> int:
    """Held-out batches sd-scripts measures over the whole run (each at every validation timestep)."""
    if not plan.validation_images:
        return 0
    per_pass = math.ceil(plan.validation_images / max(plan.batch_size, 1))
    if cfg.validation.max_batches is not None:
        per_pass = min(per_pass, cfg.validation.max_batches)
    return per_pass * (cfg.training.epochs // cfg.validation.every_n_epochs)


def _validation_seconds(cfg: Config, plan: StepPlan, step: float) -> float:
    return validation_batches(cfg, plan) * VALIDATION_TIMESTEPS * VALIDATION_FORWARD_SHARE * step


def _saves(cfg: Config) -> int:
    # Every N-th epoch, plus the final file when the last epoch is not a multiple of N.
    epochs, every = cfg.training.epochs, cfg.save.every_n_epochs
    return epochs // every + (epochs % every != 0)


def table_time(cfg: Config, plan: StepPlan, gpu_class: GpuClass) -> TimeEstimate:
    k = knobs(cfg)
    step = table_step_seconds(k, gpu_class)
    family = k.family
    startup = STARTUP_SECONDS[family][gpu_class]
    if k.cache_latents:
        startup += (
            CACHE_SECONDS_PER_IMAGE[family][gpu_class] * _pixels(k) * (plan.images + plan.reg_images_with_repeats)
        )
    one_image = table_step_seconds(_sample_knobs(k), gpu_class)
    sampling = sample_images(cfg) * (_sample_steps(cfg) * SAMPLE_STEP_SHARE * one_image + SAMPLE_IMAGE_OVERHEAD_SECONDS)
    validation = _validation_seconds(cfg, plan, step)
    total = startup + plan.total_steps * step + sampling + validation + _saves(cfg) * SAVE_SECONDS
    label = "the CPU" if gpu_class == "cpu" else f"{CLASS_GB[gpu_class]:.0f} GB-class GPUs"
    return TimeEstimate(total, step, startup, sampling, f"rough table figure for {label}", validation)


def _sample_knobs(k: Knobs) -> Knobs:
    # Samples render one image at a time, without gradient checkpointing.
    return replace(k, batch_size=1, gradient_checkpointing=False)


def measured_time(cfg: Config, plan: StepPlan, history: Sequence[Measured]) -> TimeEstimate | None:
    """The time earlier runs with the same speed key took on this machine, scaled to this run."""
    key = speed_key(cfg)
    same = [m for m in history if m.key == key]
    if not same:
        return None
    step = statistics.median(s for m in same if (s := m.timings.step_seconds) is not None)
    startup = statistics.median(m.timings.seconds["startup"] for m in same)
    per_step = [s / m.sample_steps for m in same if (s := m.timings.sample_seconds) is not None and m.sample_steps]
    if per_step:
        per_image = statistics.median(per_step) * _sample_steps(cfg)
    else:
        per_image = (
            _sample_steps(cfg) * SAMPLE_STEP_SHARE * step / max(key.batch_size, 1) + SAMPLE_IMAGE_OVERHEAD_SECONDS
        )
    saves = [m.timings.seconds["saving"] / m.timings.saves for m in same if m.timings.saves]
    save = statistics.median(saves) if saves else SAVE_SECONDS
    sampling = sample_images(cfg) * per_image
    validation = _validation_seconds(cfg, plan, step)
    total = startup + plan.total_steps * step + sampling + validation + _saves(cfg) * save
    runs = f"{len(same)} earlier run{'s' if len(same) > 1 else ''}"
    return TimeEstimate(
        total,
        step,
        startup,
        sampling,
        f"measured on this machine: {runs} with the same family, resolution, batch, precision and checkpointing",
        validation,
    )


def estimate(
    cfg: Config, plan: StepPlan, hardware: Hardware | None = None, history: Sequence[Measured] = ()
) -> Estimate:
    """Steps, time, VRAM and cost of a run; pure: the caller reads the hardware and earlier runs."""
    time = measured_time(cfg, plan, history)
    if time is None and hardware is not None:
        time = table_time(cfg, plan, hardware.gpu_class)
    by_class = {c: table_time(cfg, plan, c).seconds for c in GPU_CLASSES}
    free = hardware.free_gb if hardware is not None and hardware.gpu_class != "cpu" else None
    return Estimate(
        plan.total_steps,
        plan.seaart_cost,
        sample_images(cfg),
        hardware,
        time,
        by_class,
        estimate_vram(cfg, free),
    )
