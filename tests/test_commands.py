"""Tests for the command layer (kohya_wrap.commands): the workflows every front-end calls, without click."""

from __future__ import annotations

from pathlib import Path

import pytest
from sample_data import config_text, write_images, write_models

from kohya_wrap.commands import review, setup
from kohya_wrap.commands import train as commands
from kohya_wrap.commands.outputs import outputs
from kohya_wrap.config.presets import LoadedConfig
from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.review.estimate import describe


@pytest.fixture
def loaded(tmp_path: Path) -> LoadedConfig:
    models = write_models(tmp_path / "models")
    write_images(tmp_path / "10_zdm", [(512, 512)] * 4)
    config = tmp_path / "lora.toml"
    extra = f'[training]\nepochs = 2\n[run]\nruns_dir = "{tmp_path / "runs"}"\n'
    config.write_text(config_text("sd15", models, [tmp_path / "10_zdm"], extra), encoding="utf-8")
    return commands.load(config)


def test_missing_model_files_warn_in_validate_and_stop_train(loaded: LoadedConfig, tmp_path: Path) -> None:
    (tmp_path / "models" / "base.safetensors").unlink()
    missing = (
        f"model.base: not found: {tmp_path / 'models' / 'base.safetensors'}; fix model.base "
        "(a .safetensors file or a diffusers folder)"
    )
    checked = commands.validate(loaded)
    assert missing in checked.warnings
    assert (checked.plan.total_steps, checked.estimate.steps) == (40, 40)
    with pytest.raises(ConfigError) as caught:
        commands.check_training(loaded)
    assert caught.value.lines == (missing,)


def test_load_needs_a_file_or_a_preset() -> None:
    with pytest.raises(ConfigError) as caught:
        commands.load(None)
    assert caught.value.lines == ("config: give a config file or --preset NAME (see `kohya-wrap presets`)",)


def test_render_writes_a_new_folder_or_a_new_run(loaded: LoadedConfig, tmp_path: Path) -> None:
    checked = commands.check_render(loaded)
    into = commands.render(checked, tmp_path / "rendered")
    assert into.root == (tmp_path / "rendered").resolve() and into.train_toml.is_file()
    run = commands.render(checked)
    assert run.root.parent == tmp_path / "runs" and run.run_json.is_file()
    assert [layout.root for layout, _ in commands.runs(tmp_path / "runs")] == [run.root]


def test_estimate_for_a_named_gpu_uses_no_history(loaded: LoadedConfig) -> None:
    result = review.estimate(loaded, gpu_class="24gb")
    assert result.hardware is not None and result.hardware.name == "a 24 GB-class GPU"
    assert result.plan.total_steps == result.estimate.steps == 40
    assert describe(result.estimate)[0].startswith("time: ≈ ")
    with pytest.raises(ConfigError, match=r"^--free-vram: must be the GPU's free memory in GB"):
        review.estimate(loaded, free_vram=-1.0)


def test_init_prints_or_writes_but_never_overwrites(tmp_path: Path) -> None:
    shown = setup.init("sd15-character")
    assert shown.written is None and shown.text.startswith("# Started from the sd15-character preset")
    target = tmp_path / "mine.toml"
    assert setup.init("sd15-character", target) == setup.NewConfig(shown.text, target)
    assert target.read_text("utf-8") == shown.text
    target.write_text("kept", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        setup.init("sd15-character", target)
    assert caught.value.lines == (f"init: {target} already exists; choose another name or delete it first",)
    assert target.read_text("utf-8") == "kept"
    with pytest.raises(ConfigError, match=r"^preset: unknown preset 'nope'"):
        setup.init("nope", tmp_path / "other.toml")
    assert not (tmp_path / "other.toml").exists()


def test_presets_and_schema() -> None:
    names = [p.name for p in setup.presets()]
    assert "sd15-character" in names and names == sorted(names)
    schema = setup.schema()
    assert schema["title"] == "Config" and schema["required"] == ["model", "dataset"]


def test_outputs_of_a_run_and_of_a_folder_that_is_none(loaded: LoadedConfig, tmp_path: Path) -> None:
    layout = commands.render(commands.check_render(loaded))
    layout.output_dir.mkdir()
    (layout.output_dir / "zdm-000001.safetensors").write_bytes(b"\x02\x00")
    result = outputs(layout.root, metadata=True)
    assert [(o.file.epoch, o.metadata) for o in result.loras] == [(1, None)]
    assert (
        result.loras[0].metadata_error
        == f"{layout.output_dir / 'zdm-000001.safetensors'}: too short to be a safetensors file"
    )
    assert outputs(layout.root).loras[0].metadata_error is None
    with pytest.raises(RunError) as caught:
        outputs(tmp_path)
    assert caught.value.lines == (f"run: {tmp_path} is not a run folder (no run.json)",)
