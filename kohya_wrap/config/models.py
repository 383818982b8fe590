"""The user's config: strict Pydantic models by topic, family defaults, cross-field rules and advice."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
ADAPTIVE_OPTIMIZERS = frozenset({"DAdaptation", "DAdaptAdam", "Prodigy"})
OPTIMIZER_PACKAGES = {
    "AdamW8bit": "bitsandbytes",
    "Lion": "lion_pytorch",
    "DAdaptation": "dadaptation",
    "DAdaptAdam": "dadaptation",
    "Prodigy": "prodigyopt",
}

# Family and variant defaults, applied only where the user left a value unset.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "sd15": {
        "variant": "base",
        "resolution": 512,
        "clip_skip": 2,
        "max_bucket_reso": 1024,
        "gradient_checkpointing": False,
        "mixed_precision": "fp16",
    },
    "sdxl": {
        "variant": "base",
        "resolution": 1024,
        "clip_skip": 1,
        "max_bucket_reso": 2048,
        "gradient_checkpointing": True,
        "mixed_precision": "bf16",
    },
    "flux": {
        "variant": "dev",
        "resolution": 1024,
        "clip_skip": None,
        "max_bucket_reso": 2048,
        "gradient_checkpointing": True,
        "mixed_precision": "bf16",
    },
}
VARIANT_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "sd15": {"base": {}},
    "sdxl": {
        "base": {},
        # Pony models are trained and used with CLIP skip 2; SDXL training ignores it, samples use it.
        "pony": {"clip_skip": 2},
        "illustrious": {},
        "noobai": {},
        "noobai-vpred": {"v_prediction": True},
    },
    "flux": {"dev": {}, "schnell": {}},
}
# sd-scripts' block-wise list lengths (networks/lora.py): block dims, and down/mid/up LR weights.
BLOCK_DIMS_LEN = {"sd15": 25, "sdxl": 23}
BLOCK_LR_LEN = {"sd15": (12, 1, 12), "sdxl": (9, 3, 9)}

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
        "SmilingWolf/wd-vit-tagger-v3",
        description="WD14 tagger: a hub id or a local folder with model.onnx and selected_tags.csv.",
    )
    general_threshold: float = Field(0.35, gt=0, lt=1, description="Score above which general tags are kept.")
    character_threshold: float = Field(0.85, gt=0, lt=1, description="Score above which character tags are kept.")
    trigger_word: str | None = Field(None, description="Word put first in every caption; prompt with it later.")
    remove_tags: list[str] = Field(default_factory=list, description="Tags removed from every caption.")
    replace_tags: dict[str, str] = Field(default_factory=dict, description="Tags replaced in every caption.")
    auto_prune: bool = Field(False, description="Remove the tags most images share (character-defining tags).")
    auto_prune_min_share: float = Field(
        0.6, gt=0, le=1, description="Share of images a tag must appear in to be proposed for pruning."
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


class Config(Strict):
    preset: str | None = Field(None, description="Preset this config starts from (templates/<name>.toml).")
    model: ModelSettings
    dataset: DatasetSettings
    tagging: TaggingSettings = Field(default_factory=TaggingSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    optimizer: OptimizerSettings = Field(default_factory=OptimizerSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    sampling: SamplingSettings = Field(default_factory=SamplingSettings)
    save: SaveSettings = Field(default_factory=SaveSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    flux: FluxSettings | None = Field(None, description="Flux-only settings.")

    @model_validator(mode="after")
    def _defaults_then_checks(self) -> Config:
        apply_defaults(self)
        problems = [problem for check in ERROR_CHECKS for problem in check(self)]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def warnings(self) -> list[str]:
        """SeaArt's advice and sd-scripts' quiet traps, as `section.key: message` lines."""
        return [message for check in WARNING_CHECKS for message in check(self)]

    @property
    def output_name(self) -> str:
        assert self.save.output_name is not None  # set by apply_defaults
        return self.save.output_name


def folder_repeats_and_class(path: str) -> tuple[int | None, str | None]:
    """Read kohya-style `<repeats>_<class words>` folder names (e.g. `20_zdm 1boy` → 20, "zdm 1boy")."""
    name = PurePath(path.rstrip("/\\")).name
    head, sep, rest = name.partition("_")
    if sep and head.isdigit() and rest.strip():
        return int(head), rest.strip()
    return None, None


def apply_defaults(cfg: Config) -> None:
    """Fill unset values from the family, then the variant; values the user set are never touched."""
    family = FAMILY_DEFAULTS[cfg.model.family]
    if cfg.model.variant is None:
        cfg.model.variant = family["variant"]
    variant = VARIANT_DEFAULTS[cfg.model.family].get(cfg.model.variant, {})
    merged = {**family, **variant}
    if cfg.model.v_prediction is None:
        cfg.model.v_prediction = bool(merged.get("v_prediction", False))
    ds = cfg.dataset
    if ds.resolution is None:
        ds.resolution = merged["resolution"]
    if ds.min_bucket_reso is None:
        ds.min_bucket_reso = min(256, ds.resolution // 64 * 64 or 64)
    if ds.max_bucket_reso is None:
        ds.max_bucket_reso = max(merged["max_bucket_reso"], ds.resolution)
    if ds.crop != "none" and ds.crop_size is None:
        ds.crop_size = ds.resolution
    for d in ds.dirs:
        repeats, class_token = folder_repeats_and_class(d.path)
        if d.repeats is None:
            d.repeats = repeats or 1
        if d.class_token is None:
            d.class_token = class_token
    tr = cfg.training
    if tr.clip_skip is None:
        tr.clip_skip = merged["clip_skip"]
    if tr.mixed_precision is None:
        tr.mixed_precision = merged["mixed_precision"]
    if tr.gradient_checkpointing is None:
        tr.gradient_checkpointing = merged["gradient_checkpointing"]
    if cfg.network.alpha is None:
        cfg.network.alpha = cfg.network.dim / 2
    if cfg.network.conv_dim is not None and cfg.network.conv_alpha is None:
        cfg.network.conv_alpha = cfg.network.conv_dim / 2
    if cfg.optimizer.scheduler == "cosine_with_restarts" and cfg.optimizer.restarts is None:
        cfg.optimizer.restarts = 1
    if cfg.model.family == "flux" and cfg.flux is None:
        cfg.flux = FluxSettings()
    if cfg.save.output_name is None:
        cfg.save.output_name = default_output_name(cfg)


def default_output_name(cfg: Config) -> str:
    """The LoRA name SeaArt would use: the dataset's name (first training folder, repeats prefix dropped)."""
    first = next((d for d in cfg.dataset.dirs if not d.is_reg), cfg.dataset.dirs[0])
    name = PurePath(first.path.rstrip("/\\")).name
    _, class_token = folder_repeats_and_class(first.path)
    if class_token:
        name = class_token.split()[0]
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return cleaned[:100] or "lora"


Check = Callable[[Config], list[str]]


# ---- errors: what cannot work ------------------------------------------------------------------


def check_variant(cfg: Config) -> list[str]:
    known = VARIANT_DEFAULTS[cfg.model.family]
    if cfg.model.variant not in known:
        return [
            f"model.variant: '{cfg.model.variant}' is not a {cfg.model.family} variant; use one of {', '.join(known)}"
        ]
    return []


def check_flux_files(cfg: Config) -> list[str]:
    if cfg.model.family != "flux":
        extra = [k for k in ("clip_l", "t5xxl", "ae") if getattr(cfg.model, k) is not None]
        flux_section = (
            ['flux: the [flux] section applies only to model.family = "flux"; remove it']
            if (cfg.flux is not None)
            else []
        )
        return [
            f"model.{k}: only Flux uses a separate {k} file; remove it for {cfg.model.family}" for k in extra
        ] + flux_section
    return [
        f"model.{k}: Flux needs the {k} file; set model.{k} to its path"
        for k in ("clip_l", "t5xxl", "ae")
        if getattr(cfg.model, k) is None
    ]


def check_v_prediction(cfg: Config) -> list[str]:
    if cfg.model.family == "flux" and cfg.model.v_prediction:
        return ["model.v_prediction: Flux is a flow model and has no v-prediction; remove it"]
    return []


def check_train_parts(cfg: Config) -> list[str]:
    if cfg.network.train_unet_only and cfg.network.train_text_encoder_only:
        return [
            "network.train_unet_only: cannot be combined with network.train_text_encoder_only; keep at most one of them"
        ]
    return []


def check_scheduler(cfg: Config) -> list[str]:
    opt = cfg.optimizer
    problems = []
    if opt.scheduler == "constant" and opt.warmup_percent > 0:
        problems.append(
            "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 "
            'or use scheduler = "constant_with_warmup"'
        )
    if opt.restarts is not None and opt.scheduler != "cosine_with_restarts":
        problems.append(
            "optimizer.restarts: only cosine_with_restarts uses restarts; remove it or set "
            'scheduler = "cosine_with_restarts"'
        )
    return problems


def check_family_options(cfg: Config) -> list[str]:
    """Options a family's script ignores silently are errors here, never passed along."""
    tr, fam = cfg.training, cfg.model.family
    if fam != "flux":
        return []
    ignored = {
        "training.weighted_captions": tr.weighted_captions,
        "training.noise_offset": tr.noise_offset is not None,
        "training.multires_noise_iterations": tr.multires_noise_iterations is not None,
        "training.multires_noise_discount": tr.multires_noise_discount is not None,
        "optimizer.min_snr_gamma": cfg.optimizer.min_snr_gamma is not None,
        "training.clip_skip": tr.clip_skip is not None,
        "training.max_token_length": tr.max_token_length != 75,
        "network.block_dims": cfg.network.block_dims is not None,
        "network.block_alphas": cfg.network.block_alphas is not None,
        "network.block_lr_weights": cfg.network.block_lr_weights is not None,
    }
    return [
        f"{key}: Flux training does not support this setting (sd-scripts would ignore or reject it); remove it"
        for key, is_set in ignored.items()
        if is_set
    ]


def check_text_encoder_cache(cfg: Config) -> list[str]:
    tr = cfg.training
    if not tr.cache_text_encoder_outputs:
        return []
    if cfg.model.family == "sd15":
        return ["training.cache_text_encoder_outputs: only SDXL and Flux can cache text encoder outputs; remove it"]
    problems = []
    if tr.shuffle_tags:
        problems.append(
            "training.shuffle_tags: cached text encoder outputs cannot shuffle tags; set "
            "shuffle_tags = false or cache_text_encoder_outputs = false"
        )
    if cfg.model.family == "sdxl" and not cfg.network.train_unet_only:
        problems.append(
            "training.cache_text_encoder_outputs: SDXL can cache text encoder outputs only "
            "with network.train_unet_only = true"
        )
    if cfg.network.train_text_encoder_only:
        problems.append(
            "training.cache_text_encoder_outputs: cannot train only the text encoder from "
            "cached outputs; turn one of them off"
        )
    return problems


def check_fp8(cfg: Config) -> list[str]:
    problems = []
    if cfg.training.fp8_base and cfg.model.family == "sd15":
        problems.append("training.fp8_base: only SDXL and Flux support fp8 base weights; remove it")
    if cfg.training.fp8_base and cfg.training.mixed_precision == "no":
        problems.append("training.fp8_base: needs mixed_precision fp16 or bf16")
    return problems


def check_block_wise(cfg: Config) -> list[str]:
    net, fam = cfg.network, cfg.model.family
    if fam == "flux":
        return []  # reported by check_family_options
    problems = []
    dims_len = BLOCK_DIMS_LEN[fam]
    if net.block_dims is not None and len(net.block_dims) != dims_len:
        problems.append(f"network.block_dims: {fam} needs {dims_len} values, got {len(net.block_dims)}")
    if net.block_alphas is not None:
        if net.block_dims is None:
            problems.append("network.block_alphas: needs network.block_dims")
        elif len(net.block_alphas) != dims_len:
            problems.append(f"network.block_alphas: {fam} needs {dims_len} values, got {len(net.block_alphas)}")
    weights = net.block_lr_weights
    if weights is not None:
        lengths = dict(zip(("down", "mid", "up"), BLOCK_LR_LEN[fam], strict=True))
        for part, expected in lengths.items():
            value = getattr(weights, part)
            if isinstance(value, list) and len(value) != expected:
                problems.append(f"network.block_lr_weights.{part}: {fam} needs {expected} values, got {len(value)}")
            if isinstance(value, list) and any(v < 0 for v in value):
                problems.append(f"network.block_lr_weights.{part}: weights must be 0 or more")
        if weights.down is None and weights.mid is None and weights.up is None:
            problems.append("network.block_lr_weights: set at least one of down, mid, up")
    if net.conv_alpha is not None and net.conv_dim is None:
        problems.append("network.conv_alpha: needs network.conv_dim")
    return problems


def check_learning_rates(cfg: Config) -> list[str]:
    opt, net = cfg.optimizer, cfg.network
    problems = []
    if net.train_unet_only and opt.unet_lr == 0:
        problems.append("optimizer.unet_lr: is 0 while only the U-Net is trained, so nothing would learn")
    if net.train_text_encoder_only and opt.text_encoder_lr == 0:
        problems.append("optimizer.text_encoder_lr: is 0 while only the text encoder is trained")
    return problems


def check_buckets(cfg: Config) -> list[str]:
    ds = cfg.dataset
    assert ds.resolution is not None and ds.min_bucket_reso is not None and ds.max_bucket_reso is not None
    problems = []
    if ds.resolution % 8:
        problems.append(f"dataset.resolution: {ds.resolution} must be a multiple of 8 (64 is best)")
    if ds.enable_bucket:
        if ds.min_bucket_reso > ds.resolution:
            problems.append(
                f"dataset.min_bucket_reso: {ds.min_bucket_reso} is above the resolution {ds.resolution}; lower it"
            )
        if ds.max_bucket_reso < ds.resolution:
            problems.append(
                f"dataset.max_bucket_reso: {ds.max_bucket_reso} is below the resolution {ds.resolution}; raise it"
            )
        for key in ("min_bucket_reso", "max_bucket_reso"):
            if getattr(ds, key) % 64:
                problems.append(f"dataset.{key}: must be a multiple of 64 (the bucket step)")
    if ds.crop == "none" and ds.crop_size is not None:
        problems.append('dataset.crop_size: only used with crop = "center" or "focus"; remove it')
    if not any(not d.is_reg for d in ds.dirs):
        problems.append("dataset.dirs: every folder is is_reg = true; add a folder of training images")
    paths = [d.path for d in ds.dirs]
    for dup in sorted({p for p in paths if paths.count(p) > 1}):
        problems.append(f"dataset.dirs: '{dup}' is listed twice (sd-scripts would skip the second)")
    return problems


def check_sampling(cfg: Config) -> list[str]:
    problems = []
    for i, prompt in enumerate(cfg.sampling.prompts):
        for key in ("text", "negative"):
            if "\n" in getattr(prompt, key) or "\r" in getattr(prompt, key):
                problems.append(f"sampling.prompts.{i}.{key}: must be a single line")
    if cfg.sampling.prompts and cfg.sampling.every_n_epochs > cfg.training.epochs:
        problems.append(
            f"sampling.every_n_epochs: {cfg.sampling.every_n_epochs} is more than training.epochs "
            f"({cfg.training.epochs}), so no samples would be made; lower it or set 0"
        )
    return problems


def check_distributed(cfg: Config) -> list[str]:
    run = cfg.run
    problems = []
    if run.num_machines > 1 and not run.main_process_ip:
        problems.append("run.main_process_ip: a multi-machine run needs the main machine's address")
    if run.machine_rank >= run.num_machines:
        problems.append(f"run.machine_rank: must be below run.num_machines ({run.num_machines})")
    if run.num_processes < run.num_machines:
        problems.append("run.num_processes: counts processes on all machines, so it cannot be below num_machines")
    if isinstance(run.gpu_ids, list):
        if run.num_machines == 1 and len(run.gpu_ids) < run.num_processes:
            problems.append(f"run.gpu_ids: lists {len(run.gpu_ids)} GPUs for {run.num_processes} processes")
        if len(set(run.gpu_ids)) != len(run.gpu_ids) or any(g < 0 for g in run.gpu_ids):
            problems.append("run.gpu_ids: must be distinct GPU indices (0, 1, …)")
    return problems


def check_extra_args(cfg: Config) -> list[str]:
    # sd-scripts reuses `*.npz` caches beside the images by key presence only, so after re-tagging or
    # editing images it silently trains on stale latents/captions; we cache in memory, per run.
    return [
        f"run.extra_args.{key}: disk caches beside the images go stale after re-tagging or image edits "
        "and sd-scripts reuses them anyway; remove it (kohya_wrap caches in memory, per run)"
        for key in ("cache_latents_to_disk", "cache_text_encoder_outputs_to_disk")
        if key in cfg.run.extra_args
    ]


ERROR_CHECKS: tuple[Check, ...] = (
    check_variant,
    check_flux_files,
    check_v_prediction,
    check_train_parts,
    check_scheduler,
    check_family_options,
    check_text_encoder_cache,
    check_fp8,
    check_block_wise,
    check_learning_rates,
    check_buckets,
    check_sampling,
    check_distributed,
    check_extra_args,
)


# ---- warnings: SeaArt's advice and quiet traps ---------------------------------------------------


def check_alpha_vs_dim(cfg: Config) -> list[str]:
    net = cfg.network
    assert net.alpha is not None
    if net.alpha > net.dim:
        return [
            f"network.alpha: {net.alpha:g} is above dim {net.dim}, which scales updates up; SeaArt advises "
            f"alpha ≤ dim, commonly dim / 2 = {net.dim / 2:g}"
        ]
    return []


def check_adaptive_lr(cfg: Config) -> list[str]:
    opt = cfg.optimizer
    if opt.type not in ADAPTIVE_OPTIMIZERS:
        return []
    messages = []
    lrs = {"learning_rate": opt.learning_rate, "unet_lr": opt.unet_lr, "text_encoder_lr": opt.text_encoder_lr}
    for key, lr in lrs.items():
        if lr is not None and lr != 1.0:
            messages.append(f"optimizer.{key}: {opt.type} finds its own step size and wants 1.0, not {lr:g}")
    if opt.unet_lr is not None and opt.text_encoder_lr is not None and opt.unet_lr != opt.text_encoder_lr:
        messages.append(
            f"optimizer.text_encoder_lr: {opt.type} uses only the first LR group, so separate "
            "U-Net and text encoder LRs are not honoured"
        )
    return messages


def check_clip_skip(cfg: Config) -> list[str]:
    tr, fam, variant = cfg.training, cfg.model.family, cfg.model.variant
    if fam == "sd15" and tr.clip_skip != 2:
        return [f"training.clip_skip: {tr.clip_skip} on SD1.5; SeaArt advises 2 (anime models are trained with it)"]
    if fam == "sdxl" and tr.clip_skip != 1 and variant != "pony":
        return [
            f"training.clip_skip: {tr.clip_skip} on SDXL; SDXL training ignores it (only samples use it), "
            "SeaArt advises 1"
        ]
    return []


def check_precision(cfg: Config) -> list[str]:
    if cfg.training.mixed_precision == "fp16" and cfg.model.family in ("sdxl", "flux"):
        return [
            f"training.mixed_precision: fp16 on {cfg.model.family} risks NaN loss and black samples; "
            "use bf16 where the GPU supports it"
        ]
    return []


def check_batch_size(cfg: Config) -> list[str]:
    bs = cfg.training.batch_size
    if bs >= 8:
        return [
            f"training.batch_size: {bs} averages features across many images and needs much more VRAM; "
            "SeaArt advises starting at 2"
        ]
    return []


def check_unused_learning_rates(cfg: Config) -> list[str]:
    opt, net = cfg.optimizer, cfg.network
    messages = []
    if net.train_unet_only and opt.text_encoder_lr is not None:
        messages.append("optimizer.text_encoder_lr: ignored because network.train_unet_only = true")
    if net.train_text_encoder_only and opt.unet_lr is not None:
        messages.append("optimizer.unet_lr: ignored because network.train_text_encoder_only = true")
    if opt.type == "Adafactor" and "relative_step" in opt.args and opt.args["relative_step"] is True:
        messages.append(
            "optimizer.args: Adafactor with relative_step = true ignores learning_rate, unet_lr, "
            "text_encoder_lr and the scheduler"
        )
    return messages


def check_noise(cfg: Config) -> list[str]:
    tr = cfg.training
    if tr.multires_noise_discount is not None and tr.multires_noise_iterations is None:
        return ["training.multires_noise_discount: has no effect without multires_noise_iterations"]
    return []


def check_captions(cfg: Config) -> list[str]:
    tr, trigger = cfg.training, cfg.tagging.trigger_word
    messages = []
    if trigger and tr.shuffle_tags and tr.keep_tokens == 0:
        messages.append(
            f"training.keep_tokens: 0 lets shuffling move the trigger word '{trigger}' away from "
            "the front; set keep_tokens = 1"
        )
    if trigger and cfg.sampling.prompts and not any(trigger in p.text for p in cfg.sampling.prompts):
        messages.append(
            f"sampling.prompts: no prompt contains the trigger word '{trigger}', so the samples "
            "will not show what the LoRA learned"
        )
    return messages


def check_family_quirks(cfg: Config) -> list[str]:
    messages = []
    if cfg.model.family == "flux" and cfg.training.attention != "sdpa":
        messages.append("training.attention: Flux training ignores the attention setting")
    if cfg.optimizer.type == "DAdaptation" or cfg.optimizer.type == "DAdaptAdam":
        messages.append(
            f"optimizer.type: {cfg.optimizer.type} needs the 'dadaptation' package, which "
            "sd-scripts does not install; run `pip install dadaptation` in its interpreter"
        )
    if cfg.save.every_n_epochs >= cfg.training.epochs and cfg.training.epochs > 1:
        messages.append(
            f"save.every_n_epochs: {cfg.save.every_n_epochs} with {cfg.training.epochs} epochs "
            "saves only the last epoch, so there is nothing to compare"
        )
    if cfg.model.family == "sdxl" and cfg.model.v_prediction and cfg.model.variant not in ("noobai-vpred",):
        messages.append(
            "model.v_prediction: set only for v-prediction checkpoints; an eps model trained as "
            "v-prediction learns noise"
        )
    return messages


WARNING_CHECKS: tuple[Check, ...] = (
    check_alpha_vs_dim,
    check_adaptive_lr,
    check_clip_skip,
    check_precision,
    check_batch_size,
    check_unused_learning_rates,
    check_noise,
    check_captions,
    check_family_quirks,
)
