"""Pydantic's validation errors as the one-line `section.key: message` errors users read, with suggestions."""

from __future__ import annotations

import ast
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from kohya_wrap.config.models import Settings


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
    annotation: Any = Settings
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
    model: Any = Settings
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
