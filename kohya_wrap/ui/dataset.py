"""The dataset page: a known dataset folder's images and captions, tag counts, bulk edits, auto-prune and tagging."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from kohya_wrap.errors import DatasetError, KohyaWrapError
from kohya_wrap.ui.app import UiContext, error_response, file_response, read_json, refuse
from kohya_wrap.ui.security import PathRefused, known_folder, resolve_inside
from kohya_wrap.ui.tasks import Report, TaskState

if TYPE_CHECKING:
    from kohya_wrap.commands.data import TagsResult
    from kohya_wrap.config.models import Config, TaggingSettings


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset folder named by a known config, with the caption settings that config gives it."""

    path: Path
    config: Path  # the config (or run's config.toml) that names it
    caption_extension: str
    tagging: TaggingSettings


def known_configs(ctx: UiContext) -> list[Path]:
    """The configs the app knows: every run's config.toml and the TOML files in the config folder."""
    from kohya_wrap.train.runs import list_runs

    configs = sorted(ctx.config_dir.glob("*.toml")) if ctx.config_dir.is_dir() else []
    return configs + [layout.config for layout, _ in list_runs(ctx.runs_dir) if layout.config.is_file()]


def _load(path: Path) -> Config | None:
    from kohya_wrap.config.presets import load_config

    try:
        return load_config(path).config
    except KohyaWrapError:
        return None  # a config that does not validate names no folder the app will serve


def dataset_folders(ctx: UiContext) -> list[DatasetFolder]:
    """Every dataset folder of a known config (the first config naming a folder gives its settings).

    Every image request asks this, so the answer is kept until a config is added, removed or changed.
    """
    configs = known_configs(ctx)
    key = tuple((path, _mtime(path)) for path in configs)
    cached = ctx.cache.get("dataset_folders")
    if cached is not None and cached[0] == key:
        folders: list[DatasetFolder] = cached[1]
        return folders
    found: dict[Path, DatasetFolder] = {}
    for config_path in configs:
        cfg = _load(config_path)
        if cfg is None:
            continue
        for entry in cfg.dataset.dirs:
            folder = Path(entry.path).resolve()
            if folder.is_dir() and folder not in found:
                found[folder] = DatasetFolder(folder, config_path, cfg.dataset.caption_extension, cfg.tagging)
    folders = sorted(found.values(), key=lambda f: str(f.path))
    ctx.cache["dataset_folders"] = (key, folders)
    return folders


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def find_folder(ctx: UiContext, requested: str) -> DatasetFolder:
    folders = {f.path: f for f in dataset_folders(ctx)}
    try:
        return folders[known_folder(requested, folders)]
    except PathRefused:
        raise DatasetError(f"dataset: {requested!r} is not a dataset folder of a known config") from None


@dataclass(frozen=True)
class ImageRow:
    name: str
    caption: str | None  # None: no caption file


def _edit(folder: DatasetFolder, **options: Any) -> TagsResult:
    """The core's bulk tag edit with this folder's [tagging] settings (trigger word, keep-list, share)."""
    from kohya_wrap.commands.data import edit_tags

    settings = folder.tagging
    return edit_tags(
        folder.path,
        min_share=settings.auto_prune_min_share,
        keep=settings.keep_tags,
        trigger=settings.trigger_word,
        caption_extension=folder.caption_extension,
        **options,
    )


def folder_view(folder: DatasetFolder) -> dict[str, Any]:
    """Images with captions, the tag counts, and the auto-prune proposal (trigger word and keep-list kept)."""
    from kohya_wrap.data.captions import caption_path, find_images, format_caption, load_captions

    images = find_images(folder.path)
    captions = load_captions(images, folder.caption_extension)
    rows = []
    for image in images:
        tags = captions.get(caption_path(image, folder.caption_extension))
        rows.append(ImageRow(image.name, format_caption(tags).strip() if tags is not None else None))
    proposal = _edit(folder, auto_prune=True) if captions else None
    return {
        "rows": rows,
        "stats": proposal.stats.tags if proposal else (),
        "proposal": proposal.proposed if proposal else (),
        "uncaptioned": sum(1 for r in rows if r.caption is None),
    }


def _plain_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name:
        raise DatasetError(f"dataset: {name!r} is not a file name in this folder")
    return name


def edit_caption(folder: DatasetFolder, image_name: str, text: str) -> dict[str, Any]:
    """Replace one image's caption: the old one is backed up first, the new one written atomically."""
    from kohya_wrap.data.captions import EditPlan, apply_plan, caption_path, load_captions, parse_caption

    try:
        image = resolve_inside(folder.path, _plain_name(image_name))
    except PathRefused:
        raise DatasetError(f"dataset: no image {image_name!r} in {folder.path}") from None
    tags = parse_caption(text)
    if not tags:
        raise DatasetError(f"{caption_path(image, folder.caption_extension)}: a caption needs at least one tag")
    path = caption_path(image, folder.caption_extension)
    old = load_captions([image], folder.caption_extension).get(path)
    if old == tags:
        return {"changed": False, "backup": None}
    backup = apply_plan(folder.path, EditPlan({path: tags}, (), 0))
    return {"changed": True, "backup": str(backup) if backup else None}


def bulk_edit(folder: DatasetFolder, doc: dict[str, Any]) -> dict[str, Any]:
    """Remove / replace / auto-prune tags in every caption: a preview, or (apply) the backed-up rewrite."""
    from kohya_wrap.data.captions import parse_caption, parse_replacements

    remove = doc.get("remove", "")
    replace = doc.get("replace", "")
    if not isinstance(remove, str) or not isinstance(replace, str):
        raise DatasetError("dataset: remove and replace must be texts like `tag, tag` and `old=new, old=new`")
    result = _edit(
        folder,
        remove=parse_caption(remove),
        replace=parse_replacements([replace]) if replace.strip() else {},
        auto_prune=bool(doc.get("prune")),
        apply=bool(doc.get("apply")),
    )
    return {
        "changes": len(result.plan.changes),
        "of": result.stats.images,
        "emptied": [p.name for p in result.plan.emptied],
        "pruned": list(result.proposed),
        "applied": result.applied,
        "backup": str(result.backup) if result.backup else None,
    }


def routes(ctx: UiContext) -> list[BaseRoute]:
    def dataset_page(request: Request) -> Response:
        requested = request.query_params.get("dir")
        folders = dataset_folders(ctx)
        if not requested:
            return ctx.page(request, "datasets.html", folders=folders, nav="dataset")
        try:
            folder = find_folder(ctx, requested)
            view = folder_view(folder)
        except KohyaWrapError as exc:
            return ctx.page(request, "error.html", 404, lines=exc.lines, nav="dataset")
        return ctx.page(request, "dataset.html", folder=folder, view=view, nav="dataset")

    def image(request: Request) -> Response:
        try:
            folder = find_folder(ctx, request.query_params.get("dir", ""))
            path = resolve_inside(folder.path, _plain_name(request.query_params.get("name", "")))
        except (KohyaWrapError, PathRefused):
            return refuse(404, "ui: no such file in a known dataset folder")
        return file_response(path)

    async def post(request: Request, work: Any) -> Response:
        try:
            doc = await read_json(request, "dataset: the request", DatasetError)
            if not isinstance(doc.get("dir"), str):
                raise DatasetError("dataset: the request names no dataset folder; reload the page")

            def run() -> dict[str, Any]:
                result: dict[str, Any] = work(find_folder(ctx, doc["dir"]), doc)
                return result

            result = await asyncio.to_thread(run)
        except KohyaWrapError as exc:
            return error_response(exc)
        return JSONResponse({"ok": True, **result})

    async def caption(request: Request) -> Response:
        def work(folder: DatasetFolder, doc: dict[str, Any]) -> dict[str, Any]:
            name, text = doc.get("name"), doc.get("caption")
            if not isinstance(name, str) or not isinstance(text, str):
                raise DatasetError("dataset: send the image name and its caption text")
            return edit_caption(folder, name, text)

        return await post(request, work)

    async def edit(request: Request) -> Response:
        return await post(request, bulk_edit)

    async def tag(request: Request) -> Response:
        def work(folder: DatasetFolder, doc: dict[str, Any]) -> dict[str, Any]:
            state = start_tagging(ctx, folder, bool(doc.get("overwrite")))
            return {"task": state.id}

        return await post(request, work)

    async def task_events(request: Request) -> Response:
        task_id = request.path_params["task"]
        if ctx.tasks.get(task_id) is None:
            return refuse(404, "ui: no such task")

        def snapshot() -> dict[str, Any]:
            state = ctx.tasks.get(task_id)
            assert state is not None
            return state.to_dict()

        return await ctx.stream(request, snapshot, lambda value: value["status"] != "running")

    return [
        Route("/dataset", dataset_page),
        Route("/files/dataset", image),
        Route("/dataset/caption", caption, methods=["POST"]),
        Route("/dataset/edit", edit, methods=["POST"]),
        Route("/dataset/tag", tag, methods=["POST"]),
        Route("/events/tasks/{task}", task_events),
    ]


def start_tagging(ctx: UiContext, folder: DatasetFolder, overwrite: bool) -> TaskState:
    """Caption the folder's images with its config's tagger in a background task, reporting progress."""
    from kohya_wrap.commands.data import tag
    from kohya_wrap.data.tagger import tag_options

    settings = folder.tagging

    def work(report: Report) -> list[str]:
        result = tag(
            folder.path,
            tag_options(settings),
            model=settings.model,
            overwrite=overwrite,
            caption_extension=folder.caption_extension,
            progress=lambda _folder, done, total: report(done, total),
        )
        tagging = result.prepared.tagging
        lines = [f"{tagging.tagged} captions written, {tagging.kept} kept as they were"]
        if tagging.empty:
            lines.append(f"{len(tagging.empty)} images had no tag above the thresholds: no caption written")
        if result.prepared.backup is not None or tagging.backup is not None:
            lines.append(f"replaced captions backed up in {result.prepared.backup or tagging.backup}")
        if tagging.failed:
            raise DatasetError(*lines, *tagging.failed)
        return lines

    return ctx.tasks.start(str(folder.path), f"tagging {folder.path.name}", work)
