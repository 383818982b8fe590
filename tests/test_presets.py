"""Tests for kohya_wrap.config.presets: every shipped preset, merge order, --set, paths, load errors."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from kohya_wrap.config.checks import advice
from kohya_wrap.config.models import Config
from kohya_wrap.config.presets import (
    apply_overrides,
    compose,
    deep_merge,
    list_presets,
    load_config,
    parse_override,
    preset_path,
    templates_dir,
)
from kohya_wrap.errors import ConfigError

TEMPLATES = sorted(templates_dir().glob("*.toml"))


def required_paths(tmp_path: Path, family: str) -> list[str]:
    """--set overrides for the values every preset leaves to the user (files need not be real models)."""
    (tmp_path / "20_zdm 1boy").mkdir(exist_ok=True)
    sets = [
        f"model.base={tmp_path / 'base.safetensors'}",
        f'dataset.dirs=[{{path = "{tmp_path / "20_zdm 1boy"}"}}]',
    ]
    if family == "flux":
        sets += [f"model.{key}={tmp_path / key}.safetensors" for key in ("clip_l", "t5xxl", "ae")]
    return sets


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def held(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_the_shipped_presets() -> None:
    assert [path.stem for path in TEMPLATES] == [
        "flux-character",
        "sd15-character",
        "sd15-style",
        "sdxl-illustrious-character",
        "sdxl-pony-character",
        "sdxl-style",
    ]


@pytest.mark.parametrize("template", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_every_preset_validates_and_every_value_it_sets_is_kept(template: Path, tmp_path: Path) -> None:
    family = tomllib.loads(template.read_text("utf-8"))["model"]["family"]
    loaded = load_config(None, required_paths(tmp_path, family), template.stem)
    assert loaded.config.preset == template.stem
    for key, value in flatten(tomllib.loads(template.read_text("utf-8"))).items():
        assert held(loaded.config, key) == value, key
    assert advice(loaded.config) == []


@pytest.mark.parametrize("template", TEMPLATES, ids=[p.stem for p in TEMPLATES])
def test_every_preset_loads_from_a_config_file(template: Path, tmp_path: Path) -> None:
    family = tomllib.loads(template.read_text("utf-8"))["model"]["family"]
    config = tmp_path / "config.toml"
    config.write_text(f'preset = "{template.stem}"\n', encoding="utf-8")
    assert load_config(config, required_paths(tmp_path, family)).config.model.family == family


def test_every_preset_has_a_summary_line() -> None:
    presets = list_presets()
    assert [name for name, _ in presets] == [p.stem for p in TEMPLATES]
    assert all(summary and not summary.startswith("#") for _, summary in presets)
    assert dict(presets)["sd15-character"] == (
        "SD1.5 character LoRA: SeaArt's walkthrough settings (dim 16, AdamW8bit, cosine with restarts)."
    )


def test_templates_folder_can_be_moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mine.toml").write_text('# My own preset.\n[model]\nfamily = "sd15"\n', encoding="utf-8")
    monkeypatch.setenv("KOHYA_WRAP_TEMPLATES", str(tmp_path))
    assert list_presets() == [("mine", "My own preset.")]
    assert preset_path("mine") == tmp_path / "mine.toml"


# ---- merge order: preset < file < --set ------------------------------------------------------------


def test_merge_order_preset_then_file_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'preset = "sd15-character"\n[network]\ndim = 32\n[optimizer]\nlearning_rate = 2e-4\n',
        encoding="utf-8",
    )
    sets = required_paths(tmp_path, "sd15")
    cfg = load_config(config, sets).config
    assert (cfg.network.dim, cfg.network.alpha, cfg.optimizer.learning_rate) == (32, 8.0, 2e-4)
    assert cfg.optimizer.text_encoder_lr == 5e-5  # the preset's, next to the file's key in the same table
    cfg = load_config(config, [*sets, "network.dim=64", "optimizer.learning_rate=3e-4"]).config
    assert (cfg.network.dim, cfg.optimizer.learning_rate) == (64, 3e-4)


def test_later_overrides_win(tmp_path: Path) -> None:
    sets = [*required_paths(tmp_path, "sd15"), "training.epochs=3", "training.epochs=5"]
    assert load_config(None, sets, "sd15-character").config.training.epochs == 5


def test_the_preset_option_wins_over_the_files_preset_and_is_recorded(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('preset = "sdxl-style"\n', encoding="utf-8")
    cfg = load_config(config, required_paths(tmp_path, "sd15"), preset="sd15-character").config
    assert (cfg.preset, cfg.model.family, cfg.network.dim) == ("sd15-character", "sd15", 16)


def test_a_preset_can_be_chosen_by_override(tmp_path: Path) -> None:
    cfg = load_config(None, [*required_paths(tmp_path, "sd15"), 'preset="sd15-style"']).config
    assert (cfg.preset, cfg.network.dim) == ("sd15-style", 32)


def test_deep_merge_merges_tables_and_replaces_lists() -> None:
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    top = {"a": {"y": [3]}, "c": {"z": 1}}
    assert deep_merge(base, top) == {"a": {"x": 1, "y": [3]}, "b": 1, "c": {"z": 1}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}


# ---- --set parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts", "value"),
    [
        ("training.epochs=3", ["training", "epochs"], 3),
        ("optimizer.learning_rate=1e-4", ["optimizer", "learning_rate"], 1e-4),
        ("training.shuffle_tags=false", ["training", "shuffle_tags"], False),
        ('tagging.trigger_word="zdm"', ["tagging", "trigger_word"], "zdm"),
        ("tagging.trigger_word=zdm", ["tagging", "trigger_word"], "zdm"),
        ("model.base=/models/a b.safetensors", ["model", "base"], "/models/a b.safetensors"),
        ("model.base=C:\\models\\x.safetensors", ["model", "base"], "C:\\models\\x.safetensors"),
        ('tagging.remove_tags=["shirt", "shorts"]', ["tagging", "remove_tags"], ["shirt", "shorts"]),
        ('dataset.dirs=[{path = "a", repeats = 2}]', ["dataset", "dirs"], [{"path": "a", "repeats": 2}]),
        ("optimizer.args={weight_decay = 0.01}", ["optimizer", "args"], {"weight_decay": 0.01}),
        (" training . epochs = 3", ["training", "epochs"], 3),
        ("tagging.trigger_word=", ["tagging", "trigger_word"], ""),
        ("save.output_name=a=b", ["save", "output_name"], "a=b"),
        ("preset=sd15-style", ["preset"], "sd15-style"),
    ],
)
def test_parse_override(text: str, parts: list[str], value: Any) -> None:
    assert parse_override(text) == (parts, value)


@pytest.mark.parametrize("text", ["training.epochs", "=3", "training..epochs=3", ".epochs=3", "training.=3"])
def test_bad_override_syntax(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_override(text)
    assert caught.value.lines == (f"--set: '{text}' must look like section.key=value, e.g. training.epochs=3",)


def test_overrides_build_nested_tables() -> None:
    assert apply_overrides({"flux": {"blocks_to_swap": 2}}, ["flux.guidance_scale=3.5", "a.b.c=1"]) == {
        "flux": {"blocks_to_swap": 2, "guidance_scale": 3.5},
        "a": {"b": {"c": 1}},
    }


def test_an_override_cannot_go_inside_a_value() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides({}, ["training=1", "training.epochs=3"])
    assert caught.value.lines == ("--set: 'training.epochs' goes inside 'training', which is not a table",)


# ---- paths --------------------------------------------------------------------------------------


def test_relative_paths_are_read_from_the_config_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "project"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "base.safetensors").write_bytes(b"")
    config = folder / "config.toml"
    config.write_text(
        '[model]\nfamily = "sd15"\nbase = "models/base.safetensors"\nvae = "./vae.safetensors"\n'
        'tokenizer_cache_dir = "tokenizers"\n'
        '[dataset]\ndirs = [{path = "images/20_zdm 1boy"}, {path = "../shared/reg", is_reg = true}]\n'
        '[tagging]\nmodel = "SmilingWolf/wd-vit-tagger-v3"\n'
        '[run]\nruns_dir = "runs"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config).config
    assert cfg.model.base == str(folder / "models" / "base.safetensors")
    assert cfg.model.vae == str(folder / "vae.safetensors")
    assert cfg.model.tokenizer_cache_dir == str(folder / "tokenizers")
    assert [d.path for d in cfg.dataset.dirs] == [
        str(folder / "images" / "20_zdm 1boy"),
        str(tmp_path / "shared" / "reg"),
    ]
    assert cfg.tagging.model == "SmilingWolf/wd-vit-tagger-v3"  # a hub id, not a missing local folder
    assert cfg.run.runs_dir == str(folder / "runs")


def test_absolute_and_home_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "config.toml"
    config.write_text(
        '[model]\nfamily = "sd15"\nbase = "~/models/base.safetensors"\n'
        '[dataset]\ndirs = [{path = "/data/imgs"}, {path = "~/imgs"}]\n',
        encoding="utf-8",
    )
    cfg = load_config(config).config
    assert cfg.model.base == str(tmp_path / "home" / "models" / "base.safetensors")
    assert [d.path for d in cfg.dataset.dirs] == ["/data/imgs", str(tmp_path / "home" / "imgs")]


def test_override_paths_are_read_from_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text('[model]\nfamily = "sd15"\nbase = "/m/base.safetensors"\n', encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    cfg = load_config(config, ['dataset.dirs=[{path = "imgs"}]', "model.vae=vae.safetensors"]).config
    assert cfg.dataset.dirs[0].path == str(tmp_path / "imgs")
    assert cfg.model.vae == str(tmp_path / "vae.safetensors")


def test_compose_returns_the_merged_document(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('preset = "sd15-character"\n[training]\nepochs = 4\n', encoding="utf-8")
    doc = compose(config, ["training.batch_size=1"])
    assert (
        doc["preset"],
        doc["training"]["epochs"],
        doc["training"]["batch_size"],
        doc["model"]["family"],
    ) == ("sd15-character", 4, 1, "sd15")


# ---- load errors ---------------------------------------------------------------------------------


def load_errors(config: Path | None, sets: list[str] | None = None, preset: str | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config, sets or [], preset)
    return list(caught.value.lines)


def test_unknown_preset_suggests_a_close_name() -> None:
    assert load_errors(None, preset="sd15-charcter") == [
        "preset: unknown preset 'sd15-charcter'; did you mean 'sd15-character'? see `kohya-wrap presets`"
    ]
    assert load_errors(None, preset="sdxl-pony") == [
        "preset: unknown preset 'sdxl-pony'; did you mean 'sdxl-pony-character'? see `kohya-wrap presets`"
    ]
    assert load_errors(None, preset="zzz") == ["preset: unknown preset 'zzz'; see `kohya-wrap presets`"]


def test_preset_must_be_a_name(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("preset = 3\n", encoding="utf-8")
    assert load_errors(config) == ['preset: must be a preset name, e.g. "sd15-character"']


def test_missing_and_invalid_config_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert load_errors(missing) == [f"config: file not found: {missing}"]
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nfamily = "sd15\n', encoding="utf-8")
    assert load_errors(bad) == [f"config: {bad} is not valid TOML: Illegal character '\\n' (at line 2, column 15)"]
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# caf\xe9\n".encode("latin-1"))
    assert load_errors(latin) == [
        f"config: cannot read {latin}: 'utf-8' codec can't decode byte 0xe9 in position 5: invalid continuation byte"
    ]


def test_a_folder_is_not_a_config(tmp_path: Path) -> None:
    lines = load_errors(tmp_path)
    assert len(lines) == 1 and lines[0].startswith(f"config: cannot read {tmp_path}: ")
