"""The compare page: pick runs (or a sweep) and an epoch; the comparison sheet is written and shown."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kohya_wrap.errors import ConfigError, KohyaWrapError
from kohya_wrap.ui.app import UiContext, error_response, read_json
from kohya_wrap.ui.security import PathRefused, resolve_inside

SHEET = "compare.png"


def sweeps(ctx: UiContext) -> list[str]:
    folder = ctx.runs_dir / "sweeps"
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def comparisons(ctx: UiContext) -> list[str]:
    """Earlier comparison folders in the runs folder, newest first."""
    found = [p for p in ctx.runs_dir.glob("compare-*") if (p / SHEET).is_file()] if ctx.runs_dir.is_dir() else []
    return [p.name for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def sheet(ctx: UiContext, name: str) -> dict[str, Any] | None:
    """An earlier comparison's sheet and page, by folder name (None when there is no such folder)."""
    try:
        image = resolve_inside(ctx.runs_dir, f"{name}/{SHEET}")
    except PathRefused:
        return None
    page = image.parent / "index.html"
    return {
        "name": name,
        "sheet": ctx.run_file_url(image),
        "page": ctx.run_file_url(page) if page.is_file() else None,
    }


def run_compare(ctx: UiContext, doc: Any) -> dict[str, Any]:
    """Check the choice, then write a new comparison folder with the core's `compare`."""
    from kohya_wrap.commands.compare import compare, parse_epoch

    if not isinstance(doc, dict):
        raise ConfigError("compare: the choice did not arrive as a JSON object; reload the page")
    runs, sweep = doc.get("runs", []), doc.get("sweep") or None
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        raise ConfigError("compare: runs must be a list of run names")
    if sweep is not None and (not isinstance(sweep, str) or sweep not in sweeps(ctx)):
        raise ConfigError(f"compare: no sweep called {sweep!r} in {ctx.runs_dir / 'sweeps'}")
    epoch = parse_epoch(str(doc.get("epoch") or "final"))
    dirs = [ctx.watcher.layout(r).root for r in runs]
    result = compare(dirs, sweep=sweep, runs_dir=ctx.runs_dir, epoch=epoch)
    shown = sheet(ctx, result.folder.name)
    return {
        **(shown or {}),
        "labels": [list(labels) for labels in result.labels],
        "runs": [p.name for p in result.runs],
        "missing": list(result.missing),
    }


def routes(ctx: UiContext) -> list[BaseRoute]:
    def compare_page(request: Request) -> Response:
        chosen = request.query_params.get("sheet")
        shown = sheet(ctx, chosen) if chosen else None
        return ctx.page(
            request,
            "compare.html",
            runs=ctx.watcher.all(),
            sweeps=sweeps(ctx),
            earlier=comparisons(ctx),
            shown=shown,
            nav="compare",
        )

    async def make(request: Request) -> Response:
        try:
            doc = await read_json(request, "compare: the choice", ConfigError)
            result = await asyncio.to_thread(run_compare, ctx, doc)
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, **result})

    return [Route("/compare", compare_page), Route("/compare", make, methods=["POST"])]
