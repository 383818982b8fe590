"""Tests for kohya_wrap.config.models: SeaArt's settings as fields, family defaults, cross-field errors, advice."""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kohya_wrap.config.checks import advice
from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import validate
from kohya_wrap.errors import ConfigError

FLUX_FILES = {"clip_l": "/m/clip_l.safetensors", "t5xxl": "/m/t5xxl.safetensors", "ae": "/m/ae.safetensors"}


def make_doc(family: str = "sd15", values: dict[str, Any] | None = None) -> dict[str, Any]:
    """A minimal valid config document, with `values` set by dotted key (`optimizer.scheduler`)."""
    doc: dict[str, Any] = {
        "model": {"family": family, "base": "/m/base.safetensors"},
        "dataset": {"dirs": [{"path": "/data/20_zdm 1boy"}]},
    }
    if family == "flux":
        doc["model"] |= FLUX_FILES
    for dotted, value in (values or {}).items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)
    return doc


def config(family: str = "sd15", **values: Any) -> Config:
    """Validated config; keyword names use `__` for dots (optimizer__scheduler)."""
    return validate(make_doc(family, {k.replace("__", "."): v for k, v in values.items()}))


def errors(family: str = "sd15", **values: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(family, **values)
    return list(caught.value.lines)


def get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


# ---- every SeaArt setting is a field, with its values and its limits -------------------------------

# (SeaArt setting, our key, a value SeaArt offers, what the config then holds)
SEAART_VALUES = [
    ("batch size", "training.batch_size", 2, 2),
    ("mixed precision none", "training.mixed_precision", "none", "no"),
    ("mixed precision fp16", "training.mixed_precision", "fp16", "fp16"),
    ("mixed precision bf16", "training.mixed_precision", "bf16", "bf16"),
    ("sample size", "sampling.prompts", [{"text": "zdm", "width": 512, "height": 768}], None),
    ("sample steps and seed", "sampling.prompts", [{"text": "zdm", "steps": 20, "seed": 7}], None),
    ("sample sampler", "sampling.sampler", "k_dpm_2_a", "k_dpm_2_a"),
    ("save every N epochs", "save.every_n_epochs", 2, 2),
    ("LoRA save precision fp32", "save.precision", "fp32", "fp32"),
    ("LoRA save precision bf16", "save.precision", "bf16", "bf16"),
    ("learning rate", "optimizer.learning_rate", 2e-4, 2e-4),
    ("U-Net LR", "optimizer.unet_lr", 1e-4, 1e-4),
    ("text encoder LR", "optimizer.text_encoder_lr", 5e-5, 5e-5),
    ("LR warmup %", "optimizer.warmup_percent", 10, 10),
    ("scheduler cosine", "optimizer.scheduler", "cosine", "cosine"),
    ("scheduler linear", "optimizer.scheduler", "linear", "linear"),
    ("scheduler polynomial", "optimizer.scheduler", "polynomial", "polynomial"),
    ("scheduler constant_with_warmup", "optimizer.scheduler", "constant_with_warmup", "constant_with_warmup"),
    ("scheduler constant", "optimizer.scheduler", "constant", "constant"),
    ("optimizer AdamW", "optimizer.type", "AdamW", "AdamW"),
    ("optimizer Adafactor", "optimizer.type", "Adafactor", "Adafactor"),
    ("optimizer Lion", "optimizer.type", "Lion", "Lion"),
    ("optimizer DAdaptation", "optimizer.type", "DAdaptation", "DAdaptation"),
    ("optimizer DAdaptAdam", "optimizer.type", "DAdaptAdam", "DAdaptAdam"),
    ("optimizer Prodigy", "optimizer.type", "Prodigy", "Prodigy"),
    ("restarts", "optimizer.restarts", 3, 3),
    ("train U-Net only", "network.train_unet_only", True, True),
    ("train TE only", "network.train_text_encoder_only", True, True),
    ("min SNR gamma", "optimizer.min_snr_gamma", 5, 5.0),
    ("block-wise dim", "network.block_dims", [4] * 25, [4] * 25),
    ("block-wise LR", "network.block_lr_weights", {"down": "cosine", "mid": [1.0], "up": [0.5] * 12}, None),
    ("network dim", "network.dim", 128, 128),
    ("network alpha", "network.alpha", 64, 64.0),
    ("shuffle tags", "training.shuffle_tags", False, False),
    ("weighted captions", "training.weighted_captions", True, True),
    ("keep N tokens", "training.keep_tokens", 2, 2),
    ("max token length 150", "training.max_token_length", 150, 150),
    ("max token length 225", "training.max_token_length", 225, 225),
    ("noise offset", "training.noise_offset", 0.05, 0.05),
    ("multires noise iterations", "training.multires_noise_iterations", 6, 6),
    ("seed", "training.seed", 1234, 1234),
    ("clip skip", "training.clip_skip", 2, 2),
    ("crop method", "dataset.crop", "center", "center"),
    ("crop size", "dataset.crop_size", 512, None),
    (
        "tagging algorithm",
        "tagging.model",
        "SmilingWolf/wd-swinv2-tagger-v3",
        "SmilingWolf/wd-swinv2-tagger-v3",
    ),
    ("tagging threshold", "tagging.general_threshold", 0.5, 0.5),
    ("character threshold", "tagging.character_threshold", 0.9, 0.9),
    ("trigger word", "tagging.trigger_word", "zdm", "zdm"),
    ("LoRA name", "save.output_name", "zdm_v2", "zdm_v2"),
    ("repeats", "dataset.dirs", [{"path": "/data/zdm", "repeats": 10}], None),
    ("epochs", "training.epochs", 10, 10),
    ("base", "model.base", "/m/pony.safetensors", "/m/pony.safetensors"),
]


@pytest.mark.parametrize(("setting", "key", "value", "held"), SEAART_VALUES, ids=[r[0] for r in SEAART_VALUES])
def test_every_seaart_value_is_accepted(setting: str, key: str, value: Any, held: Any) -> None:
    values = {key: value}
    if key == "dataset.crop_size":
        values["dataset.crop"] = "center"
    if key == "training.multires_noise_iterations":
        values["training.multires_noise_discount"] = 0.3
    cfg = validate(make_doc("sd15", values))
    if held is not None:
        assert get(cfg, key) == held
    else:
        dumped = cfg.model_dump()
        for part in key.split("."):
            dumped = dumped[part]
        stored = dumped if not isinstance(value, list) else dumped[: len(value)]
        if isinstance(value, dict):
            assert {k: stored[k] for k in value} == value
        elif isinstance(value, list):
            assert [{k: item[k] for k in entry} for item, entry in zip(stored, value, strict=True)] == value
        else:
            assert stored == value


def test_sample_prompt_settings_are_kept() -> None:
    prompt = config(
        sampling__prompts=[
            {
                "text": "zdm, 1boy",
                "negative": "lowres",
                "width": 512,
                "height": 768,
                "steps": 20,
                "cfg": 5.5,
                "seed": 7,
            }
        ]
    ).sampling.prompts[0]
    assert (
        prompt.text,
        prompt.negative,
        prompt.width,
        prompt.height,
        prompt.steps,
        prompt.cfg,
        prompt.seed,
    ) == ("zdm, 1boy", "lowres", 512, 768, 20, 5.5, 7)


# (SeaArt setting, our key, a value outside its range, the exact error)
SEAART_LIMITS = [
    (
        "batch size",
        "training.batch_size",
        0,
        "training.batch_size: Input should be greater than or equal to 1",
    ),
    (
        "batch size",
        "training.batch_size",
        300,
        "training.batch_size: Input should be less than or equal to 256",
    ),
    (
        "mixed precision",
        "training.mixed_precision",
        "fp32",
        "training.mixed_precision: Input should be 'no', 'fp16' or 'bf16' (got 'fp32')",
    ),
    (
        "sample size",
        "sampling.prompts",
        [{"text": "zdm", "width": 500}],
        "sampling.prompts.0.width: Input should be a multiple of 8",
    ),
    (
        "sample steps",
        "sampling.prompts",
        [{"text": "zdm", "steps": 0}],
        "sampling.prompts.0.steps: Input should be greater than or equal to 1",
    ),
    (
        "sample prompt",
        "sampling.prompts",
        [{"text": ""}],
        "sampling.prompts.0.text: String should have at least 1 character",
    ),
    (
        "sample sampler",
        "sampling.sampler",
        "dpm++",
        "sampling.sampler: Input should be 'ddim', 'pndm', 'lms', 'euler', 'euler_a', 'heun', 'dpm_2', "
        "'dpm_2_a', 'dpmsolver', 'dpmsolver++', 'dpmsingle', 'k_lms', 'k_euler', 'k_euler_a', 'k_dpm_2' or "
        "'k_dpm_2_a' (got 'dpm++')",
    ),
    (
        "save every N epochs",
        "save.every_n_epochs",
        0,
        "save.every_n_epochs: Input should be greater than or equal to 1",
    ),
    (
        "LoRA save precision",
        "save.precision",
        "fp8",
        "save.precision: Input should be 'fp32', 'fp16' or 'bf16' (got 'fp8')",
    ),
    (
        "learning rate",
        "optimizer.learning_rate",
        0,
        "optimizer.learning_rate: Input should be greater than 0",
    ),
    ("U-Net LR", "optimizer.unet_lr", -1, "optimizer.unet_lr: Input should be greater than or equal to 0"),
    (
        "text encoder LR",
        "optimizer.text_encoder_lr",
        11,
        "optimizer.text_encoder_lr: Input should be less than or equal to 10",
    ),
    (
        "LR warmup %",
        "optimizer.warmup_percent",
        100,
        "optimizer.warmup_percent: Input should be less than 100",
    ),
    (
        "LR warmup %",
        "optimizer.warmup_percent",
        -5,
        "optimizer.warmup_percent: Input should be greater than or equal to 0",
    ),
    (
        "scheduler",
        "optimizer.scheduler",
        "cosine_annealing",
        "optimizer.scheduler: Input should be 'cosine_with_restarts', 'cosine', 'linear', 'polynomial', "
        "'constant_with_warmup' or 'constant' (got 'cosine_annealing')",
    ),
    (
        "optimizer",
        "optimizer.type",
        "adamw",
        "optimizer.type: Input should be 'AdamW', 'AdamW8bit', 'Adafactor', 'Lion', 'DAdaptation', "
        "'DAdaptAdam' or 'Prodigy' (got 'adamw')",
    ),
    ("restarts", "optimizer.restarts", 0, "optimizer.restarts: Input should be greater than or equal to 1"),
    (
        "train U-Net only",
        "network.train_unet_only",
        "maybe",
        "network.train_unet_only: Input should be a valid boolean (got 'maybe')",
    ),
    (
        "min SNR gamma",
        "optimizer.min_snr_gamma",
        0,
        "optimizer.min_snr_gamma: Input should be greater than 0",
    ),
    ("block-wise dim", "network.block_dims", [-1] * 25, "network.block_dims: block dims must be 0 or more"),
    (
        "block-wise LR",
        "network.block_lr_weights",
        {"down": "wavy"},
        "network.block_lr_weights.down: expected a list of numbers or one of 'cosine', 'sine', 'linear', "
        "'reverse_linear', 'zeros', got 'wavy'",
    ),
    ("network dim", "network.dim", 0, "network.dim: Input should be greater than or equal to 1"),
    ("network dim", "network.dim", 2048, "network.dim: Input should be less than or equal to 1024"),
    ("network alpha", "network.alpha", 0, "network.alpha: Input should be greater than 0"),
    (
        "shuffle tags",
        "training.shuffle_tags",
        2,
        "training.shuffle_tags: Input should be a valid boolean (got 2)",
    ),
    (
        "keep N tokens",
        "training.keep_tokens",
        -1,
        "training.keep_tokens: Input should be greater than or equal to 0",
    ),
    (
        "max token length",
        "training.max_token_length",
        100,
        "training.max_token_length: Input should be 75, 150 or 225 (got 100)",
    ),
    (
        "noise offset",
        "training.noise_offset",
        2,
        "training.noise_offset: Input should be less than or equal to 1",
    ),
    (
        "multires iterations",
        "training.multires_noise_iterations",
        0,
        "training.multires_noise_iterations: Input should be greater than or equal to 1",
    ),
    (
        "multires discount",
        "training.multires_noise_discount",
        0,
        "training.multires_noise_discount: Input should be greater than 0",
    ),
    ("seed", "training.seed", -1, "training.seed: Input should be greater than or equal to 0"),
    ("clip skip", "training.clip_skip", 0, "training.clip_skip: Input should be greater than or equal to 1"),
    ("clip skip", "training.clip_skip", 13, "training.clip_skip: Input should be less than or equal to 12"),
    (
        "crop method",
        "dataset.crop",
        "smart",
        "dataset.crop: Input should be 'none', 'center' or 'focus' (got 'smart')",
    ),
    ("crop size", "dataset.crop_size", 32, "dataset.crop_size: Input should be greater than or equal to 64"),
    (
        "tagging threshold",
        "tagging.general_threshold",
        1,
        "tagging.general_threshold: Input should be less than 1",
    ),
    (
        "tagging threshold",
        "tagging.character_threshold",
        0,
        "tagging.character_threshold: Input should be greater than 0",
    ),
    (
        "trigger word",
        "tagging.trigger_word",
        "zdm, 1boy",
        "tagging.trigger_word: must be a non-empty word without commas or newlines",
    ),
    (
        "LoRA name",
        "save.output_name",
        "my lora",
        "save.output_name: use letters, digits, '.', '_' or '-' (up to 100), starting with a letter or digit",
    ),
    (
        "repeats",
        "dataset.dirs",
        [{"path": "/data/zdm", "repeats": 0}],
        "dataset.dirs.0.repeats: Input should be greater than or equal to 1",
    ),
    ("epochs", "training.epochs", 0, "training.epochs: Input should be greater than or equal to 1"),
    ("family", "model.family", "sd3", "model.family: Input should be 'sd15', 'sdxl' or 'flux' (got 'sd3')"),
    ("base", "model.base", "", "model.base: String should have at least 1 character"),
    (
        "caption extension",
        "dataset.caption_extension",
        "t x t",
        "dataset.caption_extension: must be a file extension like .txt",
    ),
]


@pytest.mark.parametrize(
    ("setting", "key", "value", "line"), SEAART_LIMITS, ids=[f"{r[0]}={r[2]!r}" for r in SEAART_LIMITS]
)
def test_every_seaart_setting_is_validated(setting: str, key: str, value: Any, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(make_doc("sd15", {key: value}))
    assert list(caught.value.lines) == [line]


def test_seaart_defaults() -> None:
    cfg = config()
    assert (
        cfg.training.batch_size,
        cfg.save.precision,
        cfg.optimizer.learning_rate,
        cfg.optimizer.scheduler,
        cfg.optimizer.restarts,
        cfg.optimizer.warmup_percent,
        cfg.training.keep_tokens,
        cfg.training.max_token_length,
        cfg.save.every_n_epochs,
    ) == (2, "fp16", 1e-4, "cosine_with_restarts", 1, 0, 1, 75, 1)


def test_required_keys_are_named() -> None:
    assert errors_of({"dataset": {"dirs": [{"path": "/d"}]}}) == ["model: required; add it to the config"]
    assert errors_of({"model": {"family": "sd15"}, "dataset": {"dirs": [{}]}}) == [
        "model.base: required; add it to the config",
        "dataset.dirs.0.path: required; add it to the config",
    ]


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(doc)
    return list(caught.value.lines)


@pytest.mark.parametrize(
    ("doc_values", "line"),
    [
        ({"trainig": {"epochs": 3}}, "trainig: unknown key; did you mean 'training'?"),
        ({"training.epoch": 3}, "training.epoch: unknown key; did you mean 'epochs'?"),
        ({"model.vea": "/m/vae.safetensors"}, "model.vea: unknown key; did you mean 'vae'?"),
        (
            {"dataset.dirs": [{"path": "/d", "repeat": 3}]},
            "dataset.dirs.0.repeat: unknown key; did you mean 'repeats'?",
        ),
        (
            {"sampling.prompts": [{"text": "x", "negative_prompt": "y"}]},
            "sampling.prompts.0.negative_prompt: unknown key; did you mean 'negative'?",
        ),
        (
            {"network.block_lr_weights": {"middle": [1.0]}},
            "network.block_lr_weights.middle: unknown key; did you mean 'mid'?",
        ),
        ({"run.zzz": 1}, "run.zzz: unknown key"),
    ],
)
def test_extra_keys_are_rejected_at_every_level(doc_values: dict[str, Any], line: str) -> None:
    assert errors_of(make_doc("sd15", doc_values)) == [line]


def test_union_errors_read_as_one_line() -> None:
    assert errors(run__gpu_ids="some") == ["run.gpu_ids: expected one of 'all' or a list of integers, got 'some'"]
    assert errors(optimizer__args={"betas": {"a": 1}}) == [
        "optimizer.args.betas: expected true or false, an integer, a number, a string or a list of numbers, "
        "got {'a': 1}"
    ]


# ---- family and variant defaults apply only where the user set nothing -------------------------------

# (family, variant, clip_skip, resolution, mixed_precision, max_bucket_reso, gradient checkpointing, v-pred)
FAMILY_DEFAULTS = [
    ("sd15", None, 2, 512, "fp16", 1024, False, False),
    ("sdxl", None, 1, 1024, "bf16", 2048, True, False),
    ("sdxl", "pony", 2, 1024, "bf16", 2048, True, False),
    ("sdxl", "illustrious", 1, 1024, "bf16", 2048, True, False),
    ("sdxl", "noobai", 1, 1024, "bf16", 2048, True, False),
    ("sdxl", "noobai-vpred", 1, 1024, "bf16", 2048, True, True),
    ("flux", None, None, 1024, "bf16", 2048, True, False),
    ("flux", "schnell", None, 1024, "bf16", 2048, True, False),
]


@pytest.mark.parametrize(
    ("family", "variant", "clip_skip", "resolution", "precision", "max_bucket", "ckpt", "vpred"),
    FAMILY_DEFAULTS,
    ids=[f"{r[0]}-{r[1]}" for r in FAMILY_DEFAULTS],
)
def test_family_and_variant_defaults(
    family: str,
    variant: str | None,
    clip_skip: int | None,
    resolution: int,
    precision: str,
    max_bucket: int,
    ckpt: bool,
    vpred: bool,
) -> None:
    cfg = validate(make_doc(family, {"model.variant": variant} if variant else {}))
    expected_variant = variant or {"sd15": "base", "sdxl": "base", "flux": "dev"}[family]
    assert cfg.model.variant == expected_variant
    assert cfg.training.clip_skip == clip_skip
    assert cfg.dataset.resolution == resolution
    assert cfg.training.mixed_precision == precision
    assert cfg.dataset.min_bucket_reso == 256
    assert cfg.dataset.max_bucket_reso == max_bucket
    assert cfg.training.gradient_checkpointing is ckpt
    assert cfg.model.v_prediction is vpred
    assert (cfg.flux is not None) is (family == "flux")


@pytest.mark.parametrize(
    ("family", "values", "key", "kept"),
    [
        ("sdxl", {"model.variant": "pony", "training.clip_skip": 1}, "training.clip_skip", 1),
        ("sd15", {"training.clip_skip": 1}, "training.clip_skip", 1),
        ("sdxl", {"model.variant": "noobai-vpred", "model.v_prediction": False}, "model.v_prediction", False),
        ("sdxl", {"dataset.resolution": 768}, "dataset.resolution", 768),
        ("sdxl", {"training.mixed_precision": "no"}, "training.mixed_precision", "no"),
        ("sd15", {"training.mixed_precision": "bf16"}, "training.mixed_precision", "bf16"),
        ("sdxl", {"training.gradient_checkpointing": False}, "training.gradient_checkpointing", False),
        ("sdxl", {"dataset.max_bucket_reso": 1536}, "dataset.max_bucket_reso", 1536),
        ("sd15", {"dataset.min_bucket_reso": 320}, "dataset.min_bucket_reso", 320),
        ("sd15", {"network.dim": 32, "network.alpha": 4}, "network.alpha", 4.0),
        ("sd15", {"optimizer.restarts": 4}, "optimizer.restarts", 4),
        ("flux", {"flux": {"guidance_scale": 3.5}}, "flux.guidance_scale", 3.5),
        ("sd15", {"save.output_name": "mine"}, "save.output_name", "mine"),
        (
            "sd15",
            {"dataset.dirs": [{"path": "/d/20_zdm 1boy", "repeats": 3, "class_token": "zdm"}]},
            "dataset.dirs.0.repeats",
            3,
        ),
        (
            "sd15",
            {"dataset.dirs": [{"path": "/d/20_zdm 1boy", "class_token": "zdm"}]},
            "dataset.dirs.0.class_token",
            "zdm",
        ),
    ],
)
def test_user_values_are_never_replaced_by_defaults(family: str, values: dict[str, Any], key: str, kept: Any) -> None:
    assert get(validate(make_doc(family, values)), key) == kept


def test_a_small_resolution_lowers_the_smallest_bucket() -> None:
    cfg = config(dataset__resolution=192, dataset__enable_bucket=False)
    assert (cfg.dataset.min_bucket_reso, cfg.dataset.max_bucket_reso) == (192, 1024)


@pytest.mark.parametrize(("dim", "alpha"), [(16, 8.0), (128, 64.0), (1, 0.5), (5, 2.5)])
def test_alpha_defaults_to_half_the_dim(dim: int, alpha: float) -> None:
    assert config(network__dim=dim).network.alpha == alpha


def test_conv_alpha_defaults_to_half_the_conv_dim() -> None:
    assert config(network__conv_dim=8).network.conv_alpha == 4.0


def test_crop_size_defaults_to_the_resolution_only_when_cropping() -> None:
    assert config(dataset__crop="center").dataset.crop_size == 512
    assert config().dataset.crop_size is None


def test_restarts_default_only_for_cosine_with_restarts() -> None:
    assert config().optimizer.restarts == 1
    assert config(optimizer__scheduler="cosine").optimizer.restarts is None


@pytest.mark.parametrize(
    ("dirs", "name"),
    [
        ([{"path": "/data/20_zdm 1boy"}], "zdm"),
        ([{"path": "/data/20_zdm 1boy/"}], "zdm"),
        ([{"path": "/data/5_yuki"}], "yuki"),
        ([{"path": "/data/my pics!"}], "my_pics"),
        ([{"path": "/data/__"}], "lora"),
        ([{"path": "/data/1_person", "is_reg": True}, {"path": "/data/10_aki girl"}], "aki"),
        ([{"path": "/data/キャラ"}], "lora"),
    ],
)
def test_output_name_defaults_to_the_dataset_name(dirs: list[dict[str, Any]], name: str) -> None:
    assert config(dataset__dirs=dirs).output_name == name


def test_kohya_folder_names_give_repeats_and_class_token() -> None:
    cfg = config(dataset__dirs=[{"path": "/data/20_zdm 1boy"}, {"path": "/data/plain"}, {"path": "/data/x_y"}])
    assert [(d.repeats, d.class_token) for d in cfg.dataset.dirs] == [(20, "zdm 1boy"), (1, None), (1, None)]


# ---- errors: what cannot work --------------------------------------------------------------------

FLUX_NEEDS = [
    "model.clip_l: Flux needs the clip_l file; set model.clip_l to its path",
    "model.t5xxl: Flux needs the t5xxl file; set model.t5xxl to its path",
    "model.ae: Flux needs the ae file; set model.ae to its path",
]


def flux_ignored(key: str) -> str:
    return f"{key}: Flux training does not support this setting (sd-scripts would ignore or reject it); remove it"


CHECK_ERRORS = [
    # check_scheduler
    (
        "sd15",
        {"optimizer.scheduler": "constant", "optimizer.warmup_percent": 10},
        [
            "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 or use "
            'scheduler = "constant_with_warmup"'
        ],
    ),
    (
        "sd15",
        {"optimizer.scheduler": "cosine", "optimizer.restarts": 2},
        [
            "optimizer.restarts: only cosine_with_restarts uses restarts; remove it or set "
            'scheduler = "cosine_with_restarts"'
        ],
    ),
    # check_train_parts
    (
        "sd15",
        {"network.train_unet_only": True, "network.train_text_encoder_only": True},
        ["network.train_unet_only: cannot be combined with network.train_text_encoder_only; keep at most one of them"],
    ),
    # check_variant
    ("sd15", {"model.variant": "pony"}, ["model.variant: 'pony' is not a sd15 variant; use one of base"]),
    (
        "sdxl",
        {"model.variant": "ponyv6"},
        ["model.variant: 'ponyv6' is not a sdxl variant; use one of base, pony, illustrious, noobai, noobai-vpred"],
    ),
    # check_flux_files
    ("flux", {"model.clip_l": None, "model.t5xxl": None, "model.ae": None}, FLUX_NEEDS),
    ("flux", {"model.t5xxl": None}, [FLUX_NEEDS[1]]),
    (
        "sd15",
        {"model.clip_l": "/m/clip_l.safetensors"},
        ["model.clip_l: only Flux uses a separate clip_l file; remove it for sd15"],
    ),
    (
        "sdxl",
        {"flux": {"guidance_scale": 1.0}},
        ['flux: the [flux] section applies only to model.family = "flux"; remove it'],
    ),
    # check_v_prediction
    (
        "flux",
        {"model.v_prediction": True},
        ["model.v_prediction: Flux is a flow model and has no v-prediction; remove it"],
    ),
    # check_family_options
    ("flux", {"training.weighted_captions": True}, [flux_ignored("training.weighted_captions")]),
    ("flux", {"training.noise_offset": 0.05}, [flux_ignored("training.noise_offset")]),
    (
        "flux",
        {"training.multires_noise_iterations": 6, "training.multires_noise_discount": 0.3},
        [
            flux_ignored("training.multires_noise_iterations"),
            flux_ignored("training.multires_noise_discount"),
        ],
    ),
    ("flux", {"optimizer.min_snr_gamma": 5}, [flux_ignored("optimizer.min_snr_gamma")]),
    ("flux", {"training.clip_skip": 2}, [flux_ignored("training.clip_skip")]),
    ("flux", {"training.max_token_length": 225}, [flux_ignored("training.max_token_length")]),
    (
        "flux",
        {"network.block_dims": [4] * 25, "network.block_alphas": [2] * 25},
        [flux_ignored("network.block_dims"), flux_ignored("network.block_alphas")],
    ),
    ("flux", {"network.block_lr_weights": {"mid": [1.0]}}, [flux_ignored("network.block_lr_weights")]),
    # check_text_encoder_cache
    (
        "sd15",
        {"training.cache_text_encoder_outputs": True, "training.shuffle_tags": False},
        ["training.cache_text_encoder_outputs: only SDXL and Flux can cache text encoder outputs; remove it"],
    ),
    (
        "sdxl",
        {"training.cache_text_encoder_outputs": True, "network.train_unet_only": True},
        [
            "training.shuffle_tags: cached text encoder outputs cannot shuffle tags; set shuffle_tags = "
            "false or cache_text_encoder_outputs = false"
        ],
    ),
    (
        "sdxl",
        {"training.cache_text_encoder_outputs": True, "training.shuffle_tags": False},
        [
            "training.cache_text_encoder_outputs: SDXL can cache text encoder outputs only with "
            "network.train_unet_only = true"
        ],
    ),
    (
        "flux",
        {
            "training.cache_text_encoder_outputs": True,
            "training.shuffle_tags": False,
            "network.train_text_encoder_only": True,
        },
        [
            "training.cache_text_encoder_outputs: cannot train only the text encoder from cached outputs; "
            "turn one of them off"
        ],
    ),
    # check_fp8
    (
        "sd15",
        {"training.fp8_base": True},
        ["training.fp8_base: only SDXL and Flux support fp8 base weights; remove it"],
    ),
    (
        "sdxl",
        {"training.fp8_base": True, "training.mixed_precision": "none"},
        ["training.fp8_base: needs mixed_precision fp16 or bf16"],
    ),
    # check_block_wise
    ("sd15", {"network.block_dims": [4] * 23}, ["network.block_dims: sd15 needs 25 values, got 23"]),
    ("sdxl", {"network.block_dims": [4] * 25}, ["network.block_dims: sdxl needs 23 values, got 25"]),
    ("sd15", {"network.block_alphas": [2] * 25}, ["network.block_alphas: needs network.block_dims"]),
    (
        "sdxl",
        {"network.block_dims": [4] * 23, "network.block_alphas": [2] * 22},
        ["network.block_alphas: sdxl needs 23 values, got 22"],
    ),
    (
        "sd15",
        {"network.block_lr_weights": {"down": [1.0] * 9, "mid": [1.0] * 3, "up": [1.0] * 9}},
        [
            "network.block_lr_weights.down: sd15 needs 12 values, got 9",
            "network.block_lr_weights.mid: sd15 needs 1 values, got 3",
            "network.block_lr_weights.up: sd15 needs 12 values, got 9",
        ],
    ),
    (
        "sdxl",
        {"network.block_lr_weights": {"down": [1.0] * 12}},
        ["network.block_lr_weights.down: sdxl needs 9 values, got 12"],
    ),
    (
        "sd15",
        {"network.block_lr_weights": {"mid": [-1.0]}},
        ["network.block_lr_weights.mid: weights must be 0 or more"],
    ),
    (
        "sd15",
        {"network.block_lr_weights": {}},
        ["network.block_lr_weights: set at least one of down, mid, up"],
    ),
    ("sd15", {"network.conv_alpha": 4}, ["network.conv_alpha: needs network.conv_dim"]),
    # check_learning_rates
    (
        "sd15",
        {"network.train_unet_only": True, "optimizer.unet_lr": 0},
        ["optimizer.unet_lr: is 0 while only the U-Net is trained, so nothing would learn"],
    ),
    (
        "sd15",
        {"network.train_text_encoder_only": True, "optimizer.text_encoder_lr": 0},
        ["optimizer.text_encoder_lr: is 0 while only the text encoder is trained"],
    ),
    # check_buckets
    ("sd15", {"dataset.resolution": 516}, ["dataset.resolution: 516 must be a multiple of 8 (64 is best)"]),
    (
        "sd15",
        {"dataset.min_bucket_reso": 640},
        ["dataset.min_bucket_reso: 640 is above the resolution 512; lower it"],
    ),
    (
        "sdxl",
        {"dataset.max_bucket_reso": 896},
        ["dataset.max_bucket_reso: 896 is below the resolution 1024; raise it"],
    ),
    (
        "sd15",
        {"dataset.min_bucket_reso": 200, "dataset.max_bucket_reso": 1000},
        [
            "dataset.min_bucket_reso: must be a multiple of 64 (the bucket step)",
            "dataset.max_bucket_reso: must be a multiple of 64 (the bucket step)",
        ],
    ),
    (
        "sd15",
        {"dataset.crop_size": 512},
        ['dataset.crop_size: only used with crop = "center" or "focus"; remove it'],
    ),
    (
        "sd15",
        {"dataset.dirs": [{"path": "/d/reg", "is_reg": True}]},
        ["dataset.dirs: every folder is is_reg = true; add a folder of training images"],
    ),
    (
        "sd15",
        {"dataset.dirs": [{"path": "/d/a"}, {"path": "/d/a"}]},
        ["dataset.dirs: '/d/a' is listed twice (sd-scripts would skip the second)"],
    ),
    # check_sampling
    (
        "sd15",
        {"sampling.prompts": [{"text": "zdm\n1boy", "negative": "a\rb"}]},
        [
            "sampling.prompts.0.text: must be a single line",
            "sampling.prompts.0.negative: must be a single line",
        ],
    ),
    (
        "sd15",
        {"sampling.prompts": [{"text": "zdm"}], "sampling.every_n_epochs": 11},
        [
            "sampling.every_n_epochs: 11 is more than training.epochs (10), so no samples would be made; "
            "lower it or set 0"
        ],
    ),
    # check_distributed
    (
        "sd15",
        {"run.num_machines": 2, "run.num_processes": 2},
        ["run.main_process_ip: a multi-machine run needs the main machine's address"],
    ),
    ("sd15", {"run.machine_rank": 1}, ["run.machine_rank: must be below run.num_machines (1)"]),
    (
        "sd15",
        {"run.num_machines": 4, "run.num_processes": 2, "run.main_process_ip": "10.0.0.1"},
        ["run.num_processes: counts processes on all machines, so it cannot be below num_machines"],
    ),
    ("sd15", {"run.num_processes": 2, "run.gpu_ids": [0]}, ["run.gpu_ids: lists 1 GPUs for 2 processes"]),
    (
        "sd15",
        {"run.num_processes": 2, "run.gpu_ids": [1, 1]},
        ["run.gpu_ids: must be distinct GPU indices (0, 1, …)"],
    ),
    # settings field validators
    (
        "sd15",
        {"optimizer.args": {"betas": "0.9=1"}},
        ["optimizer.args: the value of 'betas' cannot contain '=' or a newline"],
    ),
    (
        "sd15",
        {"optimizer.args": {"weight decay": 0.1}},
        ["optimizer.args: 'weight decay' is not a valid argument name"],
    ),
    (
        "sd15",
        {"optimizer.args": {"eps": float("nan")}},
        ["optimizer.args: the value of 'eps' must be a finite number"],
    ),
    (
        "sd15",
        {"optimizer.args": {"betas": [0.9, float("inf")]}},
        ["optimizer.args: the value of 'betas' must be a finite number"],
    ),
    # check_extra_args
    (
        "sd15",
        {"run.extra_args": {"cache_latents_to_disk": True, "cache_text_encoder_outputs_to_disk": True}},
        [
            f"run.extra_args.{key}: disk caches beside the images go stale after re-tagging or image edits "
            "and sd-scripts reuses them anyway; remove it (kohya_wrap caches in memory, per run)"
            for key in ("cache_latents_to_disk", "cache_text_encoder_outputs_to_disk")
        ],
    ),
]


@pytest.mark.parametrize(("family", "values", "lines"), CHECK_ERRORS, ids=[str(i) for i in range(len(CHECK_ERRORS))])
def test_check_errors(family: str, values: dict[str, Any], lines: list[str]) -> None:
    assert errors_of(make_doc(family, values)) == lines


def test_all_check_errors_are_reported_together() -> None:
    assert errors(
        optimizer__scheduler="constant",
        optimizer__warmup_percent=5,
        optimizer__restarts=2,
        training__fp8_base=True,
    ) == [
        "optimizer.warmup_percent: the constant scheduler cannot warm up; set it to 0 or use "
        'scheduler = "constant_with_warmup"',
        "optimizer.restarts: only cosine_with_restarts uses restarts; remove it or set "
        'scheduler = "cosine_with_restarts"',
        "training.fp8_base: only SDXL and Flux support fp8 base weights; remove it",
    ]


@pytest.mark.parametrize(
    ("family", "values"),
    [
        ("sd15", {"optimizer.scheduler": "constant_with_warmup", "optimizer.warmup_percent": 10}),
        ("sd15", {"optimizer.scheduler": "constant"}),
        (
            "sdxl",
            {
                "training.cache_text_encoder_outputs": True,
                "training.shuffle_tags": False,
                "network.train_unet_only": True,
            },
        ),
        ("flux", {"training.cache_text_encoder_outputs": True, "training.shuffle_tags": False}),
        ("sdxl", {"training.fp8_base": True}),
        (
            "sd15",
            {
                "network.block_dims": [4] * 25,
                "network.block_alphas": [2] * 25,
                "network.block_lr_weights": {"down": "sine", "mid": [0.5], "up": [1.0] * 12},
            },
        ),
        (
            "sdxl",
            {
                "network.block_dims": [4] * 23,
                "network.block_lr_weights": {"down": [1.0] * 9, "mid": [1.0] * 3},
            },
        ),
        ("sd15", {"dataset.enable_bucket": False, "dataset.resolution": 520}),
        (
            "sd15",
            {
                "run.num_machines": 2,
                "run.num_processes": 4,
                "run.main_process_ip": "10.0.0.1",
                "run.gpu_ids": [0, 1],
            },
        ),
    ],
)
def test_combinations_that_work_are_accepted(family: str, values: dict[str, Any]) -> None:
    assert isinstance(validate(make_doc(family, values)), Config)


# ---- warnings: SeaArt's advice -------------------------------------------------------------------

CHECK_WARNINGS = [
    # check_alpha_vs_dim
    (
        "sd15",
        {"network.dim": 8, "network.alpha": 16},
        ["network.alpha: 16 is above dim 8, which scales updates up; SeaArt advises alpha ≤ dim, commonly dim / 2 = 4"],
    ),
    # check_adaptive_lr
    (
        "sd15",
        {"optimizer.type": "Prodigy"},
        ["optimizer.learning_rate: Prodigy finds its own step size and wants 1.0, not 0.0001"],
    ),
    (
        "sd15",
        {
            "optimizer.type": "DAdaptAdam",
            "optimizer.learning_rate": 1.0,
            "optimizer.unet_lr": 1.0,
            "optimizer.text_encoder_lr": 0.5,
        },
        [
            "optimizer.text_encoder_lr: DAdaptAdam finds its own step size and wants 1.0, not 0.5",
            "optimizer.text_encoder_lr: DAdaptAdam uses only the first LR group, so separate U-Net and text "
            "encoder LRs are not honoured",
            "optimizer.type: DAdaptAdam needs the 'dadaptation' package, which sd-scripts does not install; "
            "run `pip install dadaptation` in its interpreter",
        ],
    ),
    ("sd15", {"optimizer.type": "Prodigy", "optimizer.learning_rate": 1.0}, []),
    # check_clip_skip
    (
        "sd15",
        {"training.clip_skip": 1},
        ["training.clip_skip: 1 on SD1.5; SeaArt advises 2 (anime models are trained with it)"],
    ),
    (
        "sdxl",
        {"training.clip_skip": 2},
        ["training.clip_skip: 2 on SDXL; SDXL training ignores it (only samples use it), SeaArt advises 1"],
    ),
    ("sdxl", {"model.variant": "pony"}, []),
    ("sdxl", {"model.variant": "pony", "training.clip_skip": 1}, []),
    # check_precision
    (
        "sdxl",
        {"training.mixed_precision": "fp16"},
        ["training.mixed_precision: fp16 on sdxl risks NaN loss and black samples; use bf16 where the GPU supports it"],
    ),
    (
        "flux",
        {"training.mixed_precision": "fp16"},
        ["training.mixed_precision: fp16 on flux risks NaN loss and black samples; use bf16 where the GPU supports it"],
    ),
    ("sd15", {"training.mixed_precision": "fp16"}, []),
    # check_batch_size
    (
        "sd15",
        {"training.batch_size": 8},
        [
            "training.batch_size: 8 averages features across many images and needs much more VRAM; SeaArt "
            "advises starting at 2"
        ],
    ),
    ("sd15", {"training.batch_size": 7}, []),
    # check_unused_learning_rates
    (
        "sd15",
        {"network.train_unet_only": True, "optimizer.text_encoder_lr": 1e-5},
        ["optimizer.text_encoder_lr: ignored because network.train_unet_only = true"],
    ),
    (
        "sd15",
        {"network.train_text_encoder_only": True, "optimizer.unet_lr": 1e-4},
        ["optimizer.unet_lr: ignored because network.train_text_encoder_only = true"],
    ),
    (
        "sd15",
        {"optimizer.type": "Adafactor", "optimizer.args": {"relative_step": True}},
        [
            "optimizer.args: Adafactor with relative_step = true ignores learning_rate, unet_lr, "
            "text_encoder_lr and the scheduler"
        ],
    ),
    # check_noise
    (
        "sd15",
        {"training.multires_noise_discount": 0.3},
        ["training.multires_noise_discount: has no effect without multires_noise_iterations"],
    ),
    ("sd15", {"training.multires_noise_discount": 0.3, "training.multires_noise_iterations": 6}, []),
    # check_captions
    (
        "sd15",
        {"tagging.trigger_word": "zdm", "training.keep_tokens": 0},
        ["training.keep_tokens: 0 lets shuffling move the trigger word 'zdm' away from the front; set keep_tokens = 1"],
    ),
    ("sd15", {"tagging.trigger_word": "zdm", "training.keep_tokens": 0, "training.shuffle_tags": False}, []),
    (
        "sd15",
        {"tagging.trigger_word": "zdm", "sampling.prompts": [{"text": "1boy, solo"}]},
        [
            "sampling.prompts: no prompt contains the trigger word 'zdm', so the samples will not show what "
            "the LoRA learned"
        ],
    ),
    # check_family_quirks
    (
        "flux",
        {"training.attention": "xformers"},
        ["training.attention: Flux training ignores the attention setting"],
    ),
    (
        "sd15",
        {"optimizer.type": "DAdaptation", "optimizer.learning_rate": 1.0},
        [
            "optimizer.type: DAdaptation needs the 'dadaptation' package, which sd-scripts does not "
            "install; run `pip install dadaptation` in its interpreter"
        ],
    ),
    (
        "sd15",
        {"save.every_n_epochs": 10},
        ["save.every_n_epochs: 10 with 10 epochs saves only the last epoch, so there is nothing to compare"],
    ),
    ("sd15", {"save.every_n_epochs": 1, "training.epochs": 1}, []),
    (
        "sdxl",
        {"model.v_prediction": True},
        [
            "model.v_prediction: set only for v-prediction checkpoints; an eps model trained as "
            "v-prediction learns noise"
        ],
    ),
    ("sdxl", {"model.variant": "noobai-vpred"}, []),
    # check_validation
    (
        "sd15",
        {"validation.every_n_epochs": 2, "validation.max_batches": 4},
        [
            "validation.every_n_epochs: has no effect while validation.split is 0",
            "validation.max_batches: has no effect while validation.split is 0",
        ],
    ),
    (
        "sd15",
        {"validation.split": 0.2, "validation.every_n_epochs": 3, "save.every_n_epochs": 2},
        [
            "validation.every_n_epochs: only epoch 6 is both validated and saved (save.every_n_epochs = 2, 10 "
            "epochs), so validation loss has no epochs to choose between; make it a divisor of save.every_n_epochs"
        ],
    ),
    ("sd15", {"validation.split": 0.2, "validation.every_n_epochs": 2, "save.every_n_epochs": 4}, []),
    ("sd15", {"validation.split": 0.2, "training.epochs": 1}, []),
]


@pytest.mark.parametrize(
    ("family", "values", "lines"), CHECK_WARNINGS, ids=[str(i) for i in range(len(CHECK_WARNINGS))]
)
def test_check_warnings(family: str, values: dict[str, Any], lines: list[str]) -> None:
    assert advice(validate(make_doc(family, values))) == lines


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux"])
def test_defaults_give_no_warnings(family: str) -> None:
    assert advice(validate(make_doc(family))) == []


def test_mixed_precision_none_means_no() -> None:
    assert config(training__mixed_precision="none").training.mixed_precision == "no"
    assert config(training__mixed_precision="no").training.mixed_precision == "no"


# ---- docs/settings.md names every key -------------------------------------------------------------


def config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every key a config can hold, lists of tables as `dirs[].path`."""
    keys = []
    for name, field in model.model_fields.items():
        inner = next(
            (
                a
                for a in (field.annotation, *typing.get_args(field.annotation))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
        listed = typing.get_origin(field.annotation) is list
        if inner is None:
            keys.append(prefix + name)
            continue
        if listed:
            keys.append(prefix + name)
        keys += config_keys(inner, f"{prefix}{name}{'[]' if listed else ''}.")
    return keys


def test_docs_settings_table_names_every_config_key_once() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "settings.md").read_text("utf-8")
    documented = re.findall(r"^\| `([a-z_.\[\]0-9]+)` \|", text, flags=re.MULTILINE)
    assert sorted(documented) == sorted(config_keys())
    assert "network.block_lr_weights.mid" in documented


def test_strings_are_not_numbers_or_booleans() -> None:
    # A TOML file says what type it means: "10" and "no" are strings, never silently converted.
    base = {"model": {"family": "sd15", "base": "m"}, "dataset": {"dirs": [{"path": "d"}]}}
    for section, key, value in (("training", "epochs", "10"), ("training", "shuffle_tags", "no")):
        with pytest.raises(ConfigError, match=f"{section}.{key}: Input should be a valid"):
            validate({**base, section: {key: value}})
