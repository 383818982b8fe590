"""Dataset preparation: check every folder first, then crop, tag and edit captions folder by folder, then prune."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from kohya_wrap.config.models import Config, CropMode
from kohya_wrap.data.captions import (
    DEFAULT_KEEP,
    CaptionEdit,
    TagStats,
    apply_plan,
    find_images,
    leading_tag,
    load_captions,
    plan_edit,
    prune_proposal,
    several_lines,
    tag_key,
    tag_stats,
)
from kohya_wrap.data.images import prepare_folder, prepared_names
from kohya_wrap.data.tagger import FolderTagging, Progress, Tagger, tag_folder
from kohya_wrap.errors import DatasetError


@dataclass(frozen=True)
class FolderSteps:
    """What to do to every folder: where crops go (none: caption in place), the caption edit, overwrite."""

    crop: CropMode
    crop_size: int | None
    extension: str
    overwrite: bool
    edit: CaptionEdit


@dataclass(frozen=True)
class FolderInput:
    """One dataset folder, checked; nothing has been written yet."""

    index: int  # position in dataset.dirs (0 for a single folder)
    source: Path
    target: Path  # where the training images and captions will be (source unless cropped)
    untagged: int  # images the tagger will caption
    previous_trigger: str | None  # the tag leading every existing caption (see `leading_tag`)
    several_lines: tuple[Path, ...]  # captions whose lines after the first sd-scripts ignores


@dataclass(frozen=True)
class PreparedDir:
    index: int  # position in dataset.dirs
    source: Path
    folder: Path  # where the training images and captions are now (source unless cropped)
    tagging: FolderTagging
    edited: int  # captions changed by trigger word, remove_tags and replace_tags
    backup: Path | None
    replaced_trigger: str | None  # an earlier trigger word the new one replaced


def check_folder(index: int, source: Path, target: Path | None, steps: FolderSteps) -> FolderInput:
    """Everything about one folder that can fail, checked without writing: images, crop target, captions."""
    if target is not None:
        prepared_names(source, target, steps.crop, steps.crop_size)
    images = find_images(source)
    captions = load_captions(images, steps.extension)  # an unreadable or non-UTF-8 caption stops here
    untagged = len(images) if steps.overwrite else len(images) - len(captions)
    return FolderInput(
        index,
        source,
        target or source,
        untagged,
        leading_tag(captions.values()),
        tuple(several_lines(captions)),
    )


def prepare_folders(
    inputs: Sequence[FolderInput],
    make_tagger: Callable[[], Tagger],
    steps: FolderSteps,
    progress: Progress | None = None,
) -> tuple[PreparedDir, ...]:
    """Crop (into each new target), tag what has no caption, then put the trigger word first and edit tags.

    The tagger is loaded before the first file is written, so a model that cannot load leaves no crops.
    """
    tagger = make_tagger() if any(i.untagged for i in inputs) else None

    def loaded() -> Tagger:
        assert tagger is not None  # tag_folder asks only when check_folder counted images to tag
        return tagger

    prepared = []
    for item in inputs:
        if item.target != item.source:
            prepare_folder(item.source, item.target, steps.crop, steps.crop_size, (steps.extension,))
        tagging = tag_folder(
            item.target, loaded, extension=steps.extension, overwrite=steps.overwrite, progress=progress
        )
        edit = replace(steps.edit, previous_trigger=item.previous_trigger)
        plan = plan_edit(load_captions(find_images(item.target), steps.extension), edit)
        replaced = None
        if edit.trigger and item.previous_trigger and tag_key(item.previous_trigger) != tag_key(edit.trigger):
            replaced = item.previous_trigger
        backup = apply_plan(item.target, plan)
        prepared.append(PreparedDir(item.index, item.source, item.target, tagging, len(plan.changes), backup, replaced))
    return tuple(prepared)


@dataclass(frozen=True)
class DatasetPreparation:
    dirs: tuple[PreparedDir, ...]
    skipped: tuple[int, ...]  # regularisation folders, left as they are
    stats: TagStats  # over all training captions, before auto-prune
    proposed: tuple[str, ...]  # auto-prune's proposal
    pruned: int  # captions auto-prune changed (0 unless tagging.auto_prune)
    kept_trigger: str | None  # the tag leading every caption, kept by auto-prune as the trigger word
    several_lines: tuple[Path, ...]  # captions whose lines after the first sd-scripts ignores
    prune_backups: tuple[Path, ...] = ()  # where auto-prune put the captions it changed


def check_dataset(cfg: Config, out_root: Path, overwrite: bool) -> tuple[FolderSteps, list[FolderInput]]:
    """Every training folder of `cfg` checked (and where its crops go) before `prepare_dataset` writes."""
    ds, tagging = cfg.dataset, cfg.tagging
    training = [(i, Path(d.path)) for i, d in enumerate(ds.dirs) if not d.is_reg]
    names = [source.name for _, source in training]
    if ds.crop != "none" and len(set(names)) < len(names):
        raise DatasetError("dataset.dirs: two training folders share a name, so their prepared copies under "
                           f"{out_root} would collide; rename one")  # fmt: skip
    edit = CaptionEdit(frozenset(tagging.remove_tags), dict(tagging.replace_tags), tagging.trigger_word)
    steps = FolderSteps(ds.crop, ds.crop_size, ds.caption_extension, overwrite, edit)
    inputs = []
    for index, source in training:
        inputs.append(check_folder(index, source, out_root / source.name if ds.crop != "none" else None, steps))
    return steps, inputs


def prepare_dataset(
    cfg: Config,
    steps: FolderSteps,
    inputs: Sequence[FolderInput],
    make_tagger: Callable[[], Tagger],
    progress: Progress | None = None,
) -> DatasetPreparation:
    """SeaArt's steps 1–4 for the checked training folders of `cfg`: crop, tag, trigger word first,
    remove/replace tags, then auto-prune across all folders (never the trigger word)."""
    tagging = cfg.tagging
    prepared = prepare_folders(inputs, make_tagger, steps, progress)
    captions = {p.folder: load_captions(find_images(p.folder), steps.extension) for p in prepared}
    all_captions = [tags for per_folder in captions.values() for tags in per_folder.values()]
    stats = tag_stats(all_captions)
    keep = DEFAULT_KEEP | frozenset(tagging.keep_tags)
    leading = leading_tag(all_captions)
    proposal = prune_proposal(stats, tagging.auto_prune_min_share, keep, tagging.trigger_word, leading)
    proposed = proposal.tags
    pruned, backups = 0, []
    if tagging.auto_prune and proposed:
        prune = CaptionEdit(remove=frozenset(proposed), trigger=tagging.trigger_word or leading)
        for folder, per_folder in captions.items():
            plan = plan_edit(per_folder, prune)
            if (backup := apply_plan(folder, plan)) is not None:
                backups.append(backup)
            pruned += len(plan.changes)
    skipped = tuple(i for i, d in enumerate(cfg.dataset.dirs) if d.is_reg)
    lines = tuple(path for item in inputs for path in item.several_lines)
    return DatasetPreparation(prepared, skipped, stats, proposed, pruned, proposal.kept_trigger, lines, tuple(backups))
