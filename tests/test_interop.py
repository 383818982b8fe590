"""Import of kohya_ss / sd-scripts / Civitai settings, export to kohya_ss, and round trips through both."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import test_contract as contract
from click.testing import CliRunner, Result
from filetree import snapshot

from kohya_wrap.cli import main
from kohya_wrap.commands.interop import export_config, import_config, read_settings
from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import validate
from kohya_wrap.errors import ConfigError
from kohya_wrap.interop.importers.draft import OWNED_BY_RENDER
from kohya_wrap.interop.importers.sd_scripts import prompt_from_line, warmup_percent
from kohya_wrap.train.render import warmup_steps

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "interop"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """The fixtures copied into a folder that also holds the kohya-style image folders they name."""
    folder = tmp_path / "in"
    shutil.copytree(FIXTURES, folder)
    for name in ("10_zdm", "5_zdm outfit", "notes"):
        (folder / "IMAGES" / name).mkdir(parents=True)
    return folder


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def lost(path: Path, family: str | None = None) -> list[str]:
    return [fate.describe() for fate in read_settings(path, family).not_carried]


# ---- kohya_ss GUI configs -------------------------------------------------------------------------------


def test_kohya_ss_sdxl_locon_config(inputs: Path) -> None:
    imported = read_settings(inputs / "kohya_ss_sdxl_locon.json")
    assert imported.format == "kohya_ss GUI config"
    assert imported.doc == {
        "model": {"family": "sdxl", "base": "/models/sdxl/base.safetensors", "v_prediction": False},
        "dataset": {
            "resolution": 1024,
            "enable_bucket": True,
            "min_bucket_reso": 256,
            "max_bucket_reso": 2048,
            "caption_extension": ".txt",
            "dirs": [{"path": str(inputs / "IMAGES" / "10_zdm")}, {"path": str(inputs / "IMAGES" / "5_zdm outfit")}],
        },
        "network": {"dim": 32, "alpha": 16.0, "conv_dim": 8, "conv_alpha": 4.0},
        "optimizer": {
            "type": "AdamW8bit",
            "learning_rate": 0.0001,
            "unet_lr": 0.0001,
            "text_encoder_lr": 5e-05,
            "scheduler": "cosine_with_restarts",
            # Empty lr_scheduler_num_cycles: kohya_ss restarts once per epoch.
            "restarts": 12,
            "warmup_percent": 10.0,
            "min_snr_gamma": 5.0,
            "args": {"weight_decay": 0.01, "betas": [0.9, 0.99]},
        },
        "training": {
            "epochs": 12,
            "batch_size": 2,
            "mixed_precision": "bf16",
            "seed": 1234,
            "clip_skip": 1,
            "shuffle_tags": True,
            "keep_tokens": 1,
            "weighted_captions": False,
            "max_token_length": 150,
            # noise_offset_type is Original, so the multires values are not used.
            "noise_offset": 0.0357,
            "gradient_checkpointing": True,
            "cache_latents": True,
            "cache_text_encoder_outputs": False,
            "attention": "sdpa",
        },
        "sampling": {
            "every_n_epochs": 2,
            "sampler": "euler_a",
            "prompts": [
                {
                    "text": "zdm, 1girl, smile",
                    "negative": "lowres, bad hands",
                    "width": 1024,
                    "height": 1280,
                    "steps": 30,
                    "cfg": 6.5,
                    "seed": 123,
                },
                {"text": "zdm, 1girl, full body"},
            ],
        },
        "save": {"output_name": "zdm-sdxl", "every_n_epochs": 2, "precision": "fp16", "save_state": False},
        "run": {
            "cpu_threads_per_process": 2,
            "num_processes": 1,
            "extra_args": {
                "no_half_vae": True,
                "max_grad_norm": 0.5,
                "bucket_no_upscale": True,
                "caption_dropout_rate": 0.05,
            },
        },
    }
    assert [fate.describe() for fate in imported.not_carried] == [
        "additional_parameters: --mystery_flag: NOT CARRIED: not an option of sd-scripts' sdxl_train_network.py",
        "cache_latents_to_disk: NOT CARRIED: disk caches beside the images go stale after re-tagging; kohya_wrap "
        "caches in memory",
        "huggingface_token: secret, dropped (never written)",
        "module_dropout: NOT CARRIED: kohya_wrap has no setting for it",
    ]
    assert imported.notes == (
        f"dataset.dirs: {inputs / 'IMAGES' / 'notes'} is skipped, as kohya does: its name has no `<repeats>_` prefix",
    )
    # Every key of the file has exactly one fate, in the file's order.
    keys = list(json.loads((inputs / "kohya_ss_sdxl_locon.json").read_text("utf-8")))
    seen = [fate.key.partition(":")[0] for fate in imported.fates]
    assert list(dict.fromkeys(seen)) == keys
    validate(imported.doc)


def test_a_kohya_ss_token_never_reaches_the_config(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.toml"
    result = invoke("import", str(inputs / "kohya_ss_sdxl_locon.json"), "-o", str(out))
    assert result.exit_code == 0, result.output
    text = out.read_text("utf-8")
    assert "hf_abcdefSECRETtoken123" not in text + result.output
    assert "#   huggingface_token: secret, dropped (never written)" in text
    assert "  huggingface_token: secret, dropped (never written)" in result.output.splitlines()
    # The written file is a valid kohya_wrap config with the same settings.
    from kohya_wrap.config.presets import load_config

    assert load_config(out).config == validate(read_settings(inputs / "kohya_ss_sdxl_locon.json").doc)


def test_kohya_ss_loha_with_windows_paths(inputs: Path) -> None:
    result = import_config(inputs / "kohya_ss_sd15_loha_windows.json")
    assert result.imported.doc == {
        "model": {
            "family": "sd15",
            "base": "C:\\models\\sd15\\v1-5-pruned.safetensors",
            "vae": "C:\\models\\vae\\vae-ft-mse.safetensors",
        },
        "dataset": {
            "resolution": 512,
            "enable_bucket": False,
            "caption_extension": ".caption",  # kohya_ss's "" leaves sd-scripts' default
            "dirs": [{"path": "D:\\datasets\\zdm"}],
        },
        # A text encoder LR of 0 next to a U-Net LR: kohya_ss trains the U-Net only.
        "network": {"dim": 8, "alpha": 4.0, "train_unet_only": True},
        "optimizer": {"type": "Lion", "learning_rate": 0.0002, "unet_lr": 0.0002, "scheduler": "constant"},
        "training": {
            "epochs": 8,
            "batch_size": 1,
            "mixed_precision": "fp16",
            "clip_skip": 2,
            "shuffle_tags": False,
            "keep_tokens": 0,
            "cache_latents": True,
            "attention": "xformers",
        },
        "save": {"output_name": "loha test", "precision": "fp32"},
    }
    assert [fate.describe() for fate in result.imported.not_carried] == [
        "LoRA_type: NOT CARRIED: LyCORIS/LoHa is not supported; kohya_wrap trains LoRA and LoCon (Kohya LoCon)",
        "wandb_api_key: secret, dropped (never written)",
    ]
    assert result.imported.notes == (
        "model.base: 'C:\\\\models\\\\sd15\\\\v1-5-pruned.safetensors' is a Windows path; change it to where it "
        "is on this machine",
        "dataset.dirs: 'D:\\\\datasets\\\\zdm' is a Windows path; change it to where it is on this machine",
        "dataset.dirs: 'D:\\\\datasets\\\\zdm' is not a folder here; kohya reads the `<repeats>_<name>` folders "
        "inside it, so list each of them in dataset.dirs",
        "model.vae: 'C:\\\\models\\\\vae\\\\vae-ft-mse.safetensors' is a Windows path; change it to where it is on "
        "this machine",
    )
    assert result.config is None
    assert result.problems == (
        "save.output_name: use letters, digits, '.', '_' or '-' (up to 100), starting with a letter or digit",
    )
    fates = {fate.key: fate.describe() for fate in result.imported.fates}
    assert fates["seed"] == "seed: unset: kohya_ss's 0 is a random seed; kohya_wrap always uses one (42)"
    assert fates["conv_dim"] == "conv_dim: ignored: only LoCon uses it (LoRA_type is LyCORIS/LoHa)"
    assert "0123456789abcdef" not in result.text


def test_kohya_ss_sd2_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sd2.json"
    path.write_text(json.dumps({"v2": True, "LoRA_type": "Standard", "pretrained_model_name_or_path": "x"}), "utf-8")
    with pytest.raises(ConfigError) as err:
        read_settings(path)
    assert err.value.lines == ("import: sd2.json trains SD 2.x (v2 = true); kohya_wrap trains SD1.5, SDXL and Flux",)


def test_kohya_ss_gui_value_conventions(tmp_path: Path) -> None:
    """Floats for ints, "False" for flags, lists as one string, and the GUI's folder-name caption trick."""
    path = tmp_path / "gui.json"
    settings = {
        "LoRA_type": "Standard",
        "pretrained_model_name_or_path": "/m/sd15.safetensors",
        "gradient_accumulation_steps": 1.0,
        "vae_batch_size": 0,
        "resume_from_huggingface": "False",
        "lr_scheduler_args": "T_max=100 eta_min=0",
        "caption_extension": ".none-use-foldername",
        "max_grad_norm": 0,
        "network_dropout": "0.1",
    }
    path.write_text(json.dumps(settings), "utf-8")
    imported = read_settings(path)
    assert [fate.describe() for fate in imported.fates] == [
        "LoRA_type: same in kohya_wrap: kohya_wrap trains Standard",
        "pretrained_model_name_or_path → model.base",
        "gradient_accumulation_steps: unset: sd-scripts' default",
        "vae_batch_size: unset: sd-scripts' default",
        "resume_from_huggingface: unset: sd-scripts' default",
        "lr_scheduler_args → run.extra_args.lr_scheduler_args",
        "caption_extension: same in kohya_wrap: kohya_wrap captions images without a caption file with their "
        "folder's name",
        "max_grad_norm → run.extra_args.max_grad_norm",
        "network_dropout → run.extra_args.network_dropout",
    ]
    assert imported.doc["run"] == {
        "extra_args": {"lr_scheduler_args": ["T_max=100", "eta_min=0"], "max_grad_norm": 0.0, "network_dropout": 0.1}
    }


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({"token_string": "zdm", "init_word": "girl"}, "textual inversion"),
        ({"train_text_encoder": True}, "DreamBooth or fine-tuning"),
    ],
)
def test_kohya_ss_configs_of_other_trainers_are_refused(tmp_path: Path, settings: dict[str, Any], kind: str) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"pretrained_model_name_or_path": "x", **settings}), "utf-8")
    with pytest.raises(ConfigError) as err:
        read_settings(path)
    assert err.value.lines == (f"import: other.json is a kohya_ss {kind} config; kohya_wrap imports LoRA configs",)


# ---- sd-scripts TOML and command lines ---------------------------------------------------------------------


def test_sd_scripts_training_toml_with_its_dataset_and_prompts(inputs: Path) -> None:
    imported = read_settings(inputs / "sd_scripts_train.toml", "sdxl")
    assert imported.format == "sd-scripts training TOML"
    assert imported.doc == {
        "model": {"family": "sdxl", "base": "models/ponyDiffusionV6XL.safetensors", "v_prediction": False},
        "dataset": {
            "resolution": 1024,
            "enable_bucket": True,
            "min_bucket_reso": 512,
            "max_bucket_reso": 2048,
            "caption_extension": ".txt",
            "dirs": [
                {"path": "img/20_zdm", "repeats": 20, "class_token": "zdm 1girl"},
                {"path": "reg/1_girl", "repeats": 1, "is_reg": True},
            ],
        },
        "network": {"dim": 16, "alpha": 8.0, "conv_dim": 4, "conv_alpha": 2.0, "block_lr_weights": {"down": "sine"}},
        # kohya_wrap's own Adafactor arguments are its default, so they are not repeated.
        "optimizer": {
            "type": "Adafactor",
            "learning_rate": 0.0003,
            "scheduler": "cosine_with_restarts",
            "restarts": 3,
            "warmup_percent": 5.0,
        },
        "training": {
            "epochs": 6,
            "batch_size": 2,
            "mixed_precision": "bf16",
            "seed": 7,
            "shuffle_tags": True,
            "keep_tokens": 1,
            "noise_offset": 0.05,
            "gradient_checkpointing": True,
            "cache_latents": True,
            "attention": "sdpa",
        },
        "sampling": {
            "every_n_epochs": 3,
            "sampler": "k_euler_a",
            "prompts": [
                {
                    "text": "score_9, zdm, 1girl, smile",
                    "negative": "lowres",
                    "width": 1024,
                    "height": 1024,
                    "steps": 25,
                    "cfg": 7.0,
                    "seed": 1,
                },
                {"text": "score_9, zdm, 1girl, running"},
            ],
        },
        "save": {"output_name": "pony_zdm", "every_n_epochs": 2, "precision": "bf16", "save_state": False},
        "run": {"extra_args": {"huber_c": 0.2, "loss_type": "smooth_l1"}},
    }
    assert [fate.describe() for fate in imported.not_carried] == [
        "network_args: rank_dropout: NOT CARRIED: a network argument kohya_wrap has no setting for",
        "text_encoder_lr: NOT CARRIED: different LRs per text encoder; kohya_wrap has one text_encoder_lr",
        "wandb_api_key: secret, dropped (never written)",
        "dataset.toml: datasets[0].subsets[1].flip_aug: NOT CARRIED: kohya_wrap has no per-folder setting for it",
        "dataset.toml: datasets[1]: NOT CARRIED: kohya_wrap trains one dataset; add its folders to dataset.dirs",
        "sample_prompts[1]: --ss euler: NOT CARRIED: not an option kohya_wrap reads in a prompt",
    ]
    assert imported.notes == (
        "model.base: 'models/ponyDiffusionV6XL.safetensors' is relative; kohya_wrap reads it from the folder of "
        "the config file",
        "dataset.dirs: 'img/20_zdm' is relative; kohya_wrap reads it from the folder of the config file",
        "dataset.dirs: 'reg/1_girl' is relative; kohya_wrap reads it from the folder of the config file",
    )
    validate(imported.doc)


def test_sd_scripts_toml_without_a_family_says_how_to_give_one(inputs: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_settings(inputs / "sd_scripts_train.toml")
    assert err.value.lines == (
        "import: sd_scripts_train.toml does not say whether it trains SD1.5 or SDXL (its base model is not here "
        "to look at); pass --family sd15 or --family sdxl",
    )


def test_shell_command_line(inputs: Path) -> None:
    imported = read_settings(inputs / "train.sh")
    assert imported.format == "sd-scripts command line"
    assert imported.doc == {
        "model": {
            "family": "flux",
            "base": "/models/flux1-dev.safetensors",
            "clip_l": "/models/clip_l.safetensors",
            "t5xxl": "/models/t5xxl_fp16.safetensors",
            "ae": "/models/ae.safetensors",
        },
        "dataset": {"resolution": 1024, "enable_bucket": True, "caption_extension": ".caption", "dirs": [
            {"path": "./dataset"}
        ]},
        "network": {"dim": 16, "alpha": 16.0, "train_unet_only": True},
        "optimizer": {
            "type": "AdamW8bit",
            "learning_rate": 0.0001,
            "scheduler": "constant_with_warmup",
            "warmup_percent": 6.25,  # 100 of --max_train_steps 1600
        },
        # Not in the command, so sd-scripts' defaults (they differ from kohya_wrap's).
        "training": {
            "batch_size": 1,
            "mixed_precision": "bf16",
            "seed": 42,
            "shuffle_tags": False,
            "keep_tokens": 0,
            "gradient_checkpointing": True,
            "cache_latents": False,
            "cache_text_encoder_outputs": True,
            "fp8_base": True,
        },
        "flux": {
            "guidance_scale": 1.0,
            "timestep_sampling": "shift",
            "model_prediction_type": "raw",
            "discrete_flow_shift": 3.1582,
        },
        "save": {"output_name": "flux_zdm", "every_n_epochs": 1, "save_state": False},
        "run": {"num_processes": 2, "gpu_ids": [0, 1], "cpu_threads_per_process": 4, "extra_args": {"highvram": True}},
    }  # fmt: skip
    assert [fate.describe() for fate in imported.not_carried] == [
        "--max_train_steps: NOT CARRIED: kohya_wrap trains by epochs; set training.epochs (`kohya-wrap estimate` "
        "counts steps)",
        "--cache_latents_to_disk: NOT CARRIED: disk caches beside the images go stale after re-tagging; "
        "kohya_wrap caches in memory",
        "--huggingface_token: secret, dropped (never written)",
    ]
    validate(imported.doc)


def test_windows_batch_command_line(inputs: Path) -> None:
    imported = read_settings(inputs / "train.bat")
    assert imported.doc == {
        "model": {"family": "sd15", "base": "C:\\models\\sd15.safetensors"},
        "dataset": {"resolution": 512, "enable_bucket": False, "caption_extension": ".txt", "dirs": [
            {"path": "D:\\data\\zdm"}
        ]},
        "network": {"dim": 8, "alpha": 4.0},
        "optimizer": {"type": "Prodigy", "learning_rate": 1.0, "scheduler": "constant"},
        "training": {
            "epochs": 10,
            "batch_size": 2,
            "mixed_precision": "fp16",
            "clip_skip": 2,
            "shuffle_tags": True,
            "keep_tokens": 1,
            "gradient_checkpointing": False,
            "cache_latents": False,
            "attention": "xformers",
        },
        "sampling": {"sampler": "euler_a"},
        "save": {"output_name": "zdm", "save_state": False},
        "run": {"cpu_threads_per_process": 2},
    }  # fmt: skip
    assert imported.not_carried == ()
    assert imported.notes[0] == (
        "model.base: 'C:\\\\models\\\\sd15.safetensors' is a Windows path; change it to where it is on this machine"
    )


def test_prompt_lines_read_as_sd_scripts_reads_them() -> None:
    assert prompt_from_line("a cat, smile --n lowres, blurry --w 640 --h 448 --s 20 --l 5.5 --d 9") == {
        "prompt": "a cat, smile",
        "negative_prompt": "lowres, blurry",
        "width": 640,
        "height": 448,
        "sample_steps": 20,
        "scale": 5.5,
        "seed": 9,
    }
    assert prompt_from_line("flux cat --g 3.5 --ss euler") == {
        "prompt": "flux cat",
        "guidance_scale": 3.5,
        "unreadable": ["ss euler"],
    }


def test_warmup_steps_become_the_roundest_percentage_that_gives_them_back() -> None:
    assert warmup_percent(3, 60) == 5.0
    assert warmup_percent(100, 1600) == 6.25
    assert warmup_percent(1, 3) == 33.0  # round(3 × 33 / 100) = 1
    assert round(27 * warmup_percent(3, 27) / 100) == 3


# ---- Civitai ------------------------------------------------------------------------------------------------


def test_civitai_trainer_settings(inputs: Path) -> None:
    result = import_config(inputs / "civitai_pony.json")
    assert result.imported.doc == {
        "model": {"family": "sdxl", "variant": "pony"},
        "dataset": {"resolution": 1024, "enable_bucket": True},
        "network": {"dim": 32, "alpha": 16.0},
        "optimizer": {
            "type": "AdamW8bit",
            "learning_rate": 0.0005,
            "unet_lr": 0.0005,
            "text_encoder_lr": 5e-05,
            "scheduler": "cosine_with_restarts",
            "restarts": 3,
            "min_snr_gamma": 5.0,
            "args": {"weight_decay": 0.1},
        },
        "training": {
            "epochs": 10,
            "batch_size": 4,
            "clip_skip": 2,
            "shuffle_tags": False,
            "keep_tokens": 0,
            "noise_offset": 0.1,
        },
        "sampling": {"prompts": [{"text": "zdm, 1girl, smile"}, {"text": "zdm, 1girl, standing"}]},
        "run": {"extra_args": {"flip_aug": True}},
    }
    assert [fate.describe() for fate in result.imported.not_carried] == [
        "params.numRepeats: NOT CARRIED: Civitai's dataset is not here: set repeats = 10 on your folder in dataset.dirs"
    ]
    assert result.imported.notes == (
        "model.base: Civitai trained on its 'pony' model; set model.base to your checkpoint",
    )
    # What is missing before it can train, exactly.
    assert result.problems == (
        "model.base: required; add it to the config",
        "dataset.dirs: required; add it to the config",
    )


def test_bare_civitai_params(inputs: Path) -> None:
    imported = read_settings(inputs / "civitai_bare.json")
    assert imported.doc == {
        "dataset": {"resolution": 1024, "enable_bucket": True},
        "network": {"dim": 16, "alpha": 8.0, "train_unet_only": True},
        "optimizer": {"type": "Prodigy", "learning_rate": 0.0004, "unet_lr": 0.0004, "scheduler": "cosine"},
        "training": {"epochs": 12, "batch_size": 2, "keep_tokens": 1, "shuffle_tags": True},
    }
    assert lost(inputs / "civitai_bare.json") == [
        "numRepeats: NOT CARRIED: Civitai's dataset is not here: set repeats = 5 on your folder in dataset.dirs"
    ]


# ---- recognising the format -----------------------------------------------------------------------------------


def test_formats_are_recognised_by_content_not_name(inputs: Path) -> None:
    for source, name in (
        ("kohya_ss_sdxl_locon.json", "saved.txt"),
        ("train.sh", "command.txt"),
        ("sd_scripts_train.toml", "config.cfg"),
        ("civitai_bare.json", "run.toml"),
    ):
        shutil.copy(inputs / source, inputs / name)
        assert read_settings(inputs / name, "sdxl").format == read_settings(inputs / source, "sdxl").format


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[model]\nfamily = "sd15"\n', "import: x.toml is already a kohya_wrap config; use it as it is"),
        (
            "[[datasets]]\nresolution = 512\n",
            "import: x.toml is an sd-scripts dataset config; import the training config (--config_file) or the "
            "command line that names it",
        ),
        ('{"name": "x"}', "import: x.toml is JSON but neither a kohya_ss GUI config nor Civitai trainer settings"),
        (
            "python train_db.py --x 1",
            "import: cannot tell what wrote x.toml; kohya-wrap imports kohya_ss GUI configs (.json), sd-scripts "
            "training TOMLs and command lines, and Civitai trainer settings (.json)",
        ),
    ],
)
def test_files_that_are_not_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "x.toml").write_text(text, "utf-8")
    with pytest.raises(ConfigError) as err:
        read_settings(tmp_path / "x.toml")
    assert err.value.lines == (message,)


# ---- the commands ---------------------------------------------------------------------------------------------


def test_import_prints_the_config_and_every_key_when_no_output_is_given(inputs: Path) -> None:
    result = invoke("import", str(inputs / "train.bat"))
    assert result.exit_code == 0
    assert result.stdout.startswith("# Imported by kohya-wrap from sd-scripts command line train.bat.\n")
    assert '[model]\nfamily = "sd15"  # train_network.py\n' in result.stdout
    assert result.stderr.splitlines() == [
        "sd-scripts command line train.bat: 20 keys (18 mapped, 2 same)",
        "  accelerate --num_cpu_threads_per_process → run.cpu_threads_per_process",
        "  --pretrained_model_name_or_path → model.base",
        "  --train_data_dir → dataset.dirs",
        "  --resolution → dataset.resolution",
        "  --network_module: same in kohya_wrap: kohya_wrap trains networks.lora for sd15",
        "  --network_dim → network.dim",
        "  --network_alpha → network.alpha",
        "  --optimizer_type → optimizer.type",
        "  --learning_rate → optimizer.learning_rate",
        "  --max_train_epochs → training.epochs",
        "  --train_batch_size → training.batch_size",
        "  --xformers → training.attention",
        "  --clip_skip → training.clip_skip",
        "  --shuffle_caption → training.shuffle_tags",
        "  --keep_tokens → training.keep_tokens",
        "  --caption_extension → dataset.caption_extension",
        "  --output_name → save.output_name",
        "  --save_model_as: same in kohya_wrap: kohya_wrap saves .safetensors",
        "  --mixed_precision → training.mixed_precision",
        "  --sample_sampler → sampling.sampler",
        "to check: model.base: 'C:\\\\models\\\\sd15.safetensors' is a Windows path; change it to where it is on "
        "this machine",
        "to check: dataset.dirs: 'D:\\\\data\\\\zdm' is a Windows path; change it to where it is on this machine",
        "to check: dataset.dirs: 'D:\\\\data\\\\zdm' is not a folder here; kohya reads the `<repeats>_<name>` "
        "folders inside it, so list each of them in dataset.dirs",
    ]


def test_import_never_overwrites(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine.toml"
    out.write_text("mine\n", "utf-8")
    before = snapshot(tmp_path)
    result = invoke("import", str(inputs / "train.bat"), "-o", str(out))
    assert result.exit_code == 2
    assert result.stderr == f"import: {out} already exists; choose another name or delete it first\n"
    assert snapshot(tmp_path) == before


def test_strict_import_refuses_what_it_cannot_carry_and_writes_nothing(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict.toml"
    result = invoke("import", str(inputs / "kohya_ss_sd15_loha_windows.json"), "-o", str(out), "--strict")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "import: LoRA_type: NOT CARRIED: LyCORIS/LoHa is not supported; kohya_wrap trains LoRA and LoCon (Kohya LoCon)",
        "import: wandb_api_key: secret, dropped (never written)",
        "import: --strict: 2 key(s) of kohya_ss_sd15_loha_windows.json not carried over; nothing written",
    ]
    assert not out.exists()
    ok = invoke("import", str(inputs / "train.bat"), "-o", str(out), "--strict")
    assert ok.exit_code == 0 and out.is_file()


# ---- round trips: import(render(cfg)) and import(export(cfg)) give cfg back -----------------------------------

# What the sd-scripts files do not hold, so it cannot come back: kohya_wrap-only settings (tagging, crop,
# preset, variant: its defaults come back as values), the accelerate side (run.*, in accelerate.yaml), and
# sampling settings while no samples are made.
RENDER_KEEPS_RUN = ("extra_args",)
KOHYA_KEEPS_RUN = ("extra_args", "num_processes", "num_machines", "gpu_ids", "cpu_threads_per_process")


def canonical(cfg: Config, keep_run: tuple[str, ...], forget: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings a format can hold, with defaults written out (a prompt's width is the resolution …)."""
    doc = cfg.model_dump()
    doc.pop("preset")
    doc["model"].pop("variant")
    doc["tagging"] = {"trigger_word": doc["tagging"]["trigger_word"]}
    for key in ("crop", "crop_size"):
        doc["dataset"].pop(key)
    doc["run"] = {k: v for k, v in doc["run"].items() if k in keep_run}
    opt, net = doc["optimizer"], doc["network"]
    opt["unet_lr"] = None if net["train_text_encoder_only"] else (opt["unet_lr"] or opt["learning_rate"])
    opt["text_encoder_lr"] = None if net["train_unet_only"] else (opt["text_encoder_lr"] or opt["learning_rate"])
    sampling = doc["sampling"]
    gone = {int(path.split(".")[2]) for path in forget if path.startswith("sampling.prompts.")}
    for i, prompt in enumerate(sampling["prompts"]):
        prompt["width"] = prompt["width"] or cfg.dataset.resolution
        prompt["height"] = prompt["height"] or cfg.dataset.resolution
        prompt["seed"] = prompt["seed"] if prompt["seed"] is not None else cfg.training.seed + i
    sampling["prompts"] = [p for i, p in enumerate(sampling["prompts"]) if i not in gone]
    if not sampling["prompts"] or "sampling" in forget:
        doc["sampling"] = None
    for path in forget:
        section, _, rest = path.partition(".")
        if section != "sampling":
            doc[section][rest] = None
    return doc


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, contract.Built]:
    root = tmp_path_factory.mktemp("interop")
    return {case_id: contract.build(case, root / case_id) for case_id, case in contract.CASES.items()}


# Settings of the contract cases that sd-scripts' own files hold only as steps (the warmup) or not at all.
RENDER_FORGETS: dict[str, tuple[str, ...]] = {
    # The style presets' validation.split holds out none of the contract's 3 images, so nothing is rendered.
    "sd15-style": ("validation.split", "validation.every_n_epochs"),
    "sdxl-style": ("validation.split", "validation.every_n_epochs"),
    "sdxl-cached-te-prodigy": ("sampling",),
    "sd15-lion-no-buckets": ("optimizer.warmup_percent",),
    "sdxl-vpred-adafactor-no-buckets": ("optimizer.warmup_percent",),
    "flux-every-setting": ("optimizer.warmup_percent",),
}


@pytest.mark.parametrize("case_id", list(contract.CASES))
def test_import_of_the_rendered_files_gives_the_config_back(built: dict[str, contract.Built], case_id: str) -> None:
    case = built[case_id]
    imported = read_settings(case.layout.train_toml, case.config.model.family)
    assert imported.not_carried == ()
    back = validate(imported.doc)
    forget = RENDER_FORGETS.get(case_id, ())
    assert canonical(back, RENDER_KEEPS_RUN, forget) == canonical(case.config, RENDER_KEEPS_RUN, forget)
    # The warmup comes back as the file's number of steps (of its max_train_steps, in one process: the
    # process count is in accelerate.yaml), whatever percentage it was written as.
    one_process = dataclasses.replace(case.plan, num_processes=back.run.num_processes)
    assert warmup_steps(back, one_process) == case.rendered.training["optimizer"]["lr_warmup_steps"]


# What kohya_ss's GUI config cannot hold, per contract case: exactly what the export reports.
TRICKY_PROMPT_LOST = (
    "sampling.prompts.0.text: kohya_ss's prompt lines read ' --' as an option and '#' as a comment",
    "sampling.prompts.0.negative: kohya_ss's prompt lines read ' --' as an option and '#' as a comment",
)
PRUNE_LOST = ("tagging.auto_prune: kohya_ss has no tagging settings (its captioning tools are separate)",)
SPACES = "kohya_ss splits additional_parameters on spaces and drops double quotes"
EXPORT_LOSES: dict[str, tuple[str, ...]] = {
    "flux-character": TRICKY_PROMPT_LOST + PRUNE_LOST,
    "sd15-character": TRICKY_PROMPT_LOST + PRUNE_LOST,
    "sd15-style": TRICKY_PROMPT_LOST,
    "sdxl-illustrious-character": TRICKY_PROMPT_LOST + PRUNE_LOST,
    "sdxl-pony-character": TRICKY_PROMPT_LOST + PRUNE_LOST,
    "sdxl-style": TRICKY_PROMPT_LOST,
    "sd15-every-setting": (
        "training.multires_noise_iterations: kohya_ss uses either noise_offset or multires noise, not both",
        *TRICKY_PROMPT_LOST,
        f"model.tokenizer_cache_dir: {SPACES}",
        f"tagging.trigger_word: {SPACES}",
    ),
    "sdxl-vpred-adafactor-no-buckets": (
        "training.multires_noise_iterations: kohya_ss uses either noise_offset or multires noise, not both",
        TRICKY_PROMPT_LOST[0],
    ),
    "sdxl-cached-te-prodigy": (),
    "sd15-lion-no-buckets": (),
    "flux-every-setting": (*TRICKY_PROMPT_LOST, "network.conv_dim: kohya_ss's Flux1 LoRA type has no conv layers"),
    "sd15-precise-floats": (),
    "apostrophe-paths": PRUNE_LOST,
}
FORGET_WITH: dict[str, tuple[str, ...]] = {
    "training.multires_noise_iterations": ("training.multires_noise_iterations", "training.multires_noise_discount"),
    "network.conv_dim": ("network.conv_dim", "network.conv_alpha"),
}


@pytest.mark.parametrize("case_id", list(contract.CASES))
def test_import_of_the_kohya_ss_export_gives_the_config_back(
    built: dict[str, contract.Built], case_id: str, tmp_path: Path
) -> None:
    case = built[case_id]
    exported = export_config(case.config, "kohya_ss", tmp_path / "kohya.json")
    assert exported.not_carried == EXPORT_LOSES[case_id]
    imported = read_settings(tmp_path / "kohya.json")
    assert imported.not_carried == ()
    back = validate(imported.doc)
    forget = tuple(
        key
        for line in exported.not_carried
        for path in [line.partition(":")[0]]
        for key in FORGET_WITH.get(path, (path,))
    )
    expected = canonical(case.config, KOHYA_KEEPS_RUN, forget)
    kept_prompts = tuple(path for path in forget if not path.startswith("sampling.prompts."))
    assert canonical(back, KOHYA_KEEPS_RUN, kept_prompts) == expected


def test_the_export_is_a_kohya_ss_gui_config(built: dict[str, contract.Built], tmp_path: Path) -> None:
    case = built["sd15-lion-no-buckets"]
    result = export_config(case.config, "kohya_ss", tmp_path / "lion.json")
    # Folders that are not kohya's `<repeats>_<name>` folders of one parent go into a dataset TOML beside it.
    assert result.written == (tmp_path / "lion.dataset.toml", tmp_path / "lion.json")
    settings = json.loads((tmp_path / "lion.json").read_text("utf-8"))
    assert settings["dataset_config"] == str(tmp_path / "lion.dataset.toml")
    assert {k: settings[k] for k in ("LoRA_type", "optimizer", "max_resolution", "xformers", "lr_warmup")} == {
        "LoRA_type": "Standard",
        "optimizer": "Lion",
        "max_resolution": "512,512",
        "xformers": "sdpa",
        "lr_warmup": 3.0,
    }
    # Text encoder only: kohya_ss's way is a U-Net LR of 0.
    assert (settings["unet_lr"], settings["text_encoder_lr"]) == (0.0, 3e-05)
    assert settings["sample_prompts"] == "zdm --w 640 --h 448 --s 28 --l 7.0 --d 42"
    assert settings["optimizer_args"] == "betas=0.95,0.98 weight_decay=0.1"


def test_kohya_folders_are_exported_as_train_data_dir(tmp_path: Path) -> None:
    for name in ("10_zdm", "3_zdm outfit"):
        (tmp_path / "img" / name).mkdir(parents=True)
    cfg = validate(
        {
            "model": {"family": "sd15", "base": "/m/sd15.safetensors"},
            "dataset": {"dirs": [{"path": str(tmp_path / "img" / n)} for n in ("10_zdm", "3_zdm outfit")]},
        }
    )
    result = export_config(cfg, "kohya_ss", tmp_path / "k.json")
    assert result.written == (tmp_path / "k.json",)
    settings = json.loads((tmp_path / "k.json").read_text("utf-8"))
    assert (settings["train_data_dir"], settings["dataset_config"]) == (str(tmp_path / "img"), "")
    assert validate(read_settings(tmp_path / "k.json").doc).dataset.dirs == cfg.dataset.dirs


def test_export_never_overwrites(built: dict[str, contract.Built], tmp_path: Path) -> None:
    case = built["sd15-lion-no-buckets"]
    (tmp_path / "lion.dataset.toml").write_text("mine\n", "utf-8")
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as err:
        export_config(case.config, "kohya_ss", tmp_path / "lion.json")
    assert err.value.lines == (
        f"export: {tmp_path / 'lion.dataset.toml'} already exists; choose another name or delete it first",
    )
    assert snapshot(tmp_path) == before


def test_extra_args_render_refuses_are_the_keys_render_writes(built: dict[str, contract.Built]) -> None:
    """OWNED_BY_RENDER names every key render writes itself (so an import never puts one in run.extra_args)."""
    written = set()
    for case in built.values():
        written |= {k for name, section in case.rendered.training.items() if name != "extra" for k in section}
        dataset = case.rendered.dataset
        written |= {k for table in (dataset["general"], *dataset["datasets"]) for k in table if k != "subsets"}
    assert written <= OWNED_BY_RENDER
    assert OWNED_BY_RENDER - written <= {"train_batch_size", "validation_split", "validation_seed",
                                         "validate_every_n_epochs", "max_validation_steps", "xformers",
                                         "metadata_trigger_phrase", "zero_terminal_snr", "tokenizer_cache_dir",
                                         "vae", "blocks_to_swap", "apply_t5_attn_mask"}  # fmt: skip
