"""The new-run form: fields built from the settings' JSON schema, and form values turned into `--set` overrides."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tomli_w

from kohya_wrap.errors import ConfigError, KohyaWrapError

# The `preset` key is chosen with the preset picker, not typed.
SKIPPED = frozenset({"preset"})


@dataclass(frozen=True)
class Field:
    """One input of the form; `key` is the dotted TOML name (`training.epochs`)."""

    key: str
    kind: str  # bool | choice | int | float | text | toml
    help: str
    default: str  # the schema's default in TOML words ('' when there is none)
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    exclusive_max: bool = False
    required: bool = False

    @property
    def limits(self) -> str:
        """'1 ≤ value ≤ 10000' style words for the help line ('' without limits)."""
        low = "" if self.minimum is None else f"{_number(self.minimum)} {'<' if self.exclusive_min else '≤'} "
        high = "" if self.maximum is None else f" {'<' if self.exclusive_max else '≤'} {_number(self.maximum)}"
        return f"{low}value{high}" if low or high else ""


@dataclass(frozen=True)
class Section:
    name: str
    help: str
    fields: tuple[Field, ...]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def toml_value(value: Any) -> str:
    """`value` as it would be written on the right of `=` in TOML."""
    return tomli_w.dumps({"v": value}).removeprefix("v = ").rstrip("\n")


def _field(key: str, prop: Mapping[str, Any], required: bool) -> Field:
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    help_text = str(prop.get("description", ""))
    default = toml_value(prop["default"]) if prop.get("default") not in (None, [], {}) else ""
    one = options[0] if len(options) == 1 else None
    if one is not None and "$ref" not in one and one.get("type") != "array" and one.get("type") != "object":
        limits: dict[str, Any] = {}
        for low, high in (("minimum", "maximum"), ("exclusiveMinimum", "exclusiveMaximum")):
            if low in one:
                limits["minimum"], limits["exclusive_min"] = one[low], low.startswith("exclusive")
            if high in one:
                limits["maximum"], limits["exclusive_max"] = one[high], high.startswith("exclusive")
        if "enum" in one:
            return Field(key, "choice", help_text, default, tuple(str(v) for v in one["enum"]), required=required)
        kind = {"boolean": "bool", "integer": "int", "number": "float", "string": "text"}.get(one.get("type", ""))
        if kind is not None:
            return Field(key, kind, help_text, default, required=required, **limits)
    # Lists, tables and unions of several forms take a TOML value, exactly as `--set` does.
    return Field(key, "toml", help_text, default, required=required)


@functools.cache
def form_sections() -> tuple[Section, ...]:
    """Every setting of the TOML, grouped by its section, with the schema's names, limits and help."""
    from kohya_wrap.config.models import Settings

    schema = Settings.model_json_schema()
    defs = schema.get("$defs", {})
    sections = []
    for name, prop in schema["properties"].items():
        if name in SKIPPED:
            continue
        ref = next((o["$ref"] for o in prop.get("anyOf", [prop]) if "$ref" in o), None)
        if ref is None:
            continue
        model = defs[ref.rsplit("/", 1)[-1]]
        required = set(model.get("required", ()))
        fields = tuple(
            _field(f"{name}.{key}", sub, key in required) for key, sub in model.get("properties", {}).items()
        )
        sections.append(Section(name, str(prop.get("description", model.get("description", ""))), fields))
    return tuple(sections)


def fields_by_key() -> dict[str, Field]:
    return {f.key: f for s in form_sections() for f in s.fields}


def preset_values(preset: str) -> dict[str, str]:
    """The preset's own values, as the form shows them (dotted key → TOML words)."""
    from kohya_wrap.config.presets import preset_path, read_toml

    doc = read_toml(preset_path(preset), f"preset {preset}")
    return {
        key: form_text(fields_by_key()[key], value) for key, value in flatten(doc).items() if key in fields_by_key()
    }


def flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """{"training": {"epochs": 3}} → {"training.epochs": 3} (one level: sections hold the settings)."""
    flat: dict[str, Any] = {}
    for section, table in doc.items():
        if isinstance(table, Mapping):
            for key, value in table.items():
                flat[f"{section}.{key}"] = value
    return flat


def form_text(field: Field, value: Any) -> str:
    """How a value reads in its input: strings as typed, everything else in TOML words."""
    if field.kind in ("text", "choice") and isinstance(value, str):
        return value
    return toml_value(value)


def override(field: Field, text: str) -> str:
    """The `--set` item for a field's text: strings are quoted, everything else is read as TOML."""
    if field.kind == "text" or (field.kind == "choice" and not _is_number(text)):
        return f"{field.key}={toml_value(text)}"
    return f"{field.key}={text.strip()}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def form_overrides(preset: str, values: Mapping[str, str]) -> list[str]:
    """`--set` items for the fields the user filled in and changed from the preset (unknown keys refused)."""
    fields = fields_by_key()
    unknown = [key for key in values if key not in fields]
    if unknown:
        raise ConfigError(*(f"{key}: unknown key" for key in unknown))
    shown = preset_values(preset)
    return [
        override(fields[key], text)
        for key, text in values.items()
        if text.strip() != "" and text.strip() != shown.get(key, "").strip()
    ]


def overrides_toml(preset: str, overrides: list[str]) -> str:
    """The config file for a preset plus the form's changes: `preset = …` and only what differs."""
    from kohya_wrap.config.presets import apply_overrides

    doc = apply_overrides({}, overrides)
    header = f'# Made with `kohya-wrap ui` from the {preset} preset; keys below override it.\npreset = "{preset}"\n'
    body = tomli_w.dumps(doc)
    return header + ("\n" + body if body else "")


@dataclass(frozen=True)
class CheckResult:
    """What `validate` says about the form: errors, warnings, the step plan and the estimate lines."""

    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    plan: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": not self.errors, "errors": self.errors, "warnings": self.warnings, "plan": self.plan}


def check(preset: str, overrides: list[str]) -> CheckResult:
    """The same checks as `kohya-wrap validate --preset PRESET --set …`, as data instead of printed lines."""
    from kohya_wrap.commands.train import load, validate
    from kohya_wrap.review.estimate import describe, plan_lines, warnings

    try:
        checked = validate(load(None, tuple(overrides), preset))
    except KohyaWrapError as exc:
        return CheckResult(exc.lines, (), ())
    cfg, plan = checked.loaded.config, checked.plan
    lines = (*plan_lines(cfg, plan), *describe(checked.estimate))
    return CheckResult((), checked.warnings + tuple(warnings(checked.estimate)), lines)
