"""Dataset folders: scan images and captions, name every problem, and do sd-scripts' step maths."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imagesize  # type: ignore[import-untyped]

from kohya_wrap.config.models import Config
from kohya_wrap.data.holdout import Holdout, hold_out
from kohya_wrap.data.names import file_names
from kohya_wrap.errors import DatasetError

# What sd-scripts' DreamBooth dataset globs (any case), non-recursively.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
# Caption extensions people (and other tools) commonly leave beside images.
KNOWN_CAPTION_EXTENSIONS = (".txt", ".caption", ".tags")
BUCKET_STEP = 64


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    size: tuple[int, int] | None  # None when the header cannot be read
    caption: Path | None


@dataclass(frozen=True)
class FolderReport:
    index: int
    path: Path
    repeats: int
    is_reg: bool
    class_token: str | None
    images: tuple[ImageInfo, ...]
    other_captions: tuple[Path, ...]  # captions with another extension than the configured one
    empty_captions: tuple[Path, ...]
    not_utf8: tuple[Path, ...] = ()  # captions sd-scripts cannot decode
    several_lines: tuple[Path, ...] = ()  # captions with text after the first line, which sd-scripts ignores
    with_bom: tuple[Path, ...] = ()  # captions starting with a byte-order mark, which sd-scripts keeps

    @property
    def missing_captions(self) -> tuple[Path, ...]:
        return tuple(i.path for i in self.images if i.caption is None)

    @property
    def unreadable(self) -> tuple[Path, ...]:
        return tuple(i.path for i in self.images if i.size is None)


@dataclass(frozen=True)
class StepPlan:
    images: int  # training images (without repeats)
    images_with_repeats: int
    reg_images_with_repeats: int
    batch_size: int
    batches_per_epoch: int
    epochs: int
    num_processes: int
    total_steps: int
    buckets: tuple[tuple[tuple[int, int], int], ...]  # ((width, height), images incl. repeats)
    validation_images: int = 0  # held out for validation loss (0: the run measures none)

    @property
    def seaart_cost(self) -> int:
        """SeaArt's 'stamina' measure: images × repeats × epochs."""
        return self.images_with_repeats * self.epochs


@dataclass(frozen=True)
class DatasetReport:
    folders: tuple[FolderReport, ...]
    caption_extension: str
    holdout: Holdout | None = None  # the images sd-scripts holds out for validation.split

    @property
    def train_images(self) -> int:
        return sum(len(f.images) for f in self.folders if not f.is_reg)

    def warnings(self) -> list[str]:
        messages = []
        for f in self.folders:
            missing = f.missing_captions
            if missing and f.class_token:
                messages.append(
                    f"dataset.dirs.{f.index}.path: {len(missing)} of {len(f.images)} images have no "
                    f"{self.caption_extension} caption and will be captioned '{f.class_token}': "
                    f"{file_names(missing)}"
                )
            elif missing:
                messages.append(
                    f"dataset.dirs.{f.index}.path: {len(missing)} of {len(f.images)} images have no "
                    f"{self.caption_extension} caption and train with an empty one: {file_names(missing)}; "
                    "run `kohya-wrap tag` on the folder"
                )
            if f.several_lines:
                messages.append(
                    f"dataset.dirs.{f.index}.path: {len(f.several_lines)} captions have several lines and "
                    f"sd-scripts trains on the first line only: {file_names(f.several_lines)}; put all tags on one line"
                )
            if f.with_bom:
                messages.append(
                    f"dataset.dirs.{f.index}.path: {len(f.with_bom)} captions start with a byte-order mark, "
                    f"which sd-scripts keeps as part of the first tag: {file_names(f.with_bom)}; save them as UTF-8 "
                    "without BOM"
                )
        if self.holdout is not None:
            messages += self.holdout.warnings()
        return messages

    @property
    def validation_images(self) -> int:
        """Images held out for validation loss; 0 when the split holds out none worth measuring."""
        return self.holdout.validation_images if self.holdout is not None and self.holdout.used else 0

    def training_part(self, folder: FolderReport) -> tuple[ImageInfo, ...]:
        """The images of `folder` that sd-scripts trains on: all of them unless validation holds some out."""
        holdout = self.holdout if self.holdout is not None and self.holdout.used else None
        split = next((f for f in holdout.folders if f.index == folder.index), None) if holdout else None
        if split is None:
            return folder.images
        kept = set(split.train)
        return tuple(info for info in folder.images if info.path in kept)


def list_images(folder: Path) -> list[Path]:
    """The images sd-scripts reads: its glob takes `.png` and `.PNG` but not `.Png`."""
    return sorted(p for p in folder.iterdir() if _is_image_name(p) and p.is_file())


def broken_image_links(folder: Path) -> list[Path]:
    """Image-named links whose target is missing: sd-scripts lists them and then fails on them."""
    return sorted(p for p in folder.iterdir() if _is_image_name(p) and p.is_symlink() and not p.exists())


def broken_links_message(where: str, broken: Sequence[Path]) -> str:
    return (
        f"{where}: links to missing images (sd-scripts would list them and then stop): {file_names(broken)}; "
        "fix or remove them"
    )


def _is_image_name(path: Path) -> bool:
    suffix = path.suffix
    return suffix.lower() in IMAGE_EXTENSIONS and suffix in (suffix.lower(), suffix.upper())


def _mixed_case_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_image_name(p))


def read_size(path: Path) -> tuple[int, int] | None:
    try:
        width, height = imagesize.get(path)
    except (OSError, ValueError):
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


def scan_folder(
    index: int, folder: Path, repeats: int, is_reg: bool, class_token: str | None, caption_extension: str
) -> FolderReport:
    where = f"dataset.dirs.{index}.path"
    if not folder.exists():
        raise DatasetError(f"{where}: folder not found: {folder}")
    if not folder.is_dir():
        raise DatasetError(f"{where}: not a folder: {folder}")
    skipped = _mixed_case_images(folder)
    if skipped:
        raise DatasetError(
            f"{where}: sd-scripts reads only lower- or upper-case extensions (.png or .PNG) "
            f"and would skip {file_names(skipped)}; rename them"
        )
    broken = broken_image_links(folder)
    if broken:
        raise DatasetError(broken_links_message(where, broken))
    images = list_images(folder)
    if not images:
        nested = sorted(p.name for p in folder.iterdir() if p.is_dir() and list_images(p))
        hint = (
            f"; images are in its subfolders {', '.join(nested)}: list those in dataset.dirs"
            if nested
            else "; add PNG, JPEG, WebP or BMP images"
        )
        raise DatasetError(f"{where}: no images in {folder}{hint}")
    infos: list[ImageInfo] = []
    other: list[Path] = []
    empty: list[Path] = []
    not_utf8: list[Path] = []
    several: list[Path] = []
    bom: list[Path] = []
    for image in images:
        caption = image.with_suffix(caption_extension)
        has_caption = caption.is_file()
        if has_caption:
            # Read as sd-scripts does: UTF-8, and only the first line is the caption.
            data = caption.read_bytes()
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                not_utf8.append(caption)
                text = ""
            if not data:
                empty.append(caption)
            elif text.startswith("\ufeff"):
                bom.append(caption)
            lines = text.split("\n", 1)
            if len(lines) > 1 and lines[1].strip():
                several.append(caption)
        if not has_caption:
            other.extend(
                alt
                for ext in KNOWN_CAPTION_EXTENSIONS
                if ext != caption_extension
                for alt in [image.with_suffix(ext)]
                if alt.is_file()
            )
        infos.append(ImageInfo(image, read_size(image), caption if has_caption else None))
    return FolderReport(
        index,
        folder,
        repeats,
        is_reg,
        class_token,
        tuple(infos),
        tuple(other),
        tuple(empty),
        tuple(not_utf8),
        tuple(several),
        tuple(bom),
    )


def scan(cfg: Config) -> DatasetReport:
    """Read every dataset folder; raise DatasetError listing each problem by name."""
    ext = cfg.dataset.caption_extension
    folders = []
    for i, d in enumerate(cfg.dataset.dirs):
        folders.append(scan_folder(i, Path(d.path), d.repeats, d.is_reg, d.class_token, ext))
    problems = []
    for f in folders:
        where = f"dataset.dirs.{f.index}.path"
        if f.unreadable:
            problems.append(f"{where}: cannot read these images (corrupt or not images): {file_names(f.unreadable)}")
        if f.not_utf8:
            problems.append(
                f"{where}: captions that are not UTF-8 text (sd-scripts reads UTF-8 only and stops on them): "
                f"{file_names(f.not_utf8)}; save them as UTF-8"
            )
        if f.empty_captions:
            problems.append(
                f"{where}: empty caption files make sd-scripts stop: {file_names(f.empty_captions)}; "
                "write tags into them or delete them"
            )
        if f.other_captions:
            found = sorted({p.suffix for p in f.other_captions})
            problems.append(
                f"{where}: {len(f.other_captions)} images have {'/'.join(found)} captions but "
                f"dataset.caption_extension is {ext}, so they would be ignored; set "
                f'caption_extension = "{found[0]}" or rename them'
            )
    holdout = None
    if cfg.validation.split > 0:
        training = [(f.index, [info.path for info in f.images]) for f in folders if not f.is_reg]
        holdout = hold_out(training, cfg.validation.split, cfg.validation.seed)
    if problems:
        raise DatasetError(*problems)
    return DatasetReport(tuple(folders), ext, holdout)


def bucket_resolutions(resolution: int, min_size: int, max_size: int, step: int = BUCKET_STEP) -> list[tuple[int, int]]:
    """The bucket sizes sd-scripts predefines for a square training resolution."""
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.update({(width, height), (height, width)})
        width += step
    return sorted(resos)


def assign_bucket(size: tuple[int, int], resos: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Exact size if it is a bucket, else the bucket with the closest aspect ratio (first on ties)."""
    if size in resos:
        return size
    aspect = size[0] / size[1]
    errors = [abs(w / h - aspect) for w, h in resos]
    return resos[errors.index(min(errors))]


def plan_steps(cfg: Config, report: DatasetReport) -> StepPlan:
    """Steps as sd-scripts counts them: batches per bucket, summed, times epochs, over processes."""
    ds, bs = cfg.dataset, cfg.training.batch_size
    resos = bucket_resolutions(ds.resolution, ds.min_bucket_reso, ds.max_bucket_reso)
    counts: Counter[tuple[int, int]] = Counter()
    square = (ds.resolution, ds.resolution)

    def add(images: Sequence[ImageInfo], repeats: int) -> None:
        for info in images:
            reso = square
            if ds.enable_bucket and info.size is not None:
                reso = assign_bucket(info.size, resos)
            counts[reso] += repeats

    train = [(report.training_part(f), f.repeats) for f in report.folders if not f.is_reg]
    for images, repeats in train:
        add(images, repeats)
    train_total = sum(len(images) * repeats for images, repeats in train)
    reg = [(info, f.repeats) for f in report.folders if f.is_reg for info in f.images]
    reg_repeats = [0] * len(reg)
    reg_total, first_pass = 0, True
    # As DreamBoothDataset.__init__ does: the first pass takes each regularisation image with its
    # folder's repeats and stops once the training count is reached (it may overshoot it); later
    # passes add one repeat per image in turn until the count is reached.
    while reg and reg_total < train_total:
        for i, (_, repeats) in enumerate(reg):
            step = repeats if first_pass else 1
            reg_repeats[i] += step
            reg_total += step
            if reg_total >= train_total:
                break
        first_pass = False
    for (info, _), repeats in zip(reg, reg_repeats, strict=True):
        if repeats:
            add([info], repeats)
    batches = sum(math.ceil(n / bs) for n in counts.values())
    epochs, procs = cfg.training.epochs, cfg.run.num_processes
    return StepPlan(
        images=sum(len(images) for images, _ in train),
        images_with_repeats=train_total,
        reg_images_with_repeats=reg_total,
        batch_size=bs,
        batches_per_epoch=batches,
        epochs=epochs,
        num_processes=procs,
        total_steps=epochs * math.ceil(batches / procs),
        buckets=tuple(sorted(counts.items())),
        validation_images=report.validation_images,
    )
