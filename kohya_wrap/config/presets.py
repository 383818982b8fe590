"""Presets and config loading: preset < user file < `--set key.path=value`, then strict validation."""

from __future__ import annotations

import ast
import copy
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from kohya_wrap.config.models import Config
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
    """The presets folder: $KOHYA_WRAP_TEMPLATES, else `templates/` beside the package."""
    env = os.environ.get("KOHYA_WRAP_TEMPLATES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "templates"


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


def read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{what}: file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc}") from None
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
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                entry["path"] = str((base / os.path.expanduser(entry["path"])).resolve())
    return result


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    source: Path | None
    resolved: dict[str, Any]


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
        path = preset_path(name)
        doc = resolve_paths(read_toml(path, f"preset {name}"), path.parent)
    merged = deep_merge(deep_merge(doc, user), override_doc)
    if name is not None:
        # --preset wins over the file's `preset`; record the one whose values were used.
        merged["preset"] = name
    return merged


def validate(doc: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(*validation_lines(exc)) from None


def load_config(config_path: Path | None, overrides: Iterable[str] = (), preset: str | None = None) -> LoadedConfig:
    doc = compose(config_path, overrides, preset)
    return LoadedConfig(config=validate(doc), source=config_path, resolved=doc)


def validation_lines(exc: ValidationError) -> list[str]:
    """Pydantic errors as `section.key: message` lines (cross-field errors already read that way)."""
    lines: list[str] = []
    unions: dict[tuple[int | str, ...], list[Any]] = {}
    for err in exc.errors(include_url=False):
        depth = _field_depth(err["loc"])
        if depth < len(err["loc"]):
            # One error per form a union accepts (`list[float]`, `literal[...]`): said once, below.
            unions.setdefault(err["loc"][:depth], []).append(err)
            continue
        loc = ".".join(str(part) for part in err["loc"])
        message = err["msg"]
        if err["type"] == "value_error":
            message = message.removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = _unknown_key_message(err["loc"])
        elif err["type"] == "missing":
            message = "required; add it to the config"
        elif err["type"] == "literal_error" or err["type"].endswith("_type"):
            message = f"{message} (got {err.get('input')!r})"
        if loc:
            lines.extend(f"{loc}: {m}" for m in message.split("\n"))
        else:
            lines.extend(message.split("\n"))
    for where, errors in unions.items():
        forms = list(dict.fromkeys(_describe_form(str(err["loc"][len(where)])) for err in errors))
        whole = [err["input"] for err in errors if len(err["loc"]) == len(where) + 1]
        got = f", got {whole[0]!r}" if whole else ""
        expected = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
        lines.append(f"{'.'.join(str(part) for part in where)}: expected {expected}{got}")
    return lines


_FORM_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string"}
_LIST_WORDS = {"bool": "booleans", "int": "integers", "float": "numbers", "str": "strings"}


def _describe_form(tag: str) -> str:
    """Words for a pydantic union-member tag such as `list[float]` or `literal['all']`."""
    if tag.startswith("literal[") and tag.endswith("]"):
        try:
            values = ast.literal_eval("[" + tag.removeprefix("literal[").removesuffix("]") + "]")
        except (ValueError, SyntaxError):
            return tag
        return "one of " + ", ".join(repr(v) for v in values)
    if tag.startswith("list[") and tag.endswith("]"):
        item = tag.removeprefix("list[").removesuffix("]")
        return "a list of " + _LIST_WORDS.get(item, item)
    return _FORM_WORDS.get(tag, tag)


def _field_depth(loc: tuple[int | str, ...]) -> int:
    """How many leading parts of an error location are fields, list indices or dict keys of Config;
    the parts after them are pydantic's tags for the members of a union."""
    annotation: Any = Config
    for depth, part in enumerate(loc):
        args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            if len(args) > 1:
                return depth
            annotation = args[0]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return len(loc)  # an unknown key: reported as such
            annotation = field.annotation
        elif typing.get_origin(annotation) in (list, dict):
            annotation = typing.get_args(annotation)[-1]
        else:
            return len(loc)
    return len(loc)


def _unknown_key_message(loc: tuple[int | str, ...]) -> str:
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            break
        model = _model_of(field.annotation)
    names = list(model.model_fields) if hasattr(model, "model_fields") else []
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    suggestion = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown key{suggestion}"


def _model_of(annotation: Any) -> Any:
    """The Pydantic model inside an annotation such as `X | None` or `list[X]`."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
