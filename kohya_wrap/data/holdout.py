"""The images sd-scripts holds out for validation loss: its split reproduced exactly, and what to say about it."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from kohya_wrap.data.names import file_names

T = TypeVar("T")

# The loss of a single held-out image says more about that image than about the LoRA.
MIN_VALIDATION_IMAGES = 2
# Below this many training images, each one held out costs the LoRA more than the measurement gives.
MIN_TRAINING_IMAGES = 10
# Splits a suggestion may propose: whole percent, up to validation.split's own limit.
_CANDIDATES = tuple(k / 100 for k in range(1, 51))


def split_sizes(count: int, split: float) -> tuple[int, int]:
    """(training, validation) images of a folder of `count`, as sd-scripts' `split_train_val` cuts them.

    It rounds the two parts separately, the training part up and the validation part to nearest, so
    their sum may exceed `count`: the images in between are then in both sets.
    """
    return math.ceil(count * (1 - split)), round(count * split)


def split_images(images: Sequence[T], split: float, seed: int) -> tuple[list[T], list[T]]:
    """(training, validation) parts of one folder's images, listed in sd-scripts' order (sorted paths).

    sd-scripts seeds Python's `random` with `validation_seed`, shuffles the folder, and takes the
    training part from the front and the validation part from the back.
    """
    shuffled = list(images)
    random.Random(seed).shuffle(shuffled)
    train, validation = split_sizes(len(shuffled), split)
    return shuffled[:train], shuffled[len(shuffled) - validation :]


@dataclass(frozen=True)
class FolderSplit:
    """One training folder (`dataset.dirs.<index>`) cut into its training and validation images."""

    index: int
    train: tuple[Path, ...]
    validation: tuple[Path, ...]

    @property
    def count(self) -> int:
        """The folder's images (the two parts together cover all of them)."""
        return len(set(self.train) | set(self.validation))

    @property
    def in_both(self) -> tuple[Path, ...]:
        """Held-out images that are trained on as well."""
        trained = set(self.train)
        return tuple(p for p in self.validation if p in trained)


@dataclass(frozen=True)
class Holdout:
    """Every training folder's split (regularisation folders are never split)."""

    split: float
    seed: int
    folders: tuple[FolderSplit, ...]

    @property
    def validation_images(self) -> int:
        return sum(len(f.validation) for f in self.folders)

    @property
    def training_images(self) -> int:
        return sum(len(f.train) for f in self.folders)

    @property
    def used(self) -> bool:
        """Whether validation can mean anything: some held-out image is not trained on as well."""
        return any(len(f.in_both) < len(f.validation) for f in self.folders)

    def warnings(self) -> list[str]:
        """Why the run measures no validation loss; else advice: images in both sets, too few held out or left."""
        if self.validation_images == 0:
            return [
                f"validation.split: {self.split:g} holds out none of the {self._count()} training images, so the "
                f"run measures no validation loss; {self._advice()}"
            ]
        if not self.used:
            trained = [p for f in self.folders for p in f.in_both]
            return [
                f"validation.split: with {self.split:g}, every held-out image is also trained on "
                f"({file_names(trained)}), as sd-scripts rounds the two parts apart, so the run measures no "
                f"validation loss; {self._advice()}"
            ]
        messages = []
        for f in self.folders:
            if both := f.in_both:
                verb = "is" if len(both) == 1 else "are"
                messages.append(
                    f"validation.split: {len(both)} of the {len(f.validation)} images held out of "
                    f"dataset.dirs.{f.index} {verb} also trained on ({file_names(both)}), as sd-scripts rounds the "
                    f"two parts apart; {self._advice()}"
                )
        if self.validation_images < MIN_VALIDATION_IMAGES:
            held = [p for f in self.folders for p in f.validation]
            messages.append(
                f"validation.split: only {self.validation_images} image is held out ({file_names(held)}), and "
                f"the loss of one image says little about the LoRA; {self._advice()}"
            )
        if self.training_images < MIN_TRAINING_IMAGES:
            messages.append(
                f"validation.split: {self.validation_images} of {self._count()} images are held out and only "
                f"{self.training_images} are left to train on; a dataset this small is better trained whole "
                "(validation.split = 0) and judged by its samples"
            )
        return messages

    def _count(self) -> int:
        return sum(f.count for f in self.folders)

    def _advice(self) -> str:
        counts = [f.count for f in self.folders]
        suggested = suggest_split(counts, self.split)
        if suggested is None:
            return "add images or set validation.split = 0"
        held = sum(split_sizes(n, suggested)[1] for n in counts)
        return f"validation.split = {suggested:g} holds out {held} images, none of them trained on"


def suggest_split(counts: Sequence[int], current: float) -> float | None:
    """The whole-percent split nearest `current` that holds out at least two images and none also trained on."""
    fitting = [
        split
        for split in _CANDIDATES
        if sum(split_sizes(n, split)[1] for n in counts) >= MIN_VALIDATION_IMAGES
        and all(sum(split_sizes(n, split)) <= n for n in counts)
    ]
    return min(fitting, key=lambda split: (abs(split - current), split)) if fitting else None


def hold_out(folders: Sequence[tuple[int, Sequence[Path]]], split: float, seed: int) -> Holdout:
    """The split of each training folder, given as (dataset.dirs index, its images in sorted order)."""
    cut = []
    for index, images in folders:
        train, validation = split_images(images, split, seed)
        cut.append(FolderSplit(index, tuple(train), tuple(validation)))
    return Holdout(split, seed, tuple(cut))
