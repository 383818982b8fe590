"""Dataset commands: tag, tags, prepare."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from kohya_wrap.cli.common import (
    SET_OPTION,
    echo_err,
    main,
)
from kohya_wrap.config.tagger_defaults import (
    AUTO_PRUNE_MIN_SHARE,
    CHARACTER_THRESHOLD,
    GENERAL_THRESHOLD,
    TAGGER_MODEL,
)
from kohya_wrap.data.names import file_names

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from kohya_wrap.config.models import CropMode
    from kohya_wrap.data.prepare import PreparedDir
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


def _print_tagging(result: FolderTagging) -> None:
    line = (
        f"{result.folder}: {_count(result.tagged, 'caption')} written, "
        f"{_count(result.kept, 'image')} kept {'its' if result.kept == 1 else 'their'} caption"
    )
    click.echo(line + (f" (originals backed up in {result.backup})" if result.backup else ""))
    if result.empty:
        echo_err(
            f"warning: {result.folder}: no tag passed the thresholds for {file_names(result.empty)}; "
            "no caption written (lower --general-threshold or caption them by hand)"
        )


def _print_replaced_trigger(prepared: PreparedDir, trigger: str | None) -> None:
    if prepared.replaced_trigger:
        click.echo(
            f"{prepared.folder}: '{trigger}' replaced the earlier trigger word '{prepared.replaced_trigger}' "
            "(the tag that led every caption)"
        )


def _warn_several_lines(paths: Sequence[Path]) -> None:
    if paths:
        echo_err(
            f"warning: {_count(len(paths), 'caption')} {'has' if len(paths) == 1 else 'have'} several lines; "
            f"sd-scripts reads only the first, so only it is counted and edited: {file_names(paths)}"
        )


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--model",
    help=f"Tagger: a folder with model.onnx and selected_tags.csv, or a hub id [default: {TAGGER_MODEL}].",
)
@click.option(
    "--general-threshold",
    type=float,
    default=GENERAL_THRESHOLD,
    show_default=True,
    help="Keep general tags scoring at least this (higher: fewer, surer tags).",
)
@click.option(
    "--character-threshold",
    type=float,
    default=CHARACTER_THRESHOLD,
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
    from kohya_wrap.commands.data import Inference, tag_options
    from kohya_wrap.commands.data import tag as tag_folder
    from kohya_wrap.data.captions import parse_caption
    from kohya_wrap.errors import DatasetError

    options = tag_options(
        general_threshold=general_threshold,
        character_threshold=character_threshold,
        trigger=trigger,
        rating_tags=rating_tags,
        replace_underscores=replace_underscores,
        undesired=parse_caption(undesired or ""),
        always_first=parse_caption(always_first or ""),
    )
    done = tag_folder(
        folder,
        options,
        model=model,
        crop=crop,
        crop_size=crop_size,
        out=out,
        overwrite=overwrite,
        inference=Inference(batch_size, threads, decode_threads, int8),
        caption_extension=caption_extension,
        progress=_tag_progress(),
    )
    prepared = done.prepared
    _print_tagging(prepared.tagging)
    if prepared.edited:
        click.echo(
            f"{prepared.folder}: put '{options.trigger_word}' first in "
            f"{_count(prepared.edited, 'existing caption')} (originals backed up in {prepared.backup})"
        )
    _print_replaced_trigger(prepared, options.trigger_word)
    _warn_several_lines(done.several_lines)
    if prepared.tagging.failed:
        raise DatasetError(*prepared.tagging.failed)


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--remove", metavar="TAG,TAG", help="Remove these tags from every caption.")
@click.option("--replace", multiple=True, metavar="OLD=NEW", help="Replace a tag (repeatable, or OLD=NEW,OLD=NEW).")
@click.option("--auto-prune", is_flag=True, help="Remove the tags most images share: the character's own traits.")
@click.option(
    "--min-share",
    type=float,
    default=AUTO_PRUNE_MIN_SHARE,
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
    from kohya_wrap.commands.data import edit_tags
    from kohya_wrap.data.captions import parse_caption, parse_replacements

    replacements = parse_replacements(replace)
    removed = parse_caption(remove or "")
    done = edit_tags(
        folder,
        remove=removed,
        replace=replacements,
        auto_prune=auto_prune,
        min_share=min_share,
        keep=parse_caption(keep or ""),
        trigger=trigger,
        apply=apply_changes,
        caption_extension=caption_extension,
    )
    stats, plan = done.stats, done.plan
    _warn_several_lines(done.several_lines)
    click.echo(
        f"{stats.images} captioned images in {folder}"
        + (f" ({done.images - stats.images} without a caption)" if done.images > stats.images else "")
    )
    click.echo("images  share  tag")
    for count in stats.tags:
        click.echo(f"{count.images:6}  {count.share:5.0%}  {count.tag}")
    if auto_prune:
        click.echo(
            f"auto-prune: {_count(len(done.proposed), 'tag')} in at least {min_share:.0%} of the images and "
            f"not in the keep-list: {', '.join(done.proposed) or '-'}"
        )
    if done.kept_trigger:
        click.echo(
            f"auto-prune: keeps '{done.kept_trigger}', the first tag of every caption (the trigger word); "
            f"remove it with --remove '{done.kept_trigger}'"
        )
    for name in removed:
        click.echo(f"remove {name}: {_count(done.captions_with(name), 'caption')}")
    for old, new in replacements.items():
        click.echo(f"replace {old} → {new}: {_count(done.captions_with(old), 'caption')}")
    if done.replaced_trigger:
        click.echo(
            f"trigger word {done.replaced_trigger} → {trigger}: "
            f"{_count(done.captions_with(done.replaced_trigger), 'caption')} ('{done.replaced_trigger}' led every "
            "caption)"
        )
    if plan.emptied:
        echo_err(
            f"warning: {len(plan.emptied)} captions would be left empty and stay as they are: "
            f"{file_names(plan.emptied)}"
        )
    if not plan.changes:
        if removed or done.proposed or replacements or trigger:
            click.echo("nothing to change")
        return
    if not done.applied:
        click.echo(
            f"dry run: {len(plan.changes)} of {stats.images} captions would change; add --apply to write "
            f"them (the originals are backed up in {folder}/.kohya_wrap-backup/)"
        )
        return
    click.echo(f"changed {len(plan.changes)} captions; originals backed up in {done.backup}")


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
    from kohya_wrap.commands.data import Inference
    from kohya_wrap.commands.data import prepare as prepare_dataset
    from kohya_wrap.errors import DatasetError

    result = prepare_dataset(
        config,
        overrides,
        out=out,
        overwrite=overwrite,
        inference=Inference(batch_size, threads, None, int8),
        progress=_tag_progress(),
    )
    done = result.preparation
    for index in done.skipped:
        click.echo(f"dataset.dirs.{index}: regularisation folder, left as it is")
    for prepared in done.dirs:
        _print_tagging(prepared.tagging)
        if prepared.edited:
            click.echo(
                f"{prepared.folder}: trigger word and tag edits changed {_count(prepared.edited, 'caption')} "
                f"(originals backed up in {prepared.backup})"
            )
        if prepared.replaced_trigger:
            click.echo(
                f"{prepared.folder}: tagging.trigger_word replaced the earlier trigger word "
                f"'{prepared.replaced_trigger}' (the tag that led every caption)"
            )
    _warn_several_lines(done.several_lines)
    if done.kept_trigger:
        click.echo(f"auto-prune: keeps '{done.kept_trigger}', the first tag of every caption (the trigger word)")
    if done.proposed and result.auto_prune:
        click.echo(f"auto-prune: {', '.join(done.proposed)} removed from {_count(done.pruned, 'caption')}")
        for backup in done.prune_backups:
            click.echo(f"auto-prune: originals backed up in {backup}")
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
