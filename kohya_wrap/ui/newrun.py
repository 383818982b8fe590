"""The new-run page: a preset, a form from the settings schema, live checks, then save the TOML and/or queue it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kohya_wrap.errors import ConfigError, KohyaWrapError
from kohya_wrap.files import write_new_file
from kohya_wrap.ui.app import UiContext, error_response, read_json
from kohya_wrap.ui.forms import CheckResult, check, form_overrides, form_sections, overrides_toml, preset_values

T = TypeVar("T")


@dataclass(frozen=True)
class FormInput:
    """A submitted form: the preset, the field texts, where to save and whether to queue."""

    preset: str
    values: dict[str, str]
    path: str
    queue: bool
    priority: int
    grid: list[str]  # sweep axes, `key=v1,v2` each (empty: one run)


async def read_form(request: Request) -> FormInput:
    """The JSON body the page posts; anything malformed is a one-line ConfigError."""
    doc = await read_json(request, "ui: the form", ConfigError)
    values = doc.get("values", {})
    preset = doc.get("preset")
    if not isinstance(preset, str) or not preset:
        raise ConfigError("preset: pick a preset")
    if not isinstance(values, Mapping) or not all(isinstance(v, str) for v in values.values()):
        raise ConfigError("ui: the form's values must be texts; reload the page")
    priority = doc.get("priority", 0)
    if isinstance(priority, str):
        try:
            priority = int(priority or "0")
        except ValueError:
            raise ConfigError(f"queue.priority: must be a whole number, got {priority!r}") from None
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ConfigError("queue.priority: must be a whole number")
    grid = doc.get("grid", "")
    if not isinstance(grid, str):
        raise ConfigError("sweep.grid: one `key=v1,v2` per line")
    return FormInput(
        preset,
        {str(k): v for k, v in values.items()},
        str(doc.get("path", "")),
        bool(doc.get("queue")),
        priority,
        [line.strip() for line in grid.splitlines() if line.strip()],
    )


def config_target(config_dir: Path, name: str) -> Path:
    """Where a new config goes: a plain `.toml` file name inside the config folder, not there yet."""
    name = name.strip()
    if not name:
        raise ConfigError("save: give a file name for the config, e.g. zdm.toml")
    if "/" in name or "\\" in name or name.startswith(".") or "\x00" in name:
        raise ConfigError(f"save: {name!r}: give a plain file name (it is saved in {config_dir})")
    if not name.endswith(".toml"):
        name += ".toml"
    path = config_dir / name
    if path.exists():
        raise ConfigError(f"save: {path} already exists; choose another name (nothing is overwritten)")
    return path


def routes(ctx: UiContext) -> list[BaseRoute]:
    def new_page(request: Request) -> Response:
        from kohya_wrap.config.presets import list_presets

        presets = list_presets()
        names = [name for name, _ in presets]
        preset = request.query_params.get("preset") or (names[0] if names else "")
        if preset not in names:
            return ctx.page(request, "error.html", 404, lines=[f"preset: unknown preset {preset!r}"], nav="new")
        return ctx.page(
            request,
            "new.html",
            presets=presets,
            preset=preset,
            sections=form_sections(),
            # Runs made here land in the runs folder this app shows, unless the form says otherwise.
            values={"run.runs_dir": str(ctx.runs_dir), **preset_values(preset)},
            config_dir=ctx.config_dir,
            nav="new",
        )

    async def check_form(request: Request) -> Response:
        try:
            form = await read_form(request)
            overrides = form_overrides(form.preset, form.values)
        except KohyaWrapError as exc:
            return JSONResponse(CheckResult(exc.lines, (), ()).to_dict())
        result = await _off_loop(lambda: check(form.preset, overrides))
        return JSONResponse(result.to_dict())

    async def save_form(request: Request) -> Response:
        try:
            form = await read_form(request)
            result = await _off_loop(lambda: save(ctx, form))
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, **result})

    return [
        Route("/new", new_page),
        Route("/new/check", check_form, methods=["POST"]),
        Route("/new/save", save_form, methods=["POST"]),
    ]


async def _off_loop(work: Callable[[], T]) -> T:
    """Checks read the dataset folder: they run in a worker thread, never on the event loop."""
    return await asyncio.to_thread(work)


def save(ctx: UiContext, form: FormInput) -> dict[str, Any]:
    """Check everything, then write the new config (never over a file) and, if asked, queue its run or sweep."""
    from kohya_wrap.ui import queue

    overrides = form_overrides(form.preset, form.values)
    result = check(form.preset, overrides)
    if result.errors:
        raise ConfigError(*result.errors)
    target = config_target(ctx.config_dir, form.path) if form.path.strip() else None
    if target is None and not form.queue:
        raise ConfigError("save: give a file name, or tick 'add to the queue'")
    if form.grid and not form.queue:
        raise ConfigError("sweep.grid: a sweep is queued; tick 'add to the queue' (or clear the grid)")
    text = overrides_toml(form.preset, overrides)

    def write() -> None:
        if target is None:
            return
        try:
            write_new_file(target, text)
        except FileExistsError:
            raise ConfigError(
                f"save: {target} appeared meanwhile; choose another name (nothing is overwritten)"
            ) from None

    saved = {"saved": str(target) if target else None}
    if not form.queue:
        write()
        return saved
    # A queued run (or every run of a sweep) is checked for training before the config file is written.
    if form.grid:
        return saved | queue.queue_sweep(form.preset, overrides, form.grid, form.priority, before=write)
    return saved | queue.queue_config(form.preset, overrides, form.priority, before=write)
