"""Presets and config loading: preset < user file < `--set key.path=value`, then strict validation."""

from __future__ import annotations

import copy
import difflib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kohya_wrap.config import checks
from kohya_wrap.config.defaults import resolve
from kohya_wrap.config.messages import validation_lines
from kohya_wrap.config.models import Config, Settings
from kohya_wrap.errors import ConfigError

# Config keys that hold local paths: relative ones are read relative to the config file's folder.
PATH_KEYS = (
    ("model", "base"),
    ("model", "vae"),
    ("model", "clip_l"),
    ("model", "t5xxl"),
    ("model", "ae"),
    ("model", "tokenizer_cache_dir"),
    ("tagging", "model"),
    ("run", "runs_dir"),
    ("run", "sd_scripts_dir"),
)


def templates_dir() -> Path:
    """The presets folder: $KOHYA_WRAP_TEMPLATES, else the package's own `templates/` (shipped in the wheel;
    the repository's top-level `templates` links to it)."""
    env = os.environ.get("KOHYA_WRAP_TEMPLATES")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "templates"


def list_presets() -> list[tuple[str, str]]:
    """(name, first comment line) for every preset."""
    result = []
    for path in sorted(templates_dir().glob("*.toml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text("utf-8").splitlines() if ln.startswith("#")), "")
        result.append((path.stem, first))
    return result


def preset_path(name: str) -> Path:
    path = templates_dir() / f"{name}.toml"
    if not path.is_file():
        names = [n for n, _ in list_presets()]
        close = difflib.get_close_matches(name, names, n=1) or [n for n in names if n.startswith(name)]
        hint = ""
        if close:
            hint = (
                f"did you mean '{close[0]}'? "
                if len(close) == 1
                else ("did you mean one of " + ", ".join(f"'{n}'" for n in close) + "? ")
            )
        raise ConfigError(f"preset: unknown preset '{name}'; {hint}see `kohya-wrap presets`")
    return path


def read_settings_text(path: Path, what: str) -> str:
    """A settings file the user names, as text; a missing or unreadable one is one `what: …` line.

    utf-8-sig: editors on Windows save a byte-order mark, which TOML and JSON themselves do not allow.
    """
    try:
        return path.read_text("utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc}") from None


def read_toml(path: Path, what: str) -> dict[str, Any]:
    text = read_settings_text(path, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what}: {path} is not valid TOML: {exc}") from None


def deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) in `top` replaces the one in `base`."""
    merged = copy.deepcopy(dict(base))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """`training.epochs=3` → (["training", "epochs"], 3); the value is TOML, else a plain string."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(p.strip() for p in parts):
        raise ConfigError(f"--set: '{text}' must look like section.key=value, e.g. training.epochs=3")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    result = copy.deepcopy(doc)
    for text in overrides:
        parts, value = parse_override(text)
        node = result
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set: '{'.'.join(parts)}' goes inside '{part}', which is not a table")
            node = child
        node[parts[-1]] = value
    return result


def _resolve_path(value: Any, base: Path) -> Any:
    if not isinstance(value, str) or not value:
        return value
    expanded = Path(os.path.expanduser(value))
    if expanded.is_absolute():
        return str(expanded)
    candidate = base / expanded
    # A relative value that does not exist here may be a hub id ("org/name"); keep it as written.
    if candidate.exists() or value.startswith((".", "~")) or "/" not in value:
        return str(candidate.resolve())
    return value


def resolve_paths(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    """Make local paths absolute, relative to the folder of the file that named them."""
    result = copy.deepcopy(doc)
    for section, key in PATH_KEYS:
        table = result.get(section)
        if isinstance(table, dict) and key in table:
            table[key] = _resolve_path(table[key], base)
    dirs = result.get("dataset", {}).get("dirs") if isinstance(result.get("dataset"), dict) else None
    if isinstance(dirs, list):
        for entry in dirs:
            # A blank path stays blank, for the settings to refuse, instead of becoming `base` itself.
            if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"].strip():
                entry["path"] = str((base / os.path.expanduser(entry["path"])).resolve())
    return result


def preset_document(name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """A preset's values, path-resolved; a preset that names another (`preset = "…"`) builds on that one."""
    if name in chain:
        raise ConfigError(f"preset {chain[-1]}: presets name each other in a loop ({' → '.join((*chain, name))})")
    path = preset_path(name)
    doc = resolve_paths(read_toml(path, f"preset {name}"), path.parent)
    inner = doc.pop("preset", None)
    if inner is None:
        return doc
    if not isinstance(inner, str):
        raise ConfigError(f'preset {name}: `preset` must be a preset name, e.g. "sd15-character"')
    return deep_merge(preset_document(inner, (*chain, name)), doc)


@dataclass(frozen=True)
class LoadedConfig:
    """A config loaded from its preset, file and overrides, validated and resolved."""

    config: Config


def compose(config_path: Path | None, overrides: Iterable[str] = (), preset: str | None = None) -> dict[str, Any]:
    """The merged, path-resolved document: preset < file < overrides (not yet validated)."""
    overrides = list(overrides)
    user: dict[str, Any] = {}
    base = Path.cwd()
    if config_path is not None:
        user = resolve_paths(read_toml(config_path, "config"), config_path.resolve().parent)
    override_doc = resolve_paths(apply_overrides({}, overrides), base)
    name = preset or override_doc.get("preset") or user.get("preset")
    doc: dict[str, Any] = {}
    if name is not None:
        if not isinstance(name, str):
            raise ConfigError('preset: must be a preset name, e.g. "sd15-character"')
        doc = preset_document(name)
    merged = deep_merge(deep_merge(doc, user), override_doc)
    if name is not None:
        # --preset wins over the file's `preset`; record the one whose values were used.
        merged["preset"] = name
    return merged


def validate(doc: Mapping[str, Any]) -> Config:
    """Check a composed document field by field, apply the defaults, then the cross-field rules."""
    try:
        settings = Settings.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(*validation_lines(exc)) from None
    cfg = resolve(settings)
    problems = checks.errors(cfg)
    if problems:
        raise ConfigError(*problems)
    return cfg


def load_config(config_path: Path | None, overrides: Iterable[str] = (), preset: str | None = None) -> LoadedConfig:
    doc = compose(config_path, overrides, preset)
    return LoadedConfig(config=validate(doc))
