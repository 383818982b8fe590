"""Tests for kohya_wrap.train.runs: creating run folders, run.json, the run's own config and prompts, listing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import fake_sd
import pytest

from kohya_wrap.config.presets import LoadedConfig, load_config
from kohya_wrap.data.dataset import StepPlan, plan_steps, scan
from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.train.layout import RunLayout
from kohya_wrap.train.render import config_hash
from kohya_wrap.train.runs import (
    create_run,
    list_runs,
    read_config_toml,
    read_record,
    run_config,
    runs_dir,
    sample_prompts,
    update_record,
    write_rendered_folder,
)

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5)


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[LoadedConfig, StepPlan]:
    images = fake_sd.captioned_images(tmp_path / "data" / "3_zdm", "zdm, red")
    config = tmp_path / "lora.toml"
    config.write_text(
        f"""
[model]
family = "sd15"
base = "{tmp_path / "model.safetensors"}"
[dataset]
dirs = [{{ path = "{images}" }}]
resolution = 64
[training]
epochs = 2
batch_size = 2
[sampling]
prompts = [{{ text = "zdm, smiling", steps = 12 }}]
[run]
runs_dir = "runs"
""",
        encoding="utf-8",
    )
    result = load_config(config)
    return result, plan_steps(result.config, scan(result.config))


def test_runs_dir_is_relative_to_the_config_file(loaded: tuple[LoadedConfig, StepPlan], tmp_path: Path) -> None:
    assert runs_dir(loaded[0].config) == (tmp_path / "runs").resolve()


def test_create_run_writes_every_file_and_a_planned_record(loaded: tuple[LoadedConfig, StepPlan]) -> None:
    cfg_loaded, plan = loaded
    layout = create_run(cfg_loaded, plan, WHEN)
    assert layout.root == runs_dir(cfg_loaded.config) / "zdm-20260102-030405"
    assert sorted(p.name for p in layout.root.iterdir()) == [
        "accelerate.yaml",
        "config.toml",
        "dataset.toml",
        "prompts.json",
        "run.json",
        "train.toml",
    ]
    record = read_record(layout)
    assert (record.status, record.name, record.family, record.script) == ("planned", "zdm", "sd15", "train_network.py")
    assert (record.total_steps, record.epochs, record.attempts) == (plan.total_steps, 2, 0)
    assert record.config_hash == config_hash(cfg_loaded.config)
    # config.toml is the resolved config: reading it back gives the same config, defaults included.
    assert read_config_toml(layout)["dataset"]["dirs"][0]["repeats"] == 3
    assert run_config(layout) == cfg_loaded.config
    assert [p["prompt"] for p in sample_prompts(layout)] == ["zdm, smiling"]
    assert sample_prompts(layout)[0]["sample_steps"] == 12


def test_a_second_run_in_the_same_second_gets_a_suffix(loaded: tuple[LoadedConfig, StepPlan]) -> None:
    first, second = create_run(*loaded, WHEN), create_run(*loaded, WHEN)
    assert (first.root.name, second.root.name) == ("zdm-20260102-030405", "zdm-20260102-030405-2")
    assert not [p for p in first.root.parent.iterdir() if p.name.startswith(".")]  # no half-written folders


def test_render_into_a_folder_never_overwrites(loaded: tuple[LoadedConfig, StepPlan], tmp_path: Path) -> None:
    layout = write_rendered_folder(tmp_path / "out", *loaded)
    assert read_record(layout).status == "planned"
    before = {p.name: p.read_bytes() for p in layout.root.iterdir()}
    with pytest.raises(ConfigError) as caught:
        write_rendered_folder(tmp_path / "out", *loaded)
    assert caught.value.lines == (
        f"render: {(tmp_path / 'out').resolve()} already exists; choose a new folder (nothing is overwritten)",
    )
    assert {p.name: p.read_bytes() for p in layout.root.iterdir()} == before


def test_update_record_rewrites_run_json(loaded: tuple[LoadedConfig, StepPlan]) -> None:
    layout = create_run(*loaded, WHEN)
    updated = update_record(layout, read_record(layout), status="running", attempts=1)
    assert read_record(layout) == updated
    assert json.loads(layout.run_json.read_text("utf-8"))["status"] == "running"


def test_a_folder_without_run_json_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunError) as caught:
        read_record(RunLayout(tmp_path))
    assert caught.value.lines == (f"run: {tmp_path} is not a run folder (no run.json)",)


def test_a_missing_or_broken_config_toml_is_one_line(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    with pytest.raises(RunError, match=r"^run: cannot read .*config\.toml: "):
        read_config_toml(layout)
    layout.config.write_text("[model\n", encoding="utf-8")
    with pytest.raises(RunError) as caught:
        run_config(layout)
    assert caught.value.lines[0].startswith(f"run: cannot read {layout.config}: ")


def test_prompts_json_that_is_missing_or_not_a_list_gives_no_prompts(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert sample_prompts(layout) == []
    layout.prompts.write_text('{"prompt": "x"}', encoding="utf-8")
    assert sample_prompts(layout) == []
    layout.prompts.write_text('[{"prompt": "x"}, 3, "y"]', encoding="utf-8")
    assert sample_prompts(layout) == [{"prompt": "x"}]


def test_list_runs_oldest_first_with_broken_records_kept(loaded: tuple[LoadedConfig, StepPlan]) -> None:
    first = create_run(*loaded, WHEN)
    second = create_run(*loaded, WHEN + dt.timedelta(minutes=1))
    second.run_json.write_text("{not json", encoding="utf-8")
    base = first.root.parent
    (base / "notes").mkdir()  # a folder without run.json is not listed
    (base / ".zdm-tmp").mkdir()
    found = list_runs(base)
    assert [(layout.root.name, record is None) for layout, record in found] == [
        ("zdm-20260102-030405", False),
        ("zdm-20260102-030505", True),
    ]
    assert list_runs(base / "missing") == []
