"""Sweeps: a grid of setting values expanded into one config per combination, and the sweep's record.

Grid values are typed by the same rule as `--set` (TOML, else a plain string): `network.dim=16,32` gives
integers, `optimizer.type=Lion,Prodigy` strings. The record `<runs_dir>/sweeps/<name>.json` lists the
axes and every run folder with its values; compare and the web app read it through `sweep_runs`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from kohya_wrap.config.presets import parse_override
from kohya_wrap.errors import ConfigError, RunError
from kohya_wrap.files import write_new_file

SWEEPS_DIR = "sweeps"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# Keys every run of a sweep must share, so their sample images compare.
SHARED_PREFIXES = ("training.seed", "sampling", "run.runs_dir")
# Short labels for the numeric settings people sweep most; other keys get the initials of their last part.
ABBREVIATIONS = {
    "network.dim": "d",
    "network.alpha": "a",
    "network.conv_dim": "cd",
    "network.conv_alpha": "ca",
    "optimizer.learning_rate": "lr",
    "optimizer.unet_lr": "ulr",
    "optimizer.text_encoder_lr": "telr",
    "optimizer.warmup_percent": "wu",
    "optimizer.min_snr_gamma": "snr",
    "training.epochs": "e",
    "training.batch_size": "bs",
    "training.noise_offset": "no",
    "training.clip_skip": "cs",
    "training.keep_tokens": "kt",
    "dataset.resolution": "r",
}

Axes = dict[str, list[Any]]


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep as recorded: its folder and the grid values it got."""

    run_dir: Path
    values: dict[str, Any]


@dataclass(frozen=True)
class SweepRecord:
    """What `<runs_dir>/sweeps/<name>.json` holds."""

    name: str
    axes: Axes
    runs: tuple[SweepRun, ...]

    def to_json(self) -> str:
        doc = {
            "name": self.name,
            "axes": self.axes,
            "runs": [{"run_dir": str(run.run_dir), "values": run.values} for run in self.runs],
        }
        return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def split_values(raw: str) -> list[str]:
    """Split `a,b,[1,2],"x,y"` on the commas outside brackets, braces and quotes."""
    pieces: list[str] = []
    current: list[str] = []
    depth, quote = 0, ""
    for char in raw:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            pieces.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    pieces.append("".join(current).strip())
    return pieces


def parse_grid(texts: Iterable[str]) -> Axes:
    """`--grid key=v1,v2` options as axes in the order given; values typed like `--set` values."""
    axes: Axes = {}
    problems: list[str] = []
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--grid: '{text}' must look like section.key=v1,v2, e.g. network.dim=16,32")
            continue
        if key in axes:
            problems.append(f"--grid {key}: given twice; put all its values in one --grid {key}=v1,v2")
            continue
        pieces = split_values(raw)
        if not any(pieces):
            problems.append(f"--grid {key}: no values; give at least one, e.g. {key}=v1,v2")
            continue
        if "" in pieces:
            problems.append(f"--grid {key}: an empty value in '{raw}'; remove the extra comma")
            continue
        axes[key] = [parse_override(f"{key}={piece}")[1] for piece in pieces]
    if problems:
        raise ConfigError(*problems)
    return axes


def grid_from_table(table: object) -> Axes:
    """The `[sweep]` table of a config file (`grid = { "network.dim" = [16, 32] }`) as axes."""
    if not isinstance(table, Mapping):
        raise ConfigError('sweep: must be a table, e.g. [sweep] grid = { "network.dim" = [16, 32] }')
    problems = [f"sweep.{key}: unknown key; a [sweep] table holds only `grid`" for key in table if key != "grid"]
    grid = table.get("grid", {})
    if not isinstance(grid, Mapping):
        raise ConfigError('sweep.grid: must be a table of lists, e.g. grid = { "network.dim" = [16, 32] }')
    axes: Axes = {}
    for key, values in grid.items():
        if not isinstance(values, list):
            problems.append(f"sweep.grid.{key}: must be a list of values, e.g. [16, 32]")
        elif not values:
            problems.append(f"sweep.grid.{key}: no values; give at least one")
        else:
            axes[str(key)] = list(values)
    if problems:
        raise ConfigError(*problems)
    return axes


def merge_axes(from_file: Axes, from_options: Axes) -> Axes:
    """File axes, then `--grid` axes; a `--grid` axis replaces the file's axis of the same key."""
    merged = {key: values for key, values in from_file.items() if key not in from_options}
    merged.update(from_options)
    return merged


def check_axes(axes: Axes, overrides: Sequence[str]) -> None:
    """Every axis names a setting, is not set by `--set`, varies something shared, nor repeats a value."""
    from kohya_wrap.config.models import Config

    problems: list[str] = []
    if not axes:
        problems.append("sweep: no grid; give --grid section.key=v1,v2 or a [sweep] grid table in the config")
    set_keys = {".".join(parse_override(text)[0]) for text in overrides}
    for key, values in axes.items():
        if (problem := _unknown_key(Config, key)) is not None:
            problems.append(f"--grid {key}: {problem}")
            continue
        if key in set_keys or any(s.startswith(key + ".") or key.startswith(s + ".") for s in set_keys):
            problems.append(f"--grid {key}: also set by --set; give its values only in --grid")
        if any(key == p or key.startswith(p + ".") for p in SHARED_PREFIXES):
            problems.append(
                f"--grid {key}: every run of a sweep shares the seed, sample prompts, sample settings and runs "
                "folder so their samples compare; set it with --set instead"
            )
        seen: set[tuple[str, str]] = set()
        for value in values:
            if (type(value).__name__, repr(value)) in seen:
                problems.append(f"--grid {key}: the value {format_value(value)} is given twice")
            seen.add((type(value).__name__, repr(value)))
    if problems:
        raise ConfigError(*problems)


def _unknown_key(model: Any, key: str) -> str | None:
    """Why `key` names no setting (with a suggestion), or None when it does."""
    found = _field(model, key)
    return found if isinstance(found, str) else None


def _field(model: Any, key: str) -> FieldInfo | str | None:
    """The settings field `key` names; None for an entry of a free-form table (optimizer.args.x); else why not."""
    import difflib

    parts = key.split(".")
    annotation: Any = model
    info: FieldInfo | None = None
    for depth, part in enumerate(parts):
        if typing.get_origin(annotation) is dict:
            # A free-form table such as optimizer.args: its entries are checked when the config is validated.
            return None if depth == len(parts) - 1 else f"unknown key; {'.'.join(parts[: depth + 1])} is one value"
        fields = getattr(annotation, "model_fields", None)
        if fields is None:
            where = ".".join(parts[:depth])
            return f"unknown key; {where} is a single value, not a table"
        if part not in fields:
            close = difflib.get_close_matches(part, list(fields), n=1)
            prefix = ".".join(parts[:depth] + close) if close else ""
            return "unknown key" + (f"; did you mean '{prefix}'?" if close else "")
        info = fields[part]
        annotation = _model_in(info.annotation)
    if key == "preset":
        return "a sweep varies settings, not presets; run one sweep per preset"
    return info


def check_values(axes: Axes) -> None:
    """Each grid value against its setting's type and limits, on its own: a bad value is named once,
    not once per combination (rules between settings are checked per combination later)."""
    from pydantic import ConfigDict, TypeAdapter, ValidationError

    from kohya_wrap.config.models import Config

    problems = []
    for key, values in axes.items():
        info = _field(Config, key)
        if not isinstance(info, FieldInfo):
            continue
        annotated: Any = typing.Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        adapter: TypeAdapter[Any] = TypeAdapter(annotated, config=ConfigDict(strict=True))
        for value in values:
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                problems.append(f"--grid {key}={format_value(value)}: {error['msg']} (got {value!r})")
    if problems:
        raise ConfigError(*problems)


def _model_in(annotation: Any) -> Any:
    """The settings model inside `X`, `X | None` (not inside lists: their items are not addressed by key)."""
    if hasattr(annotation, "model_fields"):
        return annotation
    if typing.get_origin(annotation) is dict:
        return annotation
    if typing.get_origin(annotation) is list:
        return None
    for arg in typing.get_args(annotation):
        if hasattr(arg, "model_fields"):
            return arg
    return None


def expand(axes: Axes) -> list[dict[str, Any]]:
    """Every combination of the axes' values (the first axis changes slowest), as {key: value}."""
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]


def set_values(doc: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the config document with each dotted key set to its value."""
    result = copy.deepcopy(dict(doc))
    for key, value in values.items():
        *tables, last = key.split(".")
        node = result
        for part in tables:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[last] = copy.deepcopy(value)
    return result


def format_value(value: Any) -> str:
    """A value as the user would type it after `=`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return _short_float(value)
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def combination_text(values: Mapping[str, Any]) -> str:
    """`optimizer.type=Lion, network.dim=32`: how a combination is named in messages and listings."""
    return ", ".join(f"{key}={format_value(value)}" for key, value in values.items())


def _short_float(value: float) -> str:
    """`1e-4` rather than `0.0001` for small and large numbers (learning rates); `0.5` as it is."""
    if value == 0 or 1e-3 <= abs(value) < 1e5:
        return repr(value)
    mantissa, _, exponent = f"{value:e}".partition("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def name_suffix(values: Mapping[str, Any], axes: Axes) -> str:
    """A short readable suffix from the values of the axes that vary: `lion-d32`, `cosine-lr1e-4`."""
    parts = []
    for key, value in values.items():
        if len(axes.get(key, [])) < 2:
            continue
        parts.append(_slug(_label(key, value)))
    return "-".join(p for p in parts if p)


def _label(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value.lower()
    abbreviation = ABBREVIATIONS.get(key) or "".join(w[0] for w in key.split(".")[-1].split("_") if w)
    if isinstance(value, bool):
        return abbreviation + ("1" if value else "0")
    if isinstance(value, list):
        return abbreviation + "x".join(format_value(v) for v in value)
    return abbreviation + format_value(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "_", text.lower()).strip("_.-")


def unique_suffixes(combinations: Sequence[Mapping[str, Any]], axes: Axes) -> list[str]:
    """One suffix per combination; values that read the same (e.g. `Lion` and `lion`) get a number."""
    suffixes = [name_suffix(values, axes) for values in combinations]
    counts: dict[str, int] = {}
    for s in suffixes:
        counts[s] = counts.get(s, 0) + 1
    seen: dict[str, int] = {}
    result = []
    for s in suffixes:
        if counts[s] > 1:
            seen[s] = seen.get(s, 0) + 1
            s = f"{s}-{seen[s]}" if s else str(seen[s])
        result.append(s)
    return result


def check_name(name: str, key: str = "--name") -> None:
    """A sweep name becomes a file name: letters, digits, '.', '_' or '-' (so it never leads out of sweeps/)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"{key}: '{name}' is not a usable sweep name; use letters, digits, '.', '_' or '-' (up to 100), "
            "starting with a letter or digit"
        )


def record_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / SWEEPS_DIR / f"{name}.json"


def write_record(runs_dir: Path, record: SweepRecord) -> Path:
    """Write the sweep's record (never replacing an existing one: FileExistsError then)."""
    path = record_path(runs_dir, record.name)
    write_new_file(path, record.to_json())
    return path


def read_record(runs_dir: Path, name: str) -> SweepRecord:
    """The record of sweep `name` in `runs_dir` (RunError when it is missing or unreadable, ConfigError for a
    name that is not a sweep name, such as a path)."""
    check_name(name, "--sweep")
    path = record_path(runs_dir, name)
    try:
        doc = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        known = sorted(p.stem for p in (runs_dir / SWEEPS_DIR).glob("*.json"))
        hint = f"; known sweeps: {', '.join(known)}" if known else ""
        raise RunError(f"sweep: no sweep '{name}' in {runs_dir}{hint}") from None
    except (OSError, ValueError) as exc:
        raise RunError(f"sweep: cannot read {path}: {exc}") from None
    try:
        runs = tuple(SweepRun(Path(run["run_dir"]), dict(run["values"])) for run in doc["runs"])
        return SweepRecord(str(doc["name"]), {k: list(v) for k, v in doc["axes"].items()}, runs)
    except (KeyError, TypeError, AttributeError) as exc:
        raise RunError(f"sweep: {path} is not a sweep record ({exc!r})") from None


def sweep_runs(runs_dir: Path, name: str) -> list[Path]:
    """The run folders of sweep `name`, in grid order."""
    return [run.run_dir for run in read_record(runs_dir, name).runs]
