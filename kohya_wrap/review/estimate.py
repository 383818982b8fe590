"""Before launch: a run's steps, wall time, peak VRAM and SeaArt cost, from tables and this machine's runs."""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import subprocess
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from kohya_wrap.config.models import Config
from kohya_wrap.data.dataset import StepPlan
from kohya_wrap.train import events as ev
from kohya_wrap.train.layout import RunLayout

# Every figure below is explained, with its source, in docs/estimate.md. GPU figures are rough public
# community figures (sd-scripts docs and kohya_ss / sd-scripts issue threads), not our measurements;
# the CPU figures were measured on this project's 2-core CI machines. Measured runs on the user's own
# machine replace the table whenever they exist (`measured_runs`).

GpuClass = Literal["cpu", "8gb", "12gb", "16gb", "24gb", "48gb", "80gb"]
GPU_CLASSES: tuple[GpuClass, ...] = ("cpu", "8gb", "12gb", "16gb", "24gb", "48gb", "80gb")
CLASS_GB: Mapping[GpuClass, float] = {"8gb": 8, "12gb": 12, "16gb": 16, "24gb": 24, "48gb": 48, "80gb": 80}

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
GIB = 2**30


@dataclass(frozen=True)
class Hardware:
    gpu_class: GpuClass
    name: str
    free_gb: float | None = None
    total_gb: float | None = None


def gpu_class_of(total_gb: float) -> GpuClass:
    """The table class of a GPU with `total_gb` GiB (an "8 GB" card reports about 7.6 GiB)."""
    for gpu_class, floor in (("80gb", 70), ("48gb", 40), ("24gb", 20), ("16gb", 14), ("12gb", 10)):
        if total_gb >= floor:
            return gpu_class  # type: ignore[return-value]
    return "8gb"


def assumed_hardware(gpu_class: str | None, free_gb: float | None) -> Hardware:
    """The hardware a user names: a class (all its memory free unless `free_gb` says less) or free memory."""
    chosen = next((c for c in GPU_CLASSES if c == gpu_class), None) or gpu_class_of(free_gb or 0.0)
    if chosen == "cpu":
        return Hardware("cpu", "a CPU")
    total = CLASS_GB[chosen]
    article = "an" if f"{total:.0f}".startswith("8") else "a"
    free = free_gb if free_gb is not None else total
    return Hardware(chosen, f"{article} {total:.0f} GB-class GPU", free, total)


def parse_nvidia_smi(text: str, index: int = 0) -> Hardware | None:
    """Hardware from `nvidia-smi --query-gpu=name,memory.total,memory.free --format=csv,noheader,nounits`."""
    rows = [line.split(",") for line in text.strip().splitlines() if line.strip()]
    if not 0 <= index < len(rows) or len(rows[index]) != 3:
        return None
    name, total, free = (cell.strip() for cell in rows[index])
    try:
        total_gb, free_gb = float(total) * 2**20 / GIB, float(free) * 2**20 / GIB
    except ValueError:
        return None
    return Hardware(gpu_class_of(total_gb), name, free_gb, total_gb)


def query_nvidia_smi(index: int = 0, timeout: float = 5.0) -> Hardware | None:
    """The GPU's free memory right now, or None without nvidia-smi (a fast call: no torch, no CUDA init)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvidia_smi(done.stdout, index)


def hardware_from_probe(info: Mapping[str, Any]) -> Hardware | None:
    """Hardware from `doctor.probe` (the sd-scripts interpreter's view); None when it did not run."""
    if "error" in info or info.get("torch") is None or "torch_error" in info:
        return None
    if not info.get("cuda"):
        return Hardware("cpu", "CPU")
    total = float(info["vram_total_gb"])
    return Hardware(gpu_class_of(total), str(info.get("gpu", "GPU")), float(info["vram_free_gb"]), total)


# ---- what earlier runs took -------------------------------------------------------------------------

Segment = Literal["startup", "training", "sampling", "saving"]
_STARTUP_PHASES = frozenset(
    {"loading_model", "hashing_model", "caching_latents", "caching_text_encoder_outputs", "preparing_network"}
)


@dataclass(frozen=True)
class RunTimings:
    """Where one attempt's wall time went, from its timed events (seconds)."""

    seconds: Mapping[Segment, float]
    steps: int  # distinct steps trained in this attempt
    samples: int
    saves: int

    @property
    def wall(self) -> float:
        return sum(self.seconds.values())

    @property
    def step_seconds(self) -> float | None:
        return self.seconds["training"] / self.steps if self.steps else None

    @property
    def sample_seconds(self) -> float | None:
        return self.seconds["sampling"] / self.samples if self.samples else None


def _segment(event: ev.Event, previous: Segment) -> Segment:
    if isinstance(event, ev.Phase) and event.name in _STARTUP_PHASES:
        return "startup"
    if isinstance(event, ev.Phase) and event.name == "sampling" or isinstance(event, ev.SampleSaved):
        return "sampling"
    if isinstance(event, ev.CheckpointSaved | ev.StateSaved | ev.EpochFinished | ev.RunFinished):
        return "saving"
    if isinstance(event, ev.RunStarted | ev.EpochStarted | ev.Step):
        return "training"
    return previous


def read_events(layout: RunLayout) -> list[tuple[ev.Event, float | None]]:
    """Every readable event of a run with its time; a line cut short by a killed run is skipped."""
    try:
        lines = layout.events.read_text("utf-8").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(ev.from_json_timed(line))
        except (ValueError, TypeError):
            continue
    return found


def last_attempt(timed: Sequence[tuple[ev.Event, float | None]]) -> list[tuple[ev.Event, float]]:
    """The timed events of the newest attempt (a resumed run appends one attempt after another)."""
    attempt: list[tuple[ev.Event, float]] = []
    for event, t in timed:
        if t is None:
            continue
        if attempt and isinstance(attempt[-1][0], ev.RunFinished):
            attempt = []
        attempt.append((event, t))
    return attempt


def run_timings(
    timed: Sequence[tuple[ev.Event, float]], started: float | None = None, ended: float | None = None
) -> RunTimings:
    """Split one attempt's wall time into startup, training, sampling and saving.

    Each interval between two events belongs to the state the first one began; `started` (the launch)
    adds the child's start-up before its first event, `ended` the wait after its last.
    """
    seconds: dict[Segment, float] = {"startup": 0.0, "training": 0.0, "sampling": 0.0, "saving": 0.0}
    if not timed:
        return RunTimings(seconds, 0, 0, 0)
    if started is not None and timed[0][1] > started:
        seconds["startup"] += timed[0][1] - started
    segment: Segment = "startup"
    steps: set[int] = set()
    samples = saves = 0
    for i, (event, t) in enumerate(timed):
        segment = _segment(event, segment)
        following = timed[i + 1][1] if i + 1 < len(timed) else ended
        if following is not None and following > t:
            seconds[segment] += following - t
        if isinstance(event, ev.Step):
            steps.add(event.step)
        samples += isinstance(event, ev.SampleSaved)
        saves += isinstance(event, ev.CheckpointSaved)
    return RunTimings(seconds, len(steps), samples, saves)


@dataclass(frozen=True)
class SpeedKey:
    """What decides the time of a step; runs agreeing on all of it are comparable."""

    family: str
    resolution: int
    batch_size: int
    mixed_precision: str
    gradient_checkpointing: bool


def speed_key(cfg: Config) -> SpeedKey:
    tr, res = cfg.training, cfg.dataset.resolution
    assert res is not None and tr.mixed_precision is not None
    return SpeedKey(cfg.model.family, res, tr.batch_size, tr.mixed_precision, bool(tr.gradient_checkpointing))


def _key_from_toml(doc: Mapping[str, Any]) -> SpeedKey | None:
    try:
        tr = doc["training"]
        return SpeedKey(
            str(doc["model"]["family"]),
            int(doc["dataset"]["resolution"]),
            int(tr["batch_size"]),
            str(tr["mixed_precision"]),
            bool(tr.get("gradient_checkpointing", False)),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Measured:
    """The speed one earlier run on this machine showed."""

    run: Path
    key: SpeedKey
    timings: RunTimings
    sample_steps: float  # mean sampling steps of its prompts


def iso_seconds(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def measure_run(root: Path) -> Measured | None:
    """What a run folder's events say about its speed; None without enough steps to say anything."""
    layout = RunLayout(root)
    try:
        key = _key_from_toml(tomllib.loads(layout.config.read_text("utf-8")))
        record = json.loads(layout.run_json.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if key is None or not isinstance(record, dict):
        return None
    attempt = last_attempt(read_events(layout))
    timings = run_timings(attempt, iso_seconds(record.get("started")), iso_seconds(record.get("ended")))
    if timings.steps < 2:
        return None
    try:
        prompts = json.loads(layout.prompts.read_text("utf-8"))
        sample_steps = statistics.fmean(float(p.get("sample_steps", 20)) for p in prompts) if prompts else 0.0
    except (OSError, ValueError, TypeError, AttributeError):
        sample_steps = 0.0
    return Measured(root, key, timings, sample_steps)


def measured_runs(runs_dir: Path, limit: int = 20) -> list[Measured]:
    """The newest `limit` runs under `runs_dir` that trained at least two steps, newest first."""
    if not runs_dir.is_dir():
        return []
    roots = sorted(
        (p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    found: list[Measured] = []
    for root in roots:
        if len(found) >= limit:
            break
        if (measured := measure_run(root)) is not None:
            found.append(measured)
    return found


# ---- the estimate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeEstimate:
    seconds: float
    step_seconds: float
    startup_seconds: float
    sampling_seconds: float
    source: str  # where the speed comes from, for the user


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
class _Knobs:
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


def _knobs(cfg: Config) -> _Knobs:
    tr, net, res = cfg.training, cfg.network, cfg.dataset.resolution
    assert res is not None and tr.mixed_precision is not None
    return _Knobs(
        family=cfg.model.family,
        resolution=res,
        batch_size=tr.batch_size,
        precision=tr.mixed_precision,
        gradient_checkpointing=bool(tr.gradient_checkpointing),
        cache_latents=tr.cache_latents,
        cache_text_encoders=tr.cache_text_encoder_outputs,
        fp8_base=tr.fp8_base,
        optimizer=cfg.optimizer.type,
        dim=net.dim,
        train_unet=not net.train_text_encoder_only,
        train_text_encoder=not net.train_unet_only,
        blocks_to_swap=cfg.flux.blocks_to_swap if cfg.flux is not None else 0,
    )


def _pixels(k: _Knobs) -> float:
    return (k.resolution / REFERENCE_RESOLUTION[k.family]) ** 2


def vram_parts(k: _Knobs) -> tuple[float, float, float, float]:
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


def _total(k: _Knobs) -> float:
    return sum(vram_parts(k))


def vram_fixes(k: _Knobs, free_gb: float) -> tuple[VramFix, ...]:
    """The cheapest changes that bring the peak under `free_gb`, in the order users should try them."""
    fixes: list[VramFix] = []
    budget = TIGHT_SHARE * free_gb

    def add(changed: _Knobs, setting: str, why: str) -> _Knobs:
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
    k = _knobs(cfg)
    weights, lora, activations, overhead = vram_parts(k)
    fixes = vram_fixes(k, free_gb) if free_gb is not None else ()
    return VramEstimate(weights, lora, activations, overhead, free_gb, fixes)


def table_step_seconds(k: _Knobs, gpu_class: GpuClass) -> float:
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


def _saves(cfg: Config) -> int:
    # Every N-th epoch, plus the final file when the last epoch is not a multiple of N.
    epochs, every = cfg.training.epochs, cfg.save.every_n_epochs
    return epochs // every + (epochs % every != 0)


def table_time(cfg: Config, plan: StepPlan, gpu_class: GpuClass) -> TimeEstimate:
    k = _knobs(cfg)
    step = table_step_seconds(k, gpu_class)
    family = k.family
    startup = STARTUP_SECONDS[family][gpu_class]
    if k.cache_latents:
        startup += (
            CACHE_SECONDS_PER_IMAGE[family][gpu_class] * _pixels(k) * (plan.images + plan.reg_images_with_repeats)
        )
    one_image = table_step_seconds(_sample_knobs(k), gpu_class)
    sampling = sample_images(cfg) * (_sample_steps(cfg) * SAMPLE_STEP_SHARE * one_image + SAMPLE_IMAGE_OVERHEAD_SECONDS)
    total = startup + plan.total_steps * step + sampling + _saves(cfg) * SAVE_SECONDS
    label = "the CPU" if gpu_class == "cpu" else f"{CLASS_GB[gpu_class]:.0f} GB-class GPUs"
    return TimeEstimate(total, step, startup, sampling, f"rough table figure for {label}")


def _sample_knobs(k: _Knobs) -> _Knobs:
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
    total = startup + plan.total_steps * step + sampling + _saves(cfg) * save
    runs = f"{len(same)} earlier run{'s' if len(same) > 1 else ''}"
    return TimeEstimate(
        total,
        step,
        startup,
        sampling,
        f"measured on this machine: {runs} with the same family, resolution, batch, precision and checkpointing",
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


# ---- words ----------------------------------------------------------------------------------------


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
