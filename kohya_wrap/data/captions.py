"""Caption files: atomic reads and writes with backups, tag statistics, bulk edits and auto-pruning."""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kohya_wrap.config.tagger_defaults import AUTO_PRUNE_MIN_SHARE
from kohya_wrap.data.dataset import broken_image_links, broken_links_message, list_images
from kohya_wrap.errors import DatasetError
from kohya_wrap.files import write_atomic, write_new_file

SEPARATOR = ", "
BACKUP_DIR = ".kohya_wrap-backup"
# A tag shared by this share of the images is a trait of the subject rather than of one picture. The
# SeaArt walkthrough's character tags (green_hair, suspenders, …) are in nearly every image, while pose
# and background tags vary. 0.6 leaves room for the tagger missing a trait in up to 40 % of the images
# (occlusion, close-ups, thresholds) without catching a pose that merely half the images share.
DEFAULT_MIN_SHARE = AUTO_PRUNE_MIN_SHARE
# Below this many captions every tag is "shared", so proposals would be noise.
MIN_IMAGES_TO_PRUNE = 3
# Tags that describe the picture, not the character: frequent in any dataset, yet worth keeping
# because prompts use them and removing them would teach the trigger word "solo" or "smile".
DEFAULT_KEEP = frozenset({
    "1girl", "1boy", "2girls", "2boys", "multiple_girls", "multiple_boys", "solo", "solo_focus", "male_focus",
    "looking_at_viewer", "simple_background", "white_background", "grey_background", "transparent_background",
    "smile", "open_mouth", "closed_mouth", "blush", "standing", "sitting", "full_body", "upper_body",
    "cowboy_shot", "portrait", "close-up", "outdoors", "indoors", "day", "night", "sky", "cloud",
    "looking_back", "from_side", "from_behind", "from_above", "from_below", "holding",
    # Style tags: pruning them would make the trigger word carry the style.
    "monochrome", "greyscale", "sketch", "lineart", "chibi", "comic",
})  # fmt: skip


def tag_key(tag: str) -> str:
    """The form tags are compared in: `green_hair`, `Green hair` and `green hair` are one tag."""
    return tag.strip().replace("_", " ").lower()


def parse_caption(text: str) -> list[str]:
    """Tags of a caption: comma- or line-separated, stripped, empty ones dropped (order kept)."""
    return [tag for tag in (part.strip() for part in text.replace("\n", ",").split(",")) if tag]


def format_caption(tags: Sequence[str]) -> str:
    """One line, as sd-scripts' tagger writes it."""
    return SEPARATOR.join(tags) + "\n"


def caption_path(image: Path, extension: str = ".txt") -> Path:
    return image.with_suffix(extension)


def read_caption_text(path: Path) -> str:
    """The caption file's text; sd-scripts reads captions as UTF-8 only, so anything else is refused here."""
    try:
        return path.read_text("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(
            f"{path}: not UTF-8 text (sd-scripts reads captions as UTF-8 only and stops on it); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read this caption ({exc.__class__.__name__}); fix or delete it") from None


def first_line(text: str) -> str:
    """The part of a caption sd-scripts trains on: its first line (it ignores the others)."""
    return text.split("\n", 1)[0]


def has_more_lines(text: str) -> bool:
    """The caption has text after its first line, which sd-scripts ignores."""
    return bool(text.split("\n", 1)[1:] and text.split("\n", 1)[1].strip())


def read_caption(path: Path) -> list[str]:
    """The tags of a caption file as sd-scripts sees them: its first line only."""
    return parse_caption(first_line(read_caption_text(path)))


def several_lines(paths: Iterable[Path]) -> list[Path]:
    """The caption files among `paths` with text after the first line (sd-scripts reads only the first)."""
    return [path for path in paths if has_more_lines(read_caption_text(path))]


def write_caption(path: Path, tags: Sequence[str], overwrite: bool = False) -> None:
    """Write a caption; an existing file is replaced only with `overwrite` (back it up first)."""
    if not tags:
        raise DatasetError(f"{path}: refusing to write an empty caption (sd-scripts stops on those)")
    if overwrite:
        write_atomic(path, format_caption(tags))
        return
    try:
        write_new_file(path, format_caption(tags))
    except FileExistsError:
        raise DatasetError(
            f"{path}: caption already exists; pass --overwrite to replace it (a backup is kept)"
        ) from None


def find_images(folder: Path) -> list[Path]:
    """The images in `folder` (PNG, JPEG, WebP, BMP; not recursive), or a DatasetError saying why none."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: folder not found" if not folder.exists() else f"{folder}: not a folder")
    broken = broken_image_links(folder)
    if broken:
        raise DatasetError(broken_links_message(str(folder), broken))
    images = list_images(folder)
    if not images:
        raise DatasetError(f"{folder}: no images (PNG, JPEG, WebP or BMP) in this folder")
    return images


def load_captions(images: Iterable[Path], extension: str = ".txt") -> dict[Path, list[str]]:
    """Caption file → tags, for the images that have one."""
    return {path: read_caption(path) for image in images if (path := caption_path(image, extension)).is_file()}


def backup_captions(folder: Path, paths: Collection[Path]) -> Path | None:
    """Copy `paths` into a new `<folder>/.kohya_wrap-backup/<timestamp>/`; None if none exists."""
    existing = [p for p in paths if p.is_file()]
    if not existing:
        return None
    root = folder / BACKUP_DIR
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for attempt in range(1, 1000):
        target = root / (stamp if attempt == 1 else f"{stamp}-{attempt}")
        try:
            target.mkdir(parents=True)
            break
        except FileExistsError:
            continue
    else:
        raise DatasetError(f"{root}: cannot create a new backup folder; clean up old backups")
    for path in existing:
        shutil.copy2(path, target / path.name)
    return target


# ---- pure edits ----------------------------------------------------------------------------------


def dedupe(tags: Iterable[str]) -> list[str]:
    """Tags in order with later repeats (compared by tag_key) dropped."""
    seen: set[str] = set()
    result = []
    for tag in tags:
        key = tag_key(tag)
        if key not in seen:
            seen.add(key)
            result.append(tag)
    return result


def with_trigger(tags: Sequence[str], trigger: str | None) -> list[str]:
    """`trigger` first, exactly once."""
    if not trigger:
        return list(tags)
    key = tag_key(trigger)
    return [trigger.strip()] + [t for t in tags if tag_key(t) != key]


def leading_tag(captions: Iterable[Sequence[str]]) -> str | None:
    """The trigger word the captions already carry: the tag that leads every one of them.

    Generic tags (1girl, solo, … in DEFAULT_KEEP) are not taken for one: a tagger run without a trigger
    word often puts 1girl first in every caption. At least two captions are needed to tell.
    """
    firsts = [tags[0] for tags in captions if tags]
    keys = {tag_key(tag) for tag in firsts}
    if len(firsts) < 2 or len(keys) != 1 or keys & {tag_key(t) for t in DEFAULT_KEEP}:
        return None
    return firsts[0]


def remove_tags(tags: Sequence[str], remove: Collection[str]) -> list[str]:
    keys = {tag_key(t) for t in remove}
    return [t for t in tags if tag_key(t) not in keys]


def replace_tags(tags: Sequence[str], replace: Mapping[str, str]) -> list[str]:
    """Replace tags (a tag may become one already present: it is kept once, where it came first)."""
    table = {tag_key(old): new.strip() for old, new in replace.items()}
    return dedupe(table.get(tag_key(t), t) for t in tags)


@dataclass(frozen=True)
class CaptionEdit:
    """Bulk changes applied to every caption, in this order: replace, remove, trigger word first.

    `previous_trigger` (the trigger word the captions carry, see `leading_tag`) is dropped when another
    `trigger` is given, so a new trigger word replaces the old one instead of stacking in front of it.
    """

    remove: frozenset[str] = field(default_factory=frozenset)
    replace: Mapping[str, str] = field(default_factory=dict)
    trigger: str | None = None
    previous_trigger: str | None = None

    def apply(self, tags: Sequence[str]) -> list[str]:
        edited = replace_tags(tags, self.replace) if self.replace else dedupe(tags)
        if self.remove:
            edited = remove_tags(edited, self.remove)
        if self.trigger and self.previous_trigger and tag_key(self.previous_trigger) != tag_key(self.trigger):
            edited = remove_tags(edited, [self.previous_trigger])
        # Never strip the trigger word, even when a prune list happens to contain it.
        return with_trigger(edited, self.trigger) if self.trigger else edited


@dataclass(frozen=True)
class EditPlan:
    """What an edit would write: changed captions, and those it would leave empty (kept as they are)."""

    changes: Mapping[Path, list[str]]
    emptied: tuple[Path, ...]
    unchanged: int


def plan_edit(captions: Mapping[Path, Sequence[str]], edit: CaptionEdit) -> EditPlan:
    changes: dict[Path, list[str]] = {}
    emptied = []
    for path, tags in captions.items():
        new = edit.apply(tags)
        if not new:
            emptied.append(path)
        elif new != list(tags):
            changes[path] = new
    return EditPlan(changes, tuple(emptied), len(captions) - len(changes) - len(emptied))


def apply_plan(folder: Path, plan: EditPlan) -> Path | None:
    """Back up the captions the plan changes, then rewrite them; returns the backup folder."""
    backup = backup_captions(folder, list(plan.changes))
    for path, tags in plan.changes.items():
        write_caption(path, tags, overwrite=True)
    return backup


# ---- statistics and pruning ----------------------------------------------------------------------


@dataclass(frozen=True)
class TagCount:
    tag: str
    images: int
    share: float


@dataclass(frozen=True)
class TagStats:
    images: int
    tags: tuple[TagCount, ...]  # most frequent first, then alphabetical


def tag_stats(captions: Iterable[Sequence[str]]) -> TagStats:
    """How many captions contain each tag (a tag repeated in one caption counts once)."""
    counts: Counter[str] = Counter()
    images = 0
    for tags in captions:
        images += 1
        counts.update(set(tags))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return TagStats(images, tuple(TagCount(tag, n, n / images) for tag, n in ordered))


def propose_prune(
    stats: TagStats,
    min_share: float = DEFAULT_MIN_SHARE,
    keep: Collection[str] = DEFAULT_KEEP,
    trigger: str | None = None,
) -> tuple[str, ...]:
    """Tags in at least `min_share` of the images, minus `keep` and the trigger word: the character's traits.

    Removing them from the captions lets the LoRA learn them into the trigger word (SeaArt's step 4).
    """
    if not 0 < min_share <= 1:
        raise DatasetError(f"tagging.auto_prune_min_share: must be above 0 and at most 1, got {min_share}")
    if stats.images < MIN_IMAGES_TO_PRUNE:
        return ()
    kept = {tag_key(t) for t in keep} | ({tag_key(trigger)} if trigger else set())
    return tuple(c.tag for c in stats.tags if c.share >= min_share and tag_key(c.tag) not in kept)


@dataclass(frozen=True)
class PruneProposal:
    tags: tuple[str, ...]
    kept_trigger: str | None  # the tag leading every caption, kept as the trigger word (none was given)


def prune_proposal(
    stats: TagStats, min_share: float, keep: Collection[str], trigger: str | None, leading: str | None
) -> PruneProposal:
    """`propose_prune` that never proposes the trigger word: the given one, else the tag leading every caption
    (see `leading_tag`), which is then named so that keeping it is never silent."""
    tags = propose_prune(stats, min_share, keep, trigger or leading)
    kept = leading if not trigger and leading and propose_prune(stats, min_share, keep) != tags else None
    return PruneProposal(tags, kept)


def parse_replacements(items: Iterable[str]) -> dict[str, str]:
    """`old=new` items (each may hold several, comma-separated) → {old: new}."""
    table: dict[str, str] = {}
    for item in items:
        for pair in parse_caption(item):
            old, sep, new = pair.partition("=")
            if not sep or not old.strip() or not new.strip():
                raise DatasetError(f"--replace: '{pair}' must look like old_tag=new_tag")
            table[old.strip()] = new.strip()
    return table
