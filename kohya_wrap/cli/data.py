"""Dataset commands: tag, tags, prepare."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.common import (
    SET_OPTION,
    _load,
    echo_err,
    main,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kohya_wrap.config.models import CropMode
    from kohya_wrap.data.tagger import FolderTagging


OVERWRITE_OPTION = click.option(
    "--overwrite", is_flag=True, help="Re-tag images that have a caption (the old ones are backed up)."
)


BATCH_SIZE_OPTION = click.option(
    "--batch-size", type=int, help="Images per inference call [default: 1 on a CPU, 8 on a GPU]."
)


THREADS_OPTION = click.option("--threads", type=int, help="CPU threads for inference [default: all cores].")
INT8_OPTION = click.option(
    "--int8", is_flag=True, help="Run an int8 copy of the tagger: faster on CPUs, tags differ slightly."
)


def _tag_progress() -> Callable[[Path, int, int], None]:
    """Plain progress lines on stderr: about every 10 % of a folder, with the rate so far."""
    import time

    started: dict[Path, float] = {}

    def report(folder: Path, done: int, total: int) -> None:
        if done == 0:
            started[folder] = time.monotonic()
            echo_err(f"{folder.name}: tagging {_count(total, 'image')}")
        elif done == total or done % max(1, min(50, total // 10)) == 0:
            rate = done / max(time.monotonic() - started[folder], 1e-6)
            echo_err(f"{folder.name}: tagged {done}/{total} ({rate:.1f} images/s)")

    return report


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(paths: Sequence[Path], limit: int = 5) -> str:
    shown = ", ".join(p.name for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _print_tagging(result: FolderTagging) -> None:
    line = (
        f"{result.folder}: {_count(result.tagged, 'caption')} written, "
        f"{_count(result.kept, 'image')} kept {'its' if result.kept == 1 else 'their'} caption"
    )
    click.echo(line + (f" (originals backed up in {result.backup})" if result.backup else ""))
    if result.empty:
        echo_err(
            f"warning: {result.folder}: no tag passed the thresholds for {_names(result.empty)}; "
            "no caption written (lower --general-threshold or caption them by hand)"
        )


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--model",
    help="Tagger: a folder with model.onnx and selected_tags.csv, or a hub id [default: SmilingWolf/wd-vit-tagger-v3].",
)
@click.option(
    "--general-threshold",
    type=float,
    default=0.35,
    show_default=True,
    help="Keep general tags scoring at least this (higher: fewer, surer tags).",
)
@click.option(
    "--character-threshold",
    type=float,
    default=0.85,
    show_default=True,
    help="Keep character tags scoring at least this.",
)
@click.option("--trigger", help="Trigger word, put first in every caption (existing ones too).")
@click.option(
    "--crop",
    type=click.Choice(["none", "center", "focus"]),
    default="none",
    show_default=True,
    help="Crop to squares into --out: center, or focus (around the most detailed region).",
)
@click.option("--crop-size", type=int, help="Side of the cropped images, e.g. 512 (SD1.5) or 1024 (SDXL).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="New folder for the prepared images and captions [default: caption FOLDER in place].",
)
@OVERWRITE_OPTION
@BATCH_SIZE_OPTION
@THREADS_OPTION
@click.option("--decode-threads", type=int, help="Threads decoding images ahead of inference.")
@INT8_OPTION
@click.option("--rating-tags", is_flag=True, help="Add the rating tag (general, sensitive, …).")
@click.option("--replace-underscores", is_flag=True, help="Write 'green hair' instead of 'green_hair'.")
@click.option("--undesired", metavar="TAG,TAG", help="Tags never written.")
@click.option("--always-first", metavar="TAG,TAG", help="Tags moved to the front, in this order.")
@click.option("--caption-extension", default=".txt", show_default=True, help="Caption file extension.")
def tag(
    folder: Path,
    model: str | None,
    general_threshold: float,
    character_threshold: float,
    trigger: str | None,
    crop: CropMode,
    crop_size: int | None,
    out: Path | None,
    overwrite: bool,
    batch_size: int | None,
    threads: int | None,
    decode_threads: int | None,
    int8: bool,
    rating_tags: bool,
    replace_underscores: bool,
    undesired: str | None,
    always_first: str | None,
    caption_extension: str,
) -> None:
    """Caption the images in FOLDER with a WD14 tagger; images with a caption keep it."""
    from kohya_wrap.data.captions import (
        CaptionEdit,
        apply_plan,
        find_images,
        load_captions,
        parse_caption,
        plan_edit,
    )
    from kohya_wrap.data.images import prepare_folder
    from kohya_wrap.data.tagger import DEFAULT_MODEL, Tagger, TagOptions, resolve_model, tag_folder
    from kohya_wrap.errors import ConfigError, DatasetError

    options = TagOptions(
        general_threshold=general_threshold,
        character_threshold=character_threshold,
        rating_tags=rating_tags,
        replace_underscores=replace_underscores,
        undesired_tags=frozenset(parse_caption(undesired or "")),
        always_first_tags=tuple(parse_caption(always_first or "")),
        trigger_word=trigger,
    )
    if crop_size is not None and crop == "none":
        raise ConfigError("--crop-size: only used with --crop center or --crop focus")
    if crop != "none" and out is None:
        raise ConfigError(f"--crop {crop}: cropped copies go into a new folder; give --out DIR")
    if crop_size is not None and not 64 <= crop_size <= 8192:
        raise ConfigError(f"--crop-size: must be between 64 and 8192, got {crop_size}")
    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    if out is not None:
        prepare_folder(folder, out, crop, crop_size, (ext,))
        folder = out

    def make_tagger() -> Tagger:
        return Tagger(
            resolve_model(model or DEFAULT_MODEL),
            options,
            batch_size=batch_size,
            threads=threads,
            decode_threads=decode_threads,
            int8=int8,
        )

    result = tag_folder(folder, make_tagger, extension=ext, overwrite=overwrite, progress=_tag_progress())
    _print_tagging(result)
    if trigger:
        plan = plan_edit(load_captions(find_images(folder), ext), CaptionEdit(trigger=trigger))
        backup = apply_plan(folder, plan)
        if plan.changes:
            click.echo(
                f"{folder}: put '{trigger}' first in {_count(len(plan.changes), 'existing caption')} "
                f"(originals backed up in {backup})"
            )
    if result.failed:
        raise DatasetError(*result.failed)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--remove", metavar="TAG,TAG", help="Remove these tags from every caption.")
@click.option("--replace", multiple=True, metavar="OLD=NEW", help="Replace a tag (repeatable, or OLD=NEW,OLD=NEW).")
@click.option("--auto-prune", is_flag=True, help="Remove the tags most images share: the character's own traits.")
@click.option(
    "--min-share",
    type=float,
    default=0.6,
    show_default=True,
    help="Auto-prune: share of the images a tag must be in to go.",
)
@click.option("--keep", metavar="TAG,TAG", help="Auto-prune never removes these (added to the generic keep-list).")
@click.option("--trigger", help="Put this trigger word first in every caption (never pruned).")
@click.option("--apply", "apply_changes", is_flag=True, help="Write the changes; without it, only show them.")
@click.option("--caption-extension", default=".txt", show_default=True, help="Caption file extension.")
def tags(
    folder: Path,
    remove: str | None,
    replace: tuple[str, ...],
    auto_prune: bool,
    min_share: float,
    keep: str | None,
    trigger: str | None,
    apply_changes: bool,
    caption_extension: str,
) -> None:
    """Show how often each tag occurs in FOLDER's captions; remove, replace or auto-prune tags in bulk."""
    from kohya_wrap.data.captions import (
        DEFAULT_KEEP,
        CaptionEdit,
        apply_plan,
        find_images,
        load_captions,
        parse_caption,
        parse_replacements,
        plan_edit,
        propose_prune,
        tag_key,
        tag_stats,
    )
    from kohya_wrap.errors import DatasetError

    ext = caption_extension if caption_extension.startswith(".") else "." + caption_extension
    replacements = parse_replacements(replace)
    images = find_images(folder)
    captions = load_captions(images, ext)
    if not captions:
        raise DatasetError(f"{folder}: no {ext} captions; run `kohya-wrap tag {folder}` first")
    stats = tag_stats(captions.values())
    click.echo(
        f"{stats.images} captioned images in {folder}"
        + (f" ({len(images) - stats.images} without a caption)" if len(images) > stats.images else "")
    )
    click.echo("images  share  tag")
    for count in stats.tags:
        click.echo(f"{count.images:6}  {count.share:5.0%}  {count.tag}")
    removed = parse_caption(remove or "")
    proposed: tuple[str, ...] = ()
    if auto_prune:
        proposed = propose_prune(stats, min_share, DEFAULT_KEEP | set(parse_caption(keep or "")), trigger)
        click.echo(
            f"auto-prune: {_count(len(proposed), 'tag')} in at least {min_share:.0%} of the images and "
            f"not in the keep-list: {', '.join(proposed) or '-'}"
        )
    plan = plan_edit(captions, CaptionEdit(frozenset(removed) | set(proposed), replacements, trigger))
    images_with = {tag_key(c.tag): c.images for c in stats.tags}
    for name in removed:
        click.echo(f"remove {name}: {_count(images_with.get(tag_key(name), 0), 'caption')}")
    for old, new in replacements.items():
        click.echo(f"replace {old} → {new}: {_count(images_with.get(tag_key(old), 0), 'caption')}")
    if plan.emptied:
        echo_err(
            f"warning: {len(plan.emptied)} captions would be left empty and stay as they are: {_names(plan.emptied)}"
        )
    if not plan.changes:
        if removed or proposed or replacements or trigger:
            click.echo("nothing to change")
        return
    if not apply_changes:
        click.echo(
            f"dry run: {len(plan.changes)} of {stats.images} captions would change; add --apply to write "
            f"them (the originals are backed up in {folder}/.kohya_wrap-backup/)"
        )
        return
    backup = apply_plan(folder, plan)
    click.echo(f"changed {len(plan.changes)} captions; originals backed up in {backup}")


@main.command()
@click.argument("config", type=click.Path(path_type=Path))
@SET_OPTION
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Where cropped copies go, one folder per dataset folder [default: prepared/ beside CONFIG].",
)
@OVERWRITE_OPTION
@BATCH_SIZE_OPTION
@THREADS_OPTION
@INT8_OPTION
def prepare(
    config: Path,
    overrides: tuple[str, ...],
    out: Path | None,
    overwrite: bool,
    batch_size: int | None,
    threads: int | None,
    int8: bool,
) -> None:
    """Run CONFIG's [dataset] and [tagging] steps: crop into new folders, tag, edit, auto-prune."""
    from kohya_wrap.data.tagger import Tagger, prepare_dataset, resolve_model, tag_options
    from kohya_wrap.errors import DatasetError

    cfg = _load(config, overrides, None).config
    options = tag_options(cfg.tagging)

    def make_tagger() -> Tagger:
        return Tagger(resolve_model(cfg.tagging.model), options, batch_size=batch_size, threads=threads, int8=int8)

    out_root = out or config.resolve().parent / "prepared"
    done = prepare_dataset(cfg, out_root, make_tagger, overwrite=overwrite, progress=_tag_progress())
    for index in done.skipped:
        click.echo(f"dataset.dirs.{index}: regularisation folder, left as it is")
    for prepared in done.dirs:
        _print_tagging(prepared.tagging)
        if prepared.edited:
            click.echo(
                f"{prepared.folder}: trigger word and tag edits changed {_count(prepared.edited, 'caption')} "
                f"(originals backed up in {prepared.backup})"
            )
    if done.proposed and cfg.tagging.auto_prune:
        click.echo(f"auto-prune: {', '.join(done.proposed)} removed from {_count(done.pruned, 'caption')}")
    elif done.proposed:
        click.echo(
            f"auto-prune: {', '.join(done.proposed)} proposed for removal (set tagging.auto_prune = true, "
            "or run `kohya-wrap tags DIR --auto-prune --apply`)"
        )
    for prepared in done.dirs:
        if prepared.folder != prepared.source:
            click.echo(
                f"dataset.dirs.{prepared.index}.path: the prepared images are in {prepared.folder}; point "
                "the config at that folder to train on them"
            )
    failed = [line for prepared in done.dirs for line in prepared.tagging.failed]
    if failed:
        raise DatasetError(*failed)
