"""The user's settings as strict Pydantic models by topic, and the resolved `Config` every reader uses."""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kohya_wrap.config.tagger_defaults import (
    AUTO_PRUNE_MIN_SHARE,
    CHARACTER_THRESHOLD,
    GENERAL_THRESHOLD,
    TAGGER_MODEL,
)

Family = Literal["sd15", "sdxl", "flux"]
Optimizer = Literal["AdamW", "AdamW8bit", "Adafactor", "Lion", "DAdaptation", "DAdaptAdam", "Prodigy"]
Scheduler = Literal["cosine_with_restarts", "cosine", "linear", "polynomial", "constant_with_warmup", "constant"]
Precision = Literal["no", "fp16", "bf16"]
SavePrecision = Literal["fp32", "fp16", "bf16"]
Attention = Literal["sdpa", "xformers", "none"]
CropMode = Literal["none", "center", "focus"]
# sd-scripts' sample samplers (train_util.add_training_arguments, --sample_sampler choices).
Sampler = Literal[
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler_a",
    "heun",
    "dpm_2",
    "dpm_2_a",
    "dpmsolver",
    "dpmsolver++",
    "dpmsingle",
    "k_lms",
    "k_euler",
    "k_euler_a",
    "k_dpm_2",
    "k_dpm_2_a",
]
BlockWeightPreset = Literal["cosine", "sine", "linear", "reverse_linear", "zeros"]
OPTIMIZER_PACKAGES = {
    "AdamW8bit": "bitsandbytes",
    "Lion": "lion_pytorch",
    "DAdaptation": "dadaptation",
    "DAdaptAdam": "dadaptation",
    "Prodigy": "prodigyopt",
}

_OUTPUT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ARG_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Strict(BaseModel):
    """Base for every section: unknown keys are errors, never silently dropped."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True)


class ModelSettings(Strict):
    family: Family = Field(description="Model family the LoRA is trained for: sd15, sdxl or flux.")
    variant: str | None = Field(
        None,
        description="Family variant that drives defaults: sd15: base; sdxl: base, pony, illustrious, "
        "noobai, noobai-vpred; flux: dev, schnell.",
    )
    base: str = Field(min_length=1, description="Base checkpoint: a .safetensors file, a diffusers folder or a hub id.")
    vae: str | None = Field(None, description="Optional VAE file to use instead of the checkpoint's.")
    v_prediction: bool | None = Field(
        None, description="The base is a v-prediction model (some NoobAI/Illustrious SDXL models)."
    )
    clip_l: str | None = Field(None, description="Flux: CLIP-L text encoder file (required for flux).")
    t5xxl: str | None = Field(None, description="Flux: T5-XXL text encoder file (required for flux).")
    ae: str | None = Field(None, description="Flux: autoencoder file (required for flux).")
    tokenizer_cache_dir: str | None = Field(
        None, description="Folder with pre-saved tokenizers, so no hub access is needed at run time."
    )


class DatasetDir(Strict):
    path: str = Field(min_length=1, description="Image folder (plain or kohya-style `<repeats>_<name>`).")
    repeats: int | None = Field(
        None, ge=1, le=10000, description="Times each image is seen per epoch; default: folder prefix or 1."
    )
    class_token: str | None = Field(
        None, description="Caption for images without a caption file; default: folder name after the prefix."
    )
    is_reg: bool = Field(False, description="Regularisation images (class images) instead of training images.")

    @field_validator("path", mode="before")
    @classmethod
    def _path(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must name an image folder (an empty path would be the config's own folder)")
        return value


class DatasetSettings(Strict):
    dirs: list[DatasetDir] = Field(min_length=1, description="Image folders to train on.")
    resolution: int | None = Field(
        None, ge=64, le=4096, description="Training resolution (square side); default by family."
    )
    crop: CropMode = Field("none", description="Crop applied by `prepare`: none, center or focus.")
    crop_size: int | None = Field(None, ge=64, le=8192, description="Side of the square crop; default: resolution.")
    enable_bucket: bool = Field(True, description="Aspect-ratio buckets, so images need not be square.")
    min_bucket_reso: int | None = Field(None, ge=64, le=8192, description="Smallest bucket side; default 256.")
    max_bucket_reso: int | None = Field(None, ge=64, le=8192, description="Largest bucket side; default by family.")
    caption_extension: str = Field(".txt", description="Caption file extension (sd-scripts' own default is .caption).")

    @field_validator("caption_extension")
    @classmethod
    def _caption_extension(cls, value: str) -> str:
        if not re.fullmatch(r"\.?[A-Za-z0-9_-]{1,16}", value):
            raise ValueError("must be a file extension like .txt")
        return value if value.startswith(".") else "." + value


class TaggingSettings(Strict):
    model: str = Field(
        TAGGER_MODEL,
        description="WD14 tagger: a hub id or a local folder with model.onnx and selected_tags.csv.",
    )
    general_threshold: float = Field(
        GENERAL_THRESHOLD, gt=0, lt=1, description="Score above which general tags are kept."
    )
    character_threshold: float = Field(
        CHARACTER_THRESHOLD, gt=0, lt=1, description="Score above which character tags are kept."
    )
    trigger_word: str | None = Field(None, description="Word put first in every caption; prompt with it later.")
    remove_tags: list[str] = Field(default_factory=list, description="Tags removed from every caption.")
    replace_tags: dict[str, str] = Field(default_factory=dict, description="Tags replaced in every caption.")
    auto_prune: bool = Field(False, description="Remove the tags most images share (character-defining tags).")
    auto_prune_min_share: float = Field(
        AUTO_PRUNE_MIN_SHARE, gt=0, le=1, description="Share of images a tag must appear in to be proposed for pruning."
    )
    keep_tags: list[str] = Field(
        default_factory=list, description="Tags auto-prune never removes, on top of the generic ones (1girl, solo, …)."
    )
    always_first_tags: list[str] = Field(
        default_factory=list, description="Tags put right after the trigger word, in this order."
    )
    replace_underscores: bool = Field(False, description="Write `green hair` instead of `green_hair`.")
    rating_tags: bool = Field(False, description="Add the tagger's rating tag (general, sensitive, …).")

    @field_validator("trigger_word")
    @classmethod
    def _trigger_word(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "," in value or "\n" in value):
            raise ValueError("must be a non-empty word without commas or newlines")
        return value


class BlockLrWeights(Strict):
    down: list[float] | BlockWeightPreset | None = Field(
        None, description="LR weights of the down blocks (SD 12, SDXL 9 values) or a preset name."
    )
    mid: list[float] | None = Field(None, description="LR weights of the mid block (SD 1, SDXL 3 values).")
    up: list[float] | BlockWeightPreset | None = Field(
        None, description="LR weights of the up blocks (SD 12, SDXL 9 values) or a preset name."
    )


class NetworkSettings(Strict):
    dim: int = Field(16, ge=1, le=1024, description="LoRA rank: higher keeps smaller details, files grow.")
    alpha: float | None = Field(None, gt=0, le=1024, description="LoRA alpha; default dim / 2 (SeaArt: ≤ dim).")
    train_unet_only: bool = Field(False, description="Train only the U-Net (or DiT) part of the LoRA.")
    train_text_encoder_only: bool = Field(False, description="Train only the text encoder part of the LoRA.")
    block_dims: list[int] | None = Field(None, description="Block-wise dims (SD 25, SDXL 23 values).")
    block_alphas: list[float] | None = Field(None, description="Block-wise alphas, same length as block_dims.")
    block_lr_weights: BlockLrWeights | None = Field(None, description="Block-wise LR weights (down/mid/up).")
    conv_dim: int | None = Field(None, ge=1, le=1024, description="Rank of the conv layers (LoCon); off when unset.")
    conv_alpha: float | None = Field(None, gt=0, le=1024, description="Alpha of the conv layers.")

    @field_validator("block_dims")
    @classmethod
    def _block_dims(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 0 for v in value):
            raise ValueError("block dims must be 0 or more")
        return value


OptimizerArg = bool | int | float | str | list[float]


class OptimizerSettings(Strict):
    type: Optimizer = Field("AdamW8bit", description="Optimizer, as SeaArt names it.")
    learning_rate: float = Field(1e-4, gt=0, le=10, description="LR for U-Net and text encoder together.")
    unet_lr: float | None = Field(None, ge=0, le=10, description="U-Net LR (style, texture); overrides learning_rate.")
    text_encoder_lr: float | None = Field(
        None, ge=0, le=10, description="Text encoder LR (what tags name); overrides learning_rate."
    )
    scheduler: Scheduler = Field("cosine_with_restarts", description="LR scheduler, as SeaArt names it.")
    warmup_percent: float = Field(0, ge=0, lt=100, description="LR warmup as % of all steps (converted to steps).")
    restarts: int | None = Field(None, ge=1, le=100, description="Cycles of cosine_with_restarts (default 1).")
    min_snr_gamma: float | None = Field(None, gt=0, le=20, description="Min-SNR loss weighting (5 is common).")
    args: dict[str, OptimizerArg] = Field(
        default_factory=dict, description="Extra optimizer arguments, e.g. {weight_decay = 0.01}."
    )

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, OptimizerArg]) -> dict[str, OptimizerArg]:
        for key, arg in value.items():
            if not _ARG_KEY.match(key):
                raise ValueError(f"'{key}' is not a valid argument name")
            if isinstance(arg, str) and ("=" in arg or "\n" in arg):
                raise ValueError(f"the value of '{key}' cannot contain '=' or a newline")
            numbers = arg if isinstance(arg, list) else [arg]
            if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
                # sd-scripts reads these with ast.literal_eval, which has no literal for inf or nan.
                raise ValueError(f"the value of '{key}' must be a finite number")
        return value


class TrainingSettings(Strict):
    epochs: int = Field(10, ge=1, le=10000, description="Passes over the whole dataset.")
    batch_size: int = Field(2, ge=1, le=256, description="Images per step (SeaArt advises starting at 2).")
    mixed_precision: Precision | None = Field(
        None, description="no, fp16 or bf16 (SeaArt's 'none' = no); default: fp16 for sd15, bf16 otherwise."
    )
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Same seed and data give the same LoRA.")
    clip_skip: int | None = Field(None, ge=1, le=12, description="CLIP skip; default SD1.5 2, SDXL 1 (Pony 2).")
    shuffle_tags: bool = Field(True, description="Shuffle caption tags each step (keep_tokens stay in front).")
    keep_tokens: int = Field(1, ge=0, le=255, description="First N tags (the trigger word) kept in front.")
    weighted_captions: bool = Field(False, description="Read `(tag:1.2)` weights in captions (SD1.5, SDXL).")
    max_token_length: Literal[75, 150, 225] = Field(75, description="Caption token budget: 75, 150 or 225.")
    noise_offset: float | None = Field(None, gt=0, le=1, description="Noise offset: more contrast (0.05 typical).")
    multires_noise_iterations: int | None = Field(None, ge=1, le=64, description="Multi-resolution noise iterations.")
    multires_noise_discount: float | None = Field(None, gt=0, le=1, description="Multi-resolution noise discount.")
    gradient_checkpointing: bool | None = Field(None, description="Trade speed for memory; default on for SDXL/Flux.")
    cache_latents: bool = Field(True, description="Encode images once before training (in memory, per run).")
    cache_text_encoder_outputs: bool = Field(
        False, description="SDXL/Flux: encode captions once (needs U-Net-only training, no tag shuffling)."
    )
    fp8_base: bool = Field(False, description="SDXL/Flux: keep the base model in fp8 to save memory.")
    attention: Attention = Field("sdpa", description="Attention kernel: sdpa, xformers or none (SD1.5/SDXL).")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _seaart_none(cls, value: object) -> object:
        return "no" if value == "none" else value


class SamplePrompt(Strict):
    text: str = Field(min_length=1, description="Prompt; put the trigger word and the features in it.")
    negative: str = Field("", description="Negative prompt.")
    width: int | None = Field(None, ge=64, le=4096, multiple_of=8, description="Width; default: resolution.")
    height: int | None = Field(None, ge=64, le=4096, multiple_of=8, description="Height; default: resolution.")
    steps: int = Field(28, ge=1, le=1000, description="Sampling steps.")
    cfg: float = Field(7.0, ge=0, le=30, description="CFG scale (Flux: distilled guidance).")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Seed; default: the training seed + index.")


class SamplingSettings(Strict):
    every_n_epochs: int = Field(1, ge=0, le=10000, description="Render samples every N epochs (0 = never).")
    sampler: Sampler = Field("euler_a", description="Sampler used for sample images.")
    prompts: list[SamplePrompt] = Field(default_factory=list, description="Sample prompts, one image each.")


class SaveSettings(Strict):
    output_name: str | None = Field(None, description="LoRA file name; default: the first dataset folder's name.")
    every_n_epochs: int = Field(1, ge=1, le=10000, description="Save a LoRA every N epochs.")
    precision: SavePrecision = Field("fp16", description="LoRA file precision: fp32, fp16 or bf16.")
    save_state: bool = Field(True, description="Save optimizer state with each LoRA, so the run can resume.")

    @field_validator("output_name")
    @classmethod
    def _output_name(cls, value: str | None) -> str | None:
        if value is not None and not _OUTPUT_NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-' (up to 100), starting with a letter or digit")
        return value


class ValidationSettings(Strict):
    split: float = Field(
        0, ge=0, le=0.5, description="Share of each training folder held out for validation loss (0 = off)."
    )
    seed: int | None = Field(
        None, ge=0, le=2**32 - 1, description="Picks the held-out images and their noise; default: training.seed."
    )
    every_n_epochs: int = Field(1, ge=1, le=10000, description="Measure validation loss every N epochs.")
    max_batches: int | None = Field(
        None, ge=1, le=100000, description="Validate on at most N batches of held-out images; default: all."
    )


ExtraArg = bool | int | float | str | list[str] | list[float] | list[int]


class RunSettings(Strict):
    runs_dir: str = Field("runs", description="Folder that holds one folder per run.")
    sd_scripts_dir: str | None = Field(None, description="sd-scripts checkout; default: the bundled submodule.")
    python: str | None = Field(None, description="Interpreter that runs sd-scripts; default: this one.")
    num_processes: int = Field(1, ge=1, le=1024, description="Training processes in all (GPUs × machines).")
    num_machines: int = Field(1, ge=1, le=128, description="Machines taking part.")
    machine_rank: int = Field(0, ge=0, description="This machine's rank (0 = main) for multi-machine runs.")
    main_process_ip: str | None = Field(None, description="Main machine's address for multi-machine runs.")
    main_process_port: int | None = Field(None, ge=1, le=65535, description="Main machine's port.")
    gpu_ids: Literal["all"] | list[int] = Field("all", description="GPUs to use: 'all' or a list of indices.")
    cpu_threads_per_process: int = Field(2, ge=1, le=256, description="CPU threads per training process.")
    stop_on_nan: bool = Field(True, description="Stop the run as soon as the loss becomes NaN.")
    executor: Literal["local", "ray"] = Field(
        "local", description="Who trains it from the queue: this machine's GPU slots, or a Ray cluster."
    )
    ray_address: str = Field(
        "auto", min_length=1, description="Ray cluster for executor = ray: auto, local, or HOST:PORT of its head."
    )
    extra_args: dict[str, ExtraArg] = Field(
        default_factory=dict, description="More sd-scripts arguments (checked against its parser)."
    )


class FluxSettings(Strict):
    guidance_scale: float = Field(1.0, ge=0, le=30, description="Guidance during training (1.0 for dev).")
    timestep_sampling: Literal["sigma", "uniform", "sigmoid", "shift", "flux_shift"] = Field(
        "flux_shift", description="Timestep sampling."
    )
    model_prediction_type: Literal["raw", "additive", "sigma_scaled"] = Field("raw", description="Prediction type.")
    discrete_flow_shift: float = Field(3.0, gt=0, le=100, description="Flow shift (used by shift sampling).")
    apply_t5_attn_mask: bool = Field(False, description="Mask T5 padding tokens.")
    blocks_to_swap: int = Field(0, ge=0, le=35, description="Transformer blocks kept in CPU memory (saves VRAM).")


# What the user wrote (preset < file < `--set`), checked field by field; family defaults still unset.
# (No docstring: it would become the description of the `schema` command's JSON schema.)
class Settings(Strict):
    # The JSON schema describes the config file, whose top level users know as "Config".
    model_config = ConfigDict(title="Config")

    preset: str | None = Field(None, description="Preset this config starts from (templates/<name>.toml).")
    model: ModelSettings
    dataset: DatasetSettings
    tagging: TaggingSettings = Field(default_factory=TaggingSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    save: SaveSettings = Field(default_factory=SaveSettings)
    validation: ValidationSettings = Field(default_factory=ValidationSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    flux: FluxSettings | None = Field(None, description="Flux-only settings.")


# ---- resolved: the same sections once family and variant defaults are applied (config.defaults.resolve) ----
# Each narrows only the fields that a default always fills; values that stay absent by design
# (crop_size without a crop, clip_skip on Flux, conv_alpha without conv_dim, ...) keep `None`.
# `resolve` builds them from checked values without validating again, so their schemas are built only when
# something serialises them (a run folder's config.toml, the config hash), not on every `validate`.
RESOLVED = ConfigDict(defer_build=True)


class ResolvedModel(ModelSettings):
    model_config = RESOLVED

    variant: str
    v_prediction: bool


class ResolvedDir(DatasetDir):
    model_config = RESOLVED

    repeats: int


class ResolvedDataset(DatasetSettings):
    model_config = RESOLVED

    # list is invariant, so narrowing the item type needs the ignore; the resolved list holds only ResolvedDir.
    dirs: list[ResolvedDir]  # type: ignore[assignment]
    resolution: int
    min_bucket_reso: int
    max_bucket_reso: int


class ResolvedNetwork(NetworkSettings):
    model_config = RESOLVED

    alpha: float


class ResolvedTraining(TrainingSettings):
    model_config = RESOLVED

    mixed_precision: Precision
    gradient_checkpointing: bool


class ResolvedSave(SaveSettings):
    model_config = RESOLVED

    output_name: str


class ResolvedValidation(ValidationSettings):
    model_config = RESOLVED

    seed: int


class Config(Settings):
    """The resolved config: every default applied, so defaulted values are never None."""

    model_config = RESOLVED

    model: ResolvedModel
    dataset: ResolvedDataset
    network: ResolvedNetwork
    training: ResolvedTraining
    save: ResolvedSave
    validation: ResolvedValidation

    @property
    def output_name(self) -> str:
        """The LoRA's file name (without extension)."""
        return self.save.output_name
