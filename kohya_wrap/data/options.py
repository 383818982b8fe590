"""Command options checked by the settings field they stand for, so every limit and normaliser lives in one place."""

from __future__ import annotations

from typing import Any

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

from kohya_wrap.errors import ConfigError

_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def check_option(model: type[BaseModel], name: str, value: Any, key: str) -> Any:
    """`value` run through the settings field `model.name` (its limits and validator); returns the value as
    the settings would hold it (e.g. `txt` → `.txt`), or raises ConfigError `key: message, got value`."""
    try:
        checked = model.__pydantic_validator__.validate_assignment(model.model_construct(), name, value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        if error["type"] in _RANGE_ERRORS:
            message = _range_words(model, name)
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
        shown = repr(value) if isinstance(value, str) else str(value)
        raise ConfigError(f"{key}: {message}, got {shown}") from None
    return getattr(checked, name)


def _range_words(model: type[BaseModel], name: str) -> str:
    """The field's bounds in words: `between 0 and 1 (exclusive)`, `between 64 and 8192`, `above 0 and at most 1`."""
    low: tuple[Any, bool] | None = None  # (bound, inclusive)
    high: tuple[Any, bool] | None = None
    for item in model.model_fields[name].metadata:
        if isinstance(item, Gt | Ge):
            low = (item.gt, False) if isinstance(item, Gt) else (item.ge, True)
        elif isinstance(item, Lt | Le):
            high = (item.lt, False) if isinstance(item, Lt) else (item.le, True)
    if low and high and low[1] == high[1]:
        return f"must be between {low[0]} and {high[0]}" + ("" if low[1] else " (exclusive)")
    parts = []
    if low:
        parts.append(f"{'at least' if low[1] else 'above'} {low[0]}")
    if high:
        parts.append(f"{'at most' if high[1] else 'below'} {high[0]}")
    return "must be " + " and ".join(parts)
