"""Tests for kohya_wrap.train.sd_args: the packaged spec and the training-key checks against it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kohya_wrap.train.sd_args import (
    SCRIPT_BY_FAMILY,
    ArgOption,
    check_training_args,
    flatten_training_toml,
    load_spec,
)

SD15 = "train_network.py"


def test_every_family_script_is_in_the_spec() -> None:
    spec = load_spec()
    assert set(SCRIPT_BY_FAMILY.values()) == set(spec.scripts)
    assert len(spec.sd_scripts_commit) == 40


def test_spec_is_loaded_once() -> None:
    assert load_spec() is load_spec()


def test_known_options_are_recorded_with_their_parser_facts() -> None:
    options = load_spec().options(SD15)
    assert options["network_dim"] == ArgOption(
        dest="network_dim",
        option_strings=("--network_dim",),
        type="int",
        default=None,
        choices=None,
        nargs=None,
        action="store",
    )
    assert options["mixed_precision"].choices == ("no", "fp16", "bf16")
    assert options["mixed_precision"].default == "no"
    assert options["sdpa"].action == "store_true"
    assert options["sdpa"].type == "bool"
    assert options["lr_warmup_steps"].type == "int_or_float"
    assert options["network_args"].is_list
    assert not options["network_dim"].is_list
    assert "help" not in options


def test_sdxl_and_flux_parsers_are_supersets_of_sd15() -> None:
    spec = load_spec()
    sd15 = set(spec.options(SD15))
    assert sd15 < set(spec.options("sdxl_train_network.py"))
    assert sd15 < set(spec.options("flux_train_network.py"))
    assert "t5xxl" in spec.options("flux_train_network.py")


def test_unknown_script_names_the_known_ones() -> None:
    with pytest.raises(ValueError) as info:
        load_spec().options("train_lora.py")
    assert str(info.value) == (
        "no sd-scripts arg spec for 'train_lora.py'; known scripts: "
        "flux_train_network.py, sdxl_train_network.py, train_network.py"
    )


def test_valid_args_give_no_messages() -> None:
    args: dict[str, object] = {
        "network_dim": 16,
        "network_alpha": 8,
        "learning_rate": 1,
        "unet_lr": 1e-4,
        "mixed_precision": "bf16",
        "sdpa": True,
        "cache_latents": False,
        "network_args": ["conv_dim=4", "conv_alpha=1"],
        "text_encoder_lr": [1e-5, 2],
        "lr_warmup_steps": 0.1,
        "lr_decay_steps": 100,
        "dataset_config": "dataset.toml",
        "resolution": "512,512",
    }
    assert check_training_args(SD15, args) == []


def test_unknown_key_suggests_the_closest_option() -> None:
    assert check_training_args(SD15, {"netwrk_dim": 4}) == [
        "unknown sd-scripts argument 'netwrk_dim' for train_network.py (did you mean 'network_dim'?)"
    ]


def test_unknown_key_without_a_close_match() -> None:
    assert check_training_args(SD15, {"zzz_nothing_like_it": 1}) == [
        "unknown sd-scripts argument 'zzz_nothing_like_it' for train_network.py"
    ]


def test_flux_only_option_is_unknown_for_sd15() -> None:
    assert check_training_args("flux_train_network.py", {"t5xxl": "t5.safetensors"}) == []
    assert check_training_args(SD15, {"t5xxl": "t5.safetensors"}) == [
        "unknown sd-scripts argument 't5xxl' for train_network.py"
    ]


def test_value_outside_choices() -> None:
    assert check_training_args(SD15, {"mixed_precision": "fp32"}) == [
        "sd-scripts argument 'mixed_precision' for train_network.py must be one of 'no', 'fp16', 'bf16', got 'fp32'"
    ]


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("network_dim", "16", "must be int, got str '16'"),
        ("network_dim", 16.0, "must be int, got float 16.0"),
        ("network_dim", True, "must be int, got bool True"),
        ("learning_rate", "1e-4", "must be float, got str '1e-4'"),
        ("learning_rate", False, "must be float, got bool False"),
        ("lr_warmup_steps", "10%", "must be int or float, got str '10%'"),
        ("sdpa", 1, "must be bool, got int 1"),
        ("sdpa", "true", "must be bool, got str 'true'"),
        ("output_name", 3, "must be str, got int 3"),
        ("dataset_config", 3, "must be str, got int 3"),
        ("network_args", "conv_dim=4", "must be a list of str, got str 'conv_dim=4'"),
        ("network_args", ["conv_dim=4", 4], "must be a list of str, got list ['conv_dim=4', 4]"),
        ("text_encoder_lr", 1e-5, "must be a list of float, got float 1e-05"),
    ],
)
def test_wrong_toml_type(key: str, value: object, message: str) -> None:
    expected = f"sd-scripts argument {key!r} for train_network.py {message}"
    assert check_training_args(SD15, {key: value}) == [expected]


def test_one_message_per_problem_in_key_order() -> None:
    assert check_training_args(SD15, {"network_dim": "4", "netwrk_alpha": 1, "sdpa": True}) == [
        "sd-scripts argument 'network_dim' for train_network.py must be int, got str '4'",
        "unknown sd-scripts argument 'netwrk_alpha' for train_network.py (did you mean 'network_alpha'?)",
    ]


def test_flatten_merges_top_level_tables_like_sd_scripts() -> None:
    doc: dict[str, object] = {
        "pretrained_model_name_or_path": "model",
        "network": {"network_dim": 4, "network_alpha": 2},
        "optimizer": {"learning_rate": 1e-4, "network_dim": 8},
    }
    assert flatten_training_toml(doc) == {
        "pretrained_model_name_or_path": "model",
        "network_dim": 8,
        "network_alpha": 2,
        "learning_rate": 1e-4,
    }


def test_flatten_is_one_level_only() -> None:
    doc: dict[str, object] = {"a": {"b": {"c": 1}, "d": 2}}
    assert flatten_training_toml(doc) == {"b": {"c": 1}, "d": 2}


def test_import_does_not_pull_in_torch() -> None:
    code = "import sys, kohya_wrap.train.sd_args as m; m.load_spec(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
