"""Tests for kohya_wrap.train.render: the files sd-scripts reads, checked against its parser and its TOML reader."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import toml
import yaml
from sample_data import write_images, write_models

from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import load_config, templates_dir, validate
from kohya_wrap.data.dataset import StepPlan, plan_steps, scan
from kohya_wrap.errors import ConfigError
from kohya_wrap.train import sd_args
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.render import Rendered, optimizer_arg_text, render, toml_string

PRESETS = sorted(p.stem for p in templates_dir().glob("*.toml"))
# The strings sd-scripts' reader (toml 0.10.2) and tomllib must both read back exactly.
NASTY = 'it\'s "quoted" \\back\\slash\\ ]x[ #hash, =eq {b} 日本語 \\u0041 end\\'


def plan_of(total_steps: int = 100, processes: int = 1, validation_images: int = 0) -> StepPlan:
    return StepPlan(
        images=10,
        images_with_repeats=total_steps,
        reg_images_with_repeats=0,
        batch_size=1,
        batches_per_epoch=total_steps,
        epochs=1,
        num_processes=processes,
        total_steps=total_steps,
        buckets=(((512, 512), total_steps),),
        validation_images=validation_images,
    )


def make_config(family: str = "sd15", **values: Any) -> Config:
    """A config for `family` with `values` by dotted key given as `section__key`."""
    doc: dict[str, Any] = {
        "model": {"family": family, "base": "/m/base.safetensors"},
        "dataset": {"dirs": [{"path": "/data/20_zdm 1boy"}]},
    }
    if family == "flux":
        doc["model"] |= {k: f"/m/{k}.safetensors" for k in ("clip_l", "t5xxl", "ae")}
    for key, value in values.items():
        section, name = key.split("__")
        doc.setdefault(section, {})[name] = value
    return validate(doc)


def rendered(cfg: Config, plan: StepPlan | None = None, root: Path = Path("/runs/zdm-1")) -> Rendered:
    return render(cfg, RunLayout(root), plan or plan_of())


def read_back(text: str) -> dict[str, Any]:
    """The document as tomllib reads it, after checking sd-scripts' toml 0.10.2 reads the same."""
    ours = tomllib.loads(text)
    assert toml.loads(text) == ours
    return ours


def train_args(out: Rendered, root: Path = Path("/runs/zdm-1")) -> dict[str, Any]:
    """The flat namespace sd-scripts builds from train.toml."""
    text = out.files(RunLayout(root))["train.toml"]
    return sd_args.flatten_training_toml(read_back(text))


def preset_config(name: str, tmp_path: Path, *sets: str) -> tuple[Config, StepPlan]:
    family = tomllib.loads((templates_dir() / f"{name}.toml").read_text("utf-8"))["model"]["family"]
    models = write_models(tmp_path / "models")
    folder = tmp_path / "20_zdm 1boy"
    write_images(folder, [(64, 64)] * 3)
    overrides = [f"model.base={models['base']}", f'dataset.dirs=[{{path = "{folder}"}}]']
    if family == "flux":
        overrides += [f"model.{k}={models[k]}" for k in ("clip_l", "t5xxl", "ae")]
    cfg = load_config(None, [*overrides, *sets], name).config
    return cfg, plan_steps(cfg, scan(cfg))


# ---- every preset renders inside the sd-scripts contract ------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_renders_only_known_arguments_with_valid_values(name: str, tmp_path: Path) -> None:
    cfg, plan = preset_config(name, tmp_path)
    out = render(cfg, RunLayout(tmp_path / "run"), plan)
    script = sd_args.SCRIPT_BY_FAMILY[cfg.model.family]
    assert out.script == script
    args = train_args(out, tmp_path / "run")
    assert sd_args.check_training_args(script, args) == []
    # The values sd-scripts' parser defaults get wrong for a LoRA are always written out.
    for key in (
        "learning_rate",
        "network_alpha",
        "network_dim",
        "max_train_steps",
        "network_module",
        "console_log_simple",
        "output_name",
        "save_precision",
        "mixed_precision",
    ):
        assert key in args, key
    assert args["network_module"] == ("networks.lora_flux" if cfg.model.family == "flux" else "networks.lora")
    assert args["max_train_steps"] == plan.total_steps
    dataset = read_back(out.files(RunLayout(tmp_path / "run"))["dataset.toml"])
    assert dataset["general"]["caption_extension"] == ".txt"
    assert dataset["datasets"][0]["enable_bucket"] is True


# Configs that switch on every option render touches, per family.
FULL_OPTIONS: dict[str, dict[str, Any]] = {
    "sd15": {
        "network__conv_dim": 8,
        "network__block_dims": [4] * 25,
        "network__block_alphas": [2] * 25,
        "network__block_lr_weights": {"down": "cosine", "mid": [0.5], "up": [1.0] * 12},
        "optimizer__unet_lr": 1e-4,
        "optimizer__text_encoder_lr": 5e-5,
        "optimizer__min_snr_gamma": 5,
        "optimizer__args": {"weight_decay": 0.01, "betas": [0.9, 0.99]},
        "optimizer__warmup_percent": 5,
        "training__weighted_captions": True,
        "training__max_token_length": 225,
        "training__noise_offset": 0.05,
        "training__multires_noise_iterations": 6,
        "training__multires_noise_discount": 0.3,
        "training__cache_latents": False,
        "training__attention": "xformers",
        "tagging__trigger_word": "zdm",
        "sampling__prompts": [{"text": "zdm", "negative": "lowres"}],
        "model__vae": "/m/vae.safetensors",
        "model__tokenizer_cache_dir": "/m/tok",
        "run__extra_args": {"max_grad_norm": 0.5},
    },
    "sdxl": {
        "model__variant": "noobai-vpred",
        "network__train_unet_only": True,
        "network__block_dims": [4] * 23,
        "network__block_lr_weights": {"down": [1.0] * 9, "mid": [1.0] * 3, "up": "linear"},
        "training__cache_text_encoder_outputs": True,
        "training__shuffle_tags": False,
        "training__fp8_base": True,
        "optimizer__type": "Adafactor",
        "optimizer__scheduler": "constant_with_warmup",
        "optimizer__warmup_percent": 10,
        "sampling__prompts": [{"text": "zdm", "width": 832, "height": 1216}],
        "training__clip_skip": 2,
    },
    "flux": {
        "flux__blocks_to_swap": 18,
        "flux__apply_t5_attn_mask": True,
        "flux__timestep_sampling": "shift",
        "flux__discrete_flow_shift": 3.1582,
        "training__fp8_base": True,
        "network__conv_dim": 4,
        "training__cache_text_encoder_outputs": True,
        "training__shuffle_tags": False,
        "optimizer__type": "Prodigy",
        "optimizer__learning_rate": 1.0,
        "optimizer__args": {"decouple": True},
        "sampling__prompts": [{"text": "zdm", "cfg": 3.5}],
        "run__num_processes": 2,
        "run__gpu_ids": [0, 1],
    },
}


@pytest.mark.parametrize("family", sorted(FULL_OPTIONS))
def test_every_option_renders_inside_the_contract(family: str) -> None:
    out = rendered(make_config(family, **FULL_OPTIONS[family]))
    args = train_args(out)
    assert sd_args.check_training_args(sd_args.SCRIPT_BY_FAMILY[family], args) == []


def test_sd15_train_toml_exactly() -> None:
    cfg = make_config(
        "sd15",
        tagging__trigger_word="zdm",
        sampling__prompts=[{"text": "zdm, 1boy"}],
        optimizer__text_encoder_lr=5e-5,
        optimizer__warmup_percent=5,
    )
    files = rendered(cfg, plan_of(300)).files(RunLayout(Path("/runs/zdm-1")))
    assert (
        files["train.toml"]
        == f"""\
# Written by kohya_wrap from config.toml; edit the config, not this file.
[model]
pretrained_model_name_or_path = "/m/base.safetensors"

[dataset]
dataset_config = "/runs/zdm-1/dataset.toml"

[network]
network_module = "networks.lora"
network_dim = 16
network_alpha = 8.0

[optimizer]
optimizer_type = "AdamW8bit"
learning_rate = 0.0001
text_encoder_lr = [5e-05]
lr_scheduler = "cosine_with_restarts"
lr_warmup_steps = 15
lr_scheduler_num_cycles = 1

[training]
max_train_epochs = 10
max_train_steps = 300
mixed_precision = "fp16"
seed = 42
gradient_checkpointing = false
cache_latents = true
clip_skip = 2
sdpa = true
max_data_loader_n_workers = 0

[saving]
output_dir = "/runs/zdm-1/output"
output_name = "zdm"
save_model_as = "safetensors"
save_precision = "fp16"
save_every_n_epochs = 1
save_state = true
training_comment = "kohya_wrap config {out_hash(cfg)}"
metadata_title = "zdm"
metadata_trigger_phrase = "zdm"

[sampling]
sample_prompts = "/runs/zdm-1/prompts.json"
sample_every_n_epochs = 1
sample_sampler = "euler_a"

[logging]
logging_dir = "/runs/zdm-1/logs"
log_with = "tensorboard"
console_log_simple = true
"""
    )
    assert (
        files["dataset.toml"]
        == """\
# Written by kohya_wrap from config.toml; edit the config, not this file.
[general]
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1

[[datasets]]
resolution = 512
batch_size = 2
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64

[[datasets.subsets]]
image_dir = "/data/20_zdm 1boy"
num_repeats = 20
is_reg = false
class_tokens = "zdm 1boy"
"""
    )


def out_hash(cfg: Config) -> str:
    from kohya_wrap.train.render import config_hash

    return config_hash(cfg)


# ---- single options -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "total", "processes", "steps"),
    [(0, 300, 1, 0), (5, 300, 1, 15), (10, 700, 1, 70), (2.5, 101, 1, 3), (10, 150, 2, 30), (5, 100, 4, 20)],
)
def test_warmup_percent_becomes_scheduler_steps(percent: float, total: int, processes: int, steps: int) -> None:
    # With N processes accelerate steps the scheduler N times per step, and sd-scripts schedules over
    # max_train_steps × N (get_scheduler_fix), so the warmup counts in those steps too.
    cfg = make_config(
        optimizer__scheduler="constant_with_warmup",
        optimizer__warmup_percent=percent,
        run__num_processes=processes,
        run__gpu_ids=list(range(processes)),
    )
    warmup = train_args(rendered(cfg, plan_of(total, processes)))["lr_warmup_steps"]
    assert (warmup, type(warmup)) == (steps, int)


def test_block_wise_settings_go_into_network_args() -> None:
    cfg = make_config(
        network__conv_dim=8,
        network__conv_alpha=2,
        network__block_dims=[4] * 24 + [8],
        network__block_alphas=[2] * 25,
        network__block_lr_weights={"down": [0.5] * 12, "mid": [0.25], "up": "reverse_linear"},
    )
    args = train_args(rendered(cfg))
    assert args["network_args"] == [
        "conv_dim=8",
        "conv_alpha=2.0",
        "block_dims=" + ",".join(["4"] * 24 + ["8"]),
        "block_alphas=" + ",".join(["2.0"] * 25),
        "down_lr_weight=" + ",".join(["0.5"] * 12),
        "mid_lr_weight=0.25",
        "up_lr_weight=reverse_linear",
    ]
    assert not {"block_dims", "conv_dim", "down_lr_weight"} & set(args)


def test_no_network_args_without_block_wise_settings() -> None:
    assert "network_args" not in train_args(rendered(make_config()))


@pytest.mark.parametrize(
    ("value", "python"),
    [
        (0.01, 0.01),
        (3, 3),
        (True, True),
        (False, False),
        ("cosine", "cosine"),
        ('it\'s "x"', 'it\'s "x"'),
        ("日本語, [x]", "日本語, [x]"),
        ([0.9, 0.999], (0.9, 0.999)),
        ([0.9], (0.9,)),
        ([], ()),
        ([1, 2], (1.0, 2.0)),
    ],
)
def test_optimizer_args_round_trip_through_sd_scripts_parsing(value: Any, python: Any) -> None:
    cfg = make_config(optimizer__type="AdamW", optimizer__args={"arg": value})
    (text,) = train_args(rendered(cfg))["optimizer_args"]
    assert text == optimizer_arg_text("arg", value)
    # train_util.get_optimizer: `key, value = arg.split("="); value = ast.literal_eval(value)`.
    key, literal = text.split("=")
    assert (key, ast.literal_eval(literal)) == ("arg", python)


def test_adafactor_gets_fixed_lr_args_unless_relative_step_is_set() -> None:
    args = train_args(rendered(make_config(optimizer__type="Adafactor", optimizer__args={"weight_decay": 0.01})))
    assert args["optimizer_args"] == [
        "relative_step=False",
        "scale_parameter=False",
        "warmup_init=False",
        "weight_decay=0.01",
    ]
    args = train_args(rendered(make_config(optimizer__type="Adafactor", optimizer__args={"relative_step": True})))
    assert args["optimizer_args"] == ["relative_step=True"]
    assert "optimizer_args" not in train_args(rendered(make_config(optimizer__type="AdamW")))


def test_learning_rates() -> None:
    args = train_args(
        rendered(make_config(optimizer__learning_rate=2e-4, optimizer__unet_lr=1e-4, optimizer__text_encoder_lr=1e-5))
    )
    assert (args["learning_rate"], args["unet_lr"], args["text_encoder_lr"]) == (2e-4, 1e-4, [1e-5])
    args = train_args(rendered(make_config()))
    assert "unet_lr" not in args and "text_encoder_lr" not in args


@pytest.mark.parametrize(
    ("family", "values", "expected"),
    [
        ("sd15", {}, {"clip_skip": 2}),
        ("sdxl", {}, {}),
        ("sdxl", {"model__variant": "pony"}, {"clip_skip": 2}),
        ("flux", {}, {}),
        ("sdxl", {"model__variant": "noobai-vpred"}, {"v_parameterization": True, "zero_terminal_snr": True}),
        (
            "sd15",
            {"model__v_prediction": True, "training__clip_skip": 2},
            {"clip_skip": 2, "v_parameterization": True},
        ),
    ],
)
def test_family_specific_arguments(family: str, values: dict[str, Any], expected: dict[str, Any]) -> None:
    args = train_args(rendered(make_config(family, **values)))
    keys = ("clip_skip", "v_parameterization", "zero_terminal_snr")
    assert {k: args[k] for k in keys if k in args} == expected


def test_flux_arguments() -> None:
    args = train_args(rendered(make_config("flux", flux__blocks_to_swap=18, flux__apply_t5_attn_mask=True)))
    assert {
        k: args[k]
        for k in (
            "clip_l",
            "t5xxl",
            "ae",
            "guidance_scale",
            "timestep_sampling",
            "model_prediction_type",
            "discrete_flow_shift",
            "apply_t5_attn_mask",
            "blocks_to_swap",
            "network_module",
        )
    } == {
        "clip_l": "/m/clip_l.safetensors",
        "t5xxl": "/m/t5xxl.safetensors",
        "ae": "/m/ae.safetensors",
        "guidance_scale": 1.0,
        "timestep_sampling": "flux_shift",
        "model_prediction_type": "raw",
        "discrete_flow_shift": 3.0,
        "apply_t5_attn_mask": True,
        "blocks_to_swap": 18,
        "network_module": "networks.lora_flux",
    }
    assert not {"sdpa", "xformers", "clip_skip"} & set(args)


@pytest.mark.parametrize(("precision", "written"), [("fp32", "float"), ("fp16", "fp16"), ("bf16", "bf16")])
def test_save_precision(precision: str, written: str) -> None:
    assert train_args(rendered(make_config(save__precision=precision)))["save_precision"] == written


def test_data_loader_workers_follow_latent_caching() -> None:
    args = train_args(rendered(make_config()))
    assert (args["max_data_loader_n_workers"], "persistent_data_loader_workers" in args) == (0, False)
    args = train_args(rendered(make_config(training__cache_latents=False)))
    assert (args["max_data_loader_n_workers"], args["persistent_data_loader_workers"]) == (2, True)


def test_sampling_section_only_with_prompts_and_a_period() -> None:
    assert "sample_prompts" not in train_args(rendered(make_config()))
    cfg = make_config(sampling__prompts=[{"text": "zdm"}], sampling__every_n_epochs=0)
    assert "sample_prompts" not in train_args(rendered(cfg))


def test_every_path_is_absolute(tmp_path: Path) -> None:
    cfg, plan = preset_config(
        "sd15-character", tmp_path, 'sampling.prompts=[{text = "zdm"}]', "model.vae=vae.safetensors"
    )
    out = render(cfg, RunLayout(tmp_path / "run"), plan)
    args = train_args(out, tmp_path / "run")
    dataset = read_back(out.files(RunLayout(tmp_path / "run"))["dataset.toml"])
    paths = [
        args[k]
        for k in (
            "pretrained_model_name_or_path",
            "vae",
            "dataset_config",
            "output_dir",
            "logging_dir",
            "sample_prompts",
        )
    ]
    paths += [s["image_dir"] for s in dataset["datasets"][0]["subsets"]]
    assert all(Path(p).is_absolute() for p in paths), paths
    assert args["dataset_config"] == str(tmp_path / "run" / "dataset.toml")


def test_extra_args_are_checked_and_written_last() -> None:
    out = rendered(make_config(run__extra_args={"max_grad_norm": 0.5, "lr_scheduler_args": [",x", "y=1"]}))
    assert read_back(out.files(RunLayout(Path("/r")))["train.toml"])["extra"] == {
        "max_grad_norm": 0.5,
        "lr_scheduler_args": [",x", "y=1"],
    }
    with pytest.raises(ConfigError) as caught:
        rendered(make_config(run__extra_args={"learning_rate": 1e-3, "max_grad_nrm": 1.0, "max_grad_norm": "1"}))
    assert caught.value.lines == (
        "run.extra_args.learning_rate: kohya_wrap already sets this from the config; use the matching "
        "config key instead",
        "run.extra_args.max_grad_nrm: unknown sd-scripts argument 'max_grad_nrm' for train_network.py (did "
        "you mean 'max_grad_norm'?)",
        "run.extra_args.max_grad_norm: sd-scripts argument 'max_grad_norm' for train_network.py must be "
        "float, got str '1'",
    )


def test_validation_goes_to_the_dataset_and_the_training_file() -> None:
    cfg = make_config(validation__split=0.25, validation__every_n_epochs=2, validation__max_batches=3, training__seed=7)
    out = rendered(cfg, plan_of(validation_images=3))
    dataset = read_back(out.files(RunLayout(Path("/r")))["dataset.toml"])["datasets"][0]
    assert (dataset["validation_split"], dataset["validation_seed"]) == (0.25, 7)
    args = train_args(out)
    assert (args["validate_every_n_epochs"], args["max_validation_steps"]) == (2, 3)
    assert sd_args.check_training_args("train_network.py", args) == []
    # The seed is written even when only the training seed gives it: sd-scripts would otherwise cut the
    # training and validation images from two different shuffles.
    split = make_config(validation__split=0.25)
    default_seed = rendered(split, plan_of(validation_images=3)).files(RunLayout(Path("/r")))["dataset.toml"]
    assert read_back(default_seed)["datasets"][0]["validation_seed"] == 42


def test_validation_off_writes_nothing_and_cannot_be_passed_around() -> None:
    for out in (rendered(make_config()), rendered(make_config(validation__split=0.25), plan_of(validation_images=0))):
        # Off, or on for a dataset that holds out no image worth measuring (scan says so).
        assert "valid" not in "".join(out.files(RunLayout(Path("/r"))).values())
    with pytest.raises(ConfigError) as caught:
        extra = {"validation_split": 0.2, "validate_every_n_epochs": 1, "resolution": "64"}
        rendered(make_config(run__extra_args=extra))
    assert caught.value.lines == tuple(
        f"run.extra_args.{key}: kohya_wrap already sets this from the config; use the matching config key instead"
        for key in ("validation_split", "validate_every_n_epochs", "resolution")
    )


# ---- TOML that sd-scripts' reader reads back exactly ---------------------------------------------


def test_nasty_strings_round_trip_through_both_toml_readers(tmp_path: Path) -> None:
    folder = tmp_path / "20_zdm 1boy" / NASTY.replace("/", "_")
    write_images(folder, [(64, 64)])
    cfg = validate(
        {
            "model": {"family": "sd15", "base": str(tmp_path / f"{NASTY}.safetensors")},
            "dataset": {"dirs": [{"path": str(folder), "class_token": NASTY}]},
            "tagging": {"trigger_word": NASTY.replace(",", "")},
            "sampling": {"prompts": [{"text": NASTY, "negative": NASTY}]},
            "run": {"extra_args": {"lr_scheduler_args": [NASTY, ",lead", " ,x", "\\u0041"]}},
        }
    )
    root = tmp_path / f"run {NASTY}"
    files = render(cfg, RunLayout(root), plan_of()).files(RunLayout(root))
    dataset = read_back(files["dataset.toml"])
    subset = dataset["datasets"][0]["subsets"][0]
    assert (subset["image_dir"], subset["class_tokens"]) == (str(folder), NASTY)
    args = sd_args.flatten_training_toml(read_back(files["train.toml"]))
    assert args["pretrained_model_name_or_path"] == str(tmp_path / f"{NASTY}.safetensors")
    assert args["metadata_trigger_phrase"] == NASTY.replace(",", "")
    assert args["dataset_config"] == str(root / "dataset.toml")
    assert args["lr_scheduler_args"] == [NASTY, ",lead", " ,x", "\\u0041"]
    prompts = json.loads(files["prompts.json"])
    assert (prompts[0]["prompt"], prompts[0]["negative_prompt"]) == (NASTY, NASTY)


def test_toml_string_is_read_back_by_both_readers_for_every_short_string() -> None:
    alphabet = ["a", '"', "'", "\\", ",", "#", "[", "]", "{", "}", "=", " ", "u", "\t", "日"]
    strings = ["".join(chars) for n in range(4) for chars in itertools.product(alphabet, repeat=n)]
    strings = [s for s in strings if not s.startswith('""') and s != '"']
    for chunk in range(0, len(strings), 500):
        batch = strings[chunk : chunk + 500]
        lines = [f"k{i} = {toml_string(s)}" for i, s in enumerate(batch)]
        array = "a = [" + ", ".join(toml_string(s) for s in batch) + "]"
        text = "\n".join([*lines, array, "[[t]]", *lines]) + "\n"
        expected = {f"k{i}": s for i, s in enumerate(batch)} | {
            "a": batch,
            "t": [{f"k{i}": s for i, s in enumerate(batch)}],
        }
        assert tomllib.loads(text) == expected
        assert toml.loads(text) == expected


def test_a_string_toml_0_10_2_cannot_read_is_refused_by_key() -> None:
    with pytest.raises(ConfigError) as caught:
        rendered(make_config(tagging__trigger_word='""zdm'))
    assert caught.value.lines == (
        "render: saving.metadata_trigger_phrase = '\"\"zdm' cannot be written into train.toml: toml 0.10.2 "
        "cannot read back a string that starts with two double quotes; change it",
    )


# ---- prompts, accelerate, determinism ------------------------------------------------------------


def test_prompts_json_round_trips() -> None:
    cfg = make_config(
        training__seed=100,
        sampling__prompts=[
            {"text": "zdm, 1boy --n x", "negative": "lowres", "steps": 20, "cfg": 5.0},
            {"text": 'zdm "smiling"', "width": 512, "height": 768, "seed": 7},
        ],
    )
    out = rendered(cfg)
    text = out.files(RunLayout(Path("/r")))["prompts.json"]
    assert (
        json.loads(text)
        == out.prompts
        == [
            {
                "prompt": "zdm, 1boy --n x",
                "width": 512,
                "height": 512,
                "sample_steps": 20,
                "seed": 100,
                "negative_prompt": "lowres",
                "scale": 5.0,
            },
            {
                "prompt": 'zdm "smiling"',
                "width": 512,
                "height": 768,
                "sample_steps": 28,
                "seed": 7,
                "scale": 7.0,
            },
        ]
    )


def test_flux_prompts_use_guidance_scale() -> None:
    out = rendered(make_config("flux", sampling__prompts=[{"text": "zdm", "cfg": 3.5}]))
    assert out.prompts == [
        {
            "prompt": "zdm",
            "width": 1024,
            "height": 1024,
            "sample_steps": 28,
            "seed": 42,
            "guidance_scale": 3.5,
        }
    ]


ACCELERATE_BASE = {
    "compute_environment": "LOCAL_MACHINE",
    "debug": False,
    "downcast_bf16": "no",
    "dynamo_config": {},
    "main_training_function": "main",
    "rdzv_backend": "static",
    "same_network": True,
    "tpu_env": [],
    "tpu_use_cluster": False,
    "tpu_use_sudo": False,
    "use_cpu": False,
}


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (
            {},
            {
                "distributed_type": "NO",
                "gpu_ids": "all",
                "machine_rank": 0,
                "mixed_precision": "fp16",
                "num_machines": 1,
                "num_processes": 1,
            },
        ),
        (
            {"num_processes": 2, "gpu_ids": [0, 1]},
            {
                "distributed_type": "MULTI_GPU",
                "gpu_ids": "0,1",
                "machine_rank": 0,
                "mixed_precision": "fp16",
                "num_machines": 1,
                "num_processes": 2,
            },
        ),
        (
            {"num_processes": 4, "num_machines": 2, "machine_rank": 1, "main_process_ip": "10.0.0.1"},
            {
                "distributed_type": "MULTI_GPU",
                "gpu_ids": "all",
                "machine_rank": 1,
                "mixed_precision": "fp16",
                "num_machines": 2,
                "num_processes": 4,
                "main_process_ip": "10.0.0.1",
                "main_process_port": 29500,
            },
        ),
        (
            {"num_processes": 2, "num_machines": 2, "main_process_ip": "node-0", "main_process_port": 1234},
            {
                "distributed_type": "MULTI_GPU",
                "gpu_ids": "all",
                "machine_rank": 0,
                "mixed_precision": "fp16",
                "num_machines": 2,
                "num_processes": 2,
                "main_process_ip": "node-0",
                "main_process_port": 1234,
            },
        ),
    ],
    ids=["single-gpu", "multi-gpu", "multi-node-rank-1", "multi-node-port"],
)
def test_accelerate_yaml(run: dict[str, Any], expected: dict[str, Any]) -> None:
    cfg = make_config(**{f"run__{k}": v for k, v in run.items()})
    text = rendered(cfg).files(RunLayout(Path("/r")))["accelerate.yaml"]
    assert yaml.safe_load(text) == ACCELERATE_BASE | expected


def test_accelerate_mixed_precision_no_stays_a_string() -> None:
    text = rendered(make_config(training__mixed_precision="none")).files(RunLayout(Path("/r")))["accelerate.yaml"]
    assert 'mixed_precision: "no"\n' in text
    assert yaml.safe_load(text)["mixed_precision"] == "no"


def test_rendering_is_deterministic(tmp_path: Path) -> None:
    cfg, plan = preset_config("sdxl-pony-character", tmp_path, 'sampling.prompts=[{text = "zdm"}]')
    layout = RunLayout(tmp_path / "run")
    assert render(cfg, layout, plan).files(layout) == render(cfg, layout, plan).files(layout)
    again, _ = preset_config("sdxl-pony-character", tmp_path, 'sampling.prompts=[{text = "zdm"}]')
    assert render(again, layout, plan).files(layout) == render(cfg, layout, plan).files(layout)


# ---- the real sd-scripts reads what we render ----------------------------------------------------

# Runs in sd-scripts' interpreter (cwd = the checkout): parse each train.toml with the script's own
# parser and config reader, then build the datasets from dataset.toml exactly as train_network.py does.
READ_WITH_SD_SCRIPTS = r"""
import json, sys
from library import config_util, train_util
from library.config_util import BlueprintGenerator, ConfigSanitizer
import train_network

names = json.loads(sys.argv[1])
result = []
for train_toml in sys.argv[2:]:
    parser = train_network.setup_parser()
    argv = ["--config_file", train_toml]
    # read_config_from_file parses sys.argv again, as train_network.py's __main__ does.
    sys.argv = ["train_network.py", *argv]
    args = train_util.read_config_from_file(parser.parse_args(argv), parser)
    train_util.prepare_dataset_args(args, True)
    user_config = config_util.load_user_config(args.dataset_config)
    sanitizer = ConfigSanitizer(True, True, args.masked_loss, True)
    blueprint = BlueprintGenerator(sanitizer).generate(user_config, args)
    group, _ = config_util.generate_dataset_group_by_blueprint(blueprint.dataset_group)
    (dataset,) = group.datasets
    manager = dataset.bucket_manager
    buckets = [[list(reso), len(b)] for reso, b in zip(manager.resos, manager.buckets) if b]
    subsets = [[s.image_dir, s.class_tokens, s.num_repeats, s.caption_extension] for s in dataset.subsets]
    result.append({"batches": len(group), "buckets": buckets, "subsets": subsets,
                   "args": {n: getattr(args, n) for n in names}})
print("RESULT " + json.dumps(result))
"""

# The arguments compared between sd-scripts' namespace and our rendered train.toml.
SD_SCRIPTS_ARGS = [
    "output_name",
    "learning_rate",
    "network_args",
    "optimizer_args",
    "text_encoder_lr",
    "lr_warmup_steps",
    "metadata_trigger_phrase",
    "pretrained_model_name_or_path",
    "network_alpha",
    "network_dim",
]


@pytest.mark.sd_scripts
def test_sd_scripts_reads_our_files_and_counts_our_steps(sd_scripts_dir: Path, tmp_path: Path) -> None:
    models = write_models(tmp_path / "models")
    train = tmp_path / f"20_zdm {NASTY}"
    write_images(train, [(512, 512), (512, 512), (512, 768), (768, 512), (600, 400)])
    reg = tmp_path / "reg"
    write_images(reg, [(512, 768), (512, 512), (512, 512)], caption=None)
    cases = [
        {
            "dataset": {"dirs": [{"path": str(train)}, {"path": str(reg), "repeats": 40, "is_reg": True}]},
            "training": {"batch_size": 2, "epochs": 3},
            "tagging": {"trigger_word": "zdm"},
            "network": {
                "conv_dim": 4,
                "block_lr_weights": {"down": "cosine", "mid": [0.5], "up": [1.0] * 12},
            },
            "optimizer": {
                "type": "Adafactor",
                "text_encoder_lr": 5e-5,
                "warmup_percent": 10,
                "args": {"betas": [0.9], "note": NASTY.replace("=", "")},
            },
        },
        {
            "dataset": {"dirs": [{"path": str(train), "repeats": 3}], "enable_bucket": False},
            "training": {"batch_size": 4},
        },
    ]
    expected, tomls = [], []
    for i, values in enumerate(cases):
        cfg = validate({"model": {"family": "sd15", "base": str(models["base"])}, **values})
        plan = plan_steps(cfg, scan(cfg))
        layout = RunLayout(tmp_path / f"run {i}")
        out = render(cfg, layout, plan)
        layout.root.mkdir()
        for name, text in out.files(layout).items():
            (layout.root / name).write_text(text, encoding="utf-8")
        tomls.append(str(layout.train_toml))
        flat = sd_args.flatten_training_toml(out.training)
        expected.append(
            {
                "batches": plan.batches_per_epoch,
                "buckets": [[list(reso), count] for reso, count in plan.buckets],
                "subsets": [[d.path, d.class_token, d.repeats, ".txt"] for d in cfg.dataset.dirs],
                "args": {name: flat.get(name) for name in SD_SCRIPTS_ARGS},
            }
        )
    done = subprocess.run(
        [sys.executable, "-c", READ_WITH_SD_SCRIPTS, json.dumps(SD_SCRIPTS_ARGS), *tomls],
        cwd=sd_scripts_dir,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    assert json.loads(line.removeprefix("RESULT ")) == expected
