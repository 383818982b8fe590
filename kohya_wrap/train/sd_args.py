"""The sd-scripts argument spec (generated from its parsers) and checks of training TOML keys against it."""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

SCRIPT_BY_FAMILY: Mapping[str, str] = types.MappingProxyType(
    {"sd15": "train_network.py", "sdxl": "sdxl_train_network.py", "flux": "flux_train_network.py"}
)

# sd-scripts puts TOML values into its namespace without argparse's `type=` conversion, so the
# TOML value must already have the Python type the training code expects. int is accepted where
# float is expected because Python arithmetic treats them alike; bool is never an int here.
_ACCEPTED_TYPES: Mapping[str, tuple[type, ...]] = types.MappingProxyType(
    {
        "bool": (bool,),
        "int": (int,),
        "float": (float, int),
        "int_or_float": (float, int),
        "str": (str,),
        "Path": (str,),
    }
)
# How a message names a parser type the user never wrote themselves.
_TYPE_WORDS: Mapping[str, str] = types.MappingProxyType({"int_or_float": "int or float", "Path": "str"})
_LIST_NARGS = ("*", "+")


@dataclass(frozen=True)
class ArgOption:
    """One argparse option of an sd-scripts training script, as recorded in the spec."""

    dest: str
    option_strings: tuple[str, ...]
    type: str
    default: object
    choices: tuple[object, ...] | None
    nargs: str | int | None
    action: str

    @property
    def is_list(self) -> bool:
        """Whether the option takes several values (a TOML array)."""
        return self.nargs in _LIST_NARGS


@dataclass(frozen=True)
class ArgSpec:
    """Every option of each sd-scripts training script at the commit the spec was generated from."""

    sd_scripts_commit: str
    scripts: Mapping[str, Mapping[str, ArgOption]]

    def options(self, script: str) -> Mapping[str, ArgOption]:
        """The options of `script` (e.g. `train_network.py`) by dest name."""
        try:
            return self.scripts[script]
        except KeyError:
            known = ", ".join(sorted(self.scripts))
            raise ValueError(f"no sd-scripts arg spec for {script!r}; known scripts: {known}") from None


def _option(record: Mapping[str, Any]) -> ArgOption:
    choices = record["choices"]
    return ArgOption(
        dest=record["dest"],
        option_strings=tuple(record["option_strings"]),
        type=record["type"],
        default=record["default"],
        choices=None if choices is None else tuple(choices),
        nargs=record["nargs"],
        action=record["action"],
    )


@cache
def load_spec() -> ArgSpec:
    """The packaged spec (`sd_scripts_args.json`), read once per process."""
    text = resources.files("kohya_wrap.train").joinpath("sd_scripts_args.json").read_text(encoding="utf-8")
    raw = json.loads(text)
    scripts = {
        script: types.MappingProxyType({dest: _option(rec) for dest, rec in options.items()})
        for script, options in raw["scripts"].items()
    }
    return ArgSpec(sd_scripts_commit=raw["sd_scripts_commit"], scripts=types.MappingProxyType(scripts))


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def _has_type(value: object, accepted: tuple[type, ...]) -> bool:
    # bool is a subclass of int: `network_dim = true` must not pass as an int.
    if isinstance(value, bool):
        return bool in accepted
    return isinstance(value, accepted)


def _check_value(script: str, option: ArgOption, value: object) -> list[str]:
    where = f"sd-scripts argument {option.dest!r} for {script}"
    accepted = _ACCEPTED_TYPES.get(option.type)
    wanted = _TYPE_WORDS.get(option.type, option.type)
    if option.is_list:
        wanted = f"a list of {wanted}"
        if not isinstance(value, list):
            return [f"{where} must be {wanted}, got {_describe(value)}"]
        items: list[object] = value
    else:
        items = [value]
    # An option whose type is a custom function we do not know cannot be type-checked here.
    if accepted is not None and not all(_has_type(item, accepted) for item in items):
        return [f"{where} must be {wanted}, got {_describe(value)}"]
    if option.choices is not None:
        allowed = ", ".join(repr(c) for c in option.choices)
        return [f"{where} must be one of {allowed}, got {item!r}" for item in items if item not in option.choices]
    return []


def check_training_args(script: str, args: Mapping[str, object]) -> list[str]:
    """One message per key of a flat training TOML that sd-scripts would silently misread.

    sd-scripts accepts unknown keys and skips `type=`/`choices` for TOML values, so a typo or a
    string where an int belongs only shows up, if ever, deep into a run.
    """
    options = load_spec().options(script)
    problems: list[str] = []
    for key, value in args.items():
        option = options.get(key)
        if option is None:
            close = difflib.get_close_matches(key, options.keys(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown sd-scripts argument {key!r} for {script}{hint}")
            continue
        problems.extend(_check_value(script, option, value))
    return problems


def flatten_training_toml(doc: Mapping[str, object]) -> dict[str, object]:
    """The flat namespace sd-scripts builds from a training TOML (`train_util.read_config_from_file`).

    Top-level tables are merged into one dict, their names dropped; a key seen again later wins.
    Only one level is flattened: a nested table `[a.b]` becomes key `b` holding a dict.
    """
    flat: dict[str, object] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat
