"""Dataset workflows: tag a folder, edit its tags in bulk, prepare a config's dataset.

Every front-end calls these; none of them prints. Each checks all of its input (folders, captions, the
tagger, the options) before it writes a file, and raises a `KohyaWrapError` when anything is wrong.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kohya_wrap.config.models import CropMode, DatasetSettings, TaggingSettings
from kohya_wrap.data.captions import (
    DEFAULT_KEEP,
    CaptionEdit,
    EditPlan,
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
from kohya_wrap.data.options import check_option
from kohya_wrap.data.prepare import (
    DatasetPreparation,
    FolderSteps,
    PreparedDir,
    check_dataset,
    check_folder,
    prepare_dataset,
    prepare_folders,
)
from kohya_wrap.data.tagger import (
    DEFAULT_MODEL,
    Progress,
    Tagger,
    TagOptions,
    check_model,
    check_runtime_options,
    resolve_model,
)
from kohya_wrap.data.tagger import tag_options as tag_options_from
from kohya_wrap.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class Inference:
    """How the tagger runs: none of these change the tags (int8 slightly does)."""

    batch_size: int | None = None
    threads: int | None = None
    decode_threads: int | None = None
    int8: bool = False


@dataclass(frozen=True)
class TagResult:
    """What `tag` did to the folder (or to the new `--out` folder it made)."""

    prepared: PreparedDir
    several_lines: tuple[Path, ...]  # captions whose lines after the first sd-scripts ignores


def tag(
    folder: Path,
    options: TagOptions,
    *,
    model: str | None = None,
    crop: CropMode = "none",
    crop_size: int | None = None,
    out: Path | None = None,
    overwrite: bool = False,
    inference: Inference = Inference(),
    caption_extension: str = ".txt",
    progress: Progress | None = None,
) -> TagResult:
    """Crop into `out` (when given), caption the images without a caption, put the trigger word first.

    A new trigger word replaces the one every existing caption starts with (instead of stacking on it).
    """
    if crop_size is not None and crop == "none":
        raise ConfigError("--crop-size: only used with --crop center or --crop focus")
    if crop != "none" and out is None:
        raise ConfigError(f"--crop {crop}: cropped copies go into a new folder; give --out DIR")
    if crop_size is not None:
        check_option(DatasetSettings, "crop_size", crop_size, "--crop-size")
    extension = check_option(DatasetSettings, "caption_extension", caption_extension, "--caption-extension")
    check_runtime_options(inference.batch_size, inference.threads, inference.decode_threads)
    model = model or DEFAULT_MODEL
    check_model(model)
    steps = FolderSteps(crop, crop_size, extension, overwrite, CaptionEdit(trigger=options.trigger_word))
    checked = check_folder(0, folder, out, steps)
    (prepared,) = prepare_folders([checked], lambda: _tagger(model, options, inference), steps, progress)
    return TagResult(prepared, checked.several_lines)


def tag_options(
    *,
    general_threshold: float,
    character_threshold: float,
    trigger: str | None = None,
    rating_tags: bool = False,
    replace_underscores: bool = False,
    undesired: Collection[str] = (),
    always_first: Sequence[str] = (),
) -> TagOptions:
    """The tagger's options from command-line values, checked as the [tagging] settings are."""
    return TagOptions(
        general_threshold=general_threshold,
        character_threshold=character_threshold,
        rating_tags=rating_tags,
        replace_underscores=replace_underscores,
        undesired_tags=frozenset(undesired),
        always_first_tags=tuple(always_first),
        trigger_word=check_trigger(trigger),
    )


def check_trigger(trigger: str | None, key: str = "--trigger") -> str | None:
    """A trigger word as the settings allow one: a non-empty word without commas or newlines."""
    if trigger is None:
        return None
    checked: str | None = check_option(TaggingSettings, "trigger_word", trigger, key)
    return checked


@dataclass(frozen=True)
class TagsResult:
    """Tag counts of a folder, what an edit would change and, with `apply`, where the originals went."""

    folder: Path
    images: int  # images in the folder, captioned or not
    stats: TagStats
    proposed: tuple[str, ...]  # auto-prune's proposal
    kept_trigger: str | None  # the tag leading every caption, kept by auto-prune as the trigger word
    replaced_trigger: str | None  # the earlier trigger word the new one replaces
    plan: EditPlan
    several_lines: tuple[Path, ...]  # captions whose lines after the first sd-scripts ignores
    applied: bool
    backup: Path | None
    counts: Mapping[str, int] = field(default_factory=dict)  # tag_key → captions holding it

    def captions_with(self, tag: str) -> int:
        return self.counts.get(tag_key(tag), 0)


def edit_tags(
    folder: Path,
    *,
    remove: Collection[str] = (),
    replace: Mapping[str, str] | None = None,
    auto_prune: bool = False,
    min_share: float | None = None,
    keep: Collection[str] = (),
    trigger: str | None = None,
    apply: bool = False,
    caption_extension: str = ".txt",
) -> TagsResult:
    """Count the tags of `folder`'s captions (first lines, as sd-scripts reads them) and plan a bulk edit;
    write it (after a backup) only with `apply`. Auto-prune never proposes the trigger word: the given one,
    else the tag that leads every caption."""
    extension = check_option(DatasetSettings, "caption_extension", caption_extension, "--caption-extension")
    trigger = check_trigger(trigger)
    share: float = check_option(
        TaggingSettings,
        "auto_prune_min_share",
        TaggingSettings.model_fields["auto_prune_min_share"].default if min_share is None else min_share,
        "--min-share",
    )
    images = find_images(folder)
    captions = load_captions(images, extension)
    if not captions:
        raise DatasetError(f"{folder}: no {extension} captions; run `kohya-wrap tag {folder}` first")
    stats = tag_stats(captions.values())
    leading = leading_tag(captions.values())
    proposed: tuple[str, ...] = ()
    kept_trigger = None
    if auto_prune:
        proposal = prune_proposal(stats, share, DEFAULT_KEEP | set(keep), trigger, leading)
        proposed, kept_trigger = proposal.tags, proposal.kept_trigger
    replaced = leading if trigger and leading and tag_key(leading) != tag_key(trigger) else None
    edit = CaptionEdit(frozenset(remove) | set(proposed), dict(replace or {}), trigger, previous_trigger=leading)
    plan = plan_edit(captions, edit)
    backup = apply_plan(folder, plan) if apply and plan.changes else None
    return TagsResult(
        folder,
        len(images),
        stats,
        proposed,
        kept_trigger,
        replaced,
        plan,
        tuple(several_lines(captions)),
        apply and bool(plan.changes),
        backup,
        {tag_key(c.tag): c.images for c in stats.tags},
    )


@dataclass(frozen=True)
class PrepareResult:
    preparation: DatasetPreparation
    auto_prune: bool  # tagging.auto_prune: the proposal was applied, not only shown


def prepare(
    config: Path,
    overrides: tuple[str, ...] = (),
    *,
    out: Path | None = None,
    overwrite: bool = False,
    inference: Inference = Inference(),
    progress: Progress | None = None,
) -> PrepareResult:
    """Run the config's [dataset] and [tagging] steps on every training folder: crop into new folders under
    `out` (default: prepared/ beside the config), tag, edit, auto-prune. Every folder, caption and the tagger
    are checked before the first file is written."""
    from kohya_wrap.commands.train import load

    cfg = load(config, overrides).config
    check_runtime_options(inference.batch_size, inference.threads, inference.decode_threads)
    check_model(cfg.tagging.model)
    options = tag_options_from(cfg.tagging)
    steps, inputs = check_dataset(cfg, out or config.resolve().parent / "prepared", overwrite)
    preparation = prepare_dataset(cfg, steps, inputs, lambda: _tagger(cfg.tagging.model, options, inference), progress)
    return PrepareResult(preparation, cfg.tagging.auto_prune)


def _tagger(model: str, options: TagOptions, inference: Inference) -> Tagger:
    return Tagger(
        resolve_model(model),
        options,
        batch_size=inference.batch_size,
        threads=inference.threads,
        decode_threads=inference.decode_threads,
        int8=inference.int8,
    )
