"""Images for training: load upright on white, crop (none, center, focus), resize, write prepared copies."""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from kohya_wrap.config.models import CropMode
from kohya_wrap.data.captions import find_images
from kohya_wrap.data.dataset import KNOWN_CAPTION_EXTENSIONS
from kohya_wrap.errors import DatasetError
from kohya_wrap.files import creatable_problem

Box = tuple[int, int, int, int]  # left, top, right, bottom, as PIL crops
# The focus map is computed on a thumbnail: saliency needs shapes, not pixels, and this keeps it ~ms.
FOCUS_MAP_SIDE = 256
# Windows scoring within this fraction of the best one count as ties (they hold the whole subject
# and differ only by background); the middle one wins, which centres the subject in the crop and
# gives a flat picture the centre crop. Cutting off even one column of a subject costs more.
FOCUS_TIE = 0.005
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def open_image(path: Path) -> Image.Image:
    """The image at `path` as RGB: EXIF orientation applied, transparency composited on white.

    Unreadable, truncated and non-image files raise DatasetError naming the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            # In place: a copy of every upright image would cost more than the transposes do.
            ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise DatasetError(f"{path}: cannot read this image ({reason}); replace or remove it") from None
    return flatten_on_white(image)


def flatten_on_white(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited on white (as sd-scripts' tagger does)."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def pad_square(pixels: np.ndarray, fill: int = 255) -> np.ndarray:
    """Centre `pixels` (H, W, C) on a square of `fill`, the extra pixel going right/bottom."""
    height, width = pixels.shape[:2]
    side = max(height, width)
    if height == width:
        return pixels
    top, left = (side - height) // 2, (side - width) // 2
    square = np.full((side, side, pixels.shape[2]), fill, dtype=pixels.dtype)
    square[top : top + height, left : left + width] = pixels
    return square


# ---- resizing ------------------------------------------------------------------------------------


def resize_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize uint8 (H, W, 3) pixels: area averaging when shrinking both sides, else Lanczos.

    This is the rule sd-scripts applies (`library/utils.py::resize_image`: OpenCV INTER_AREA, PIL
    LANCZOS), so our tagger sees the pixels its tagger sees.
    """
    src_height, src_width = pixels.shape[:2]
    if (src_width, src_height) == (width, height):
        return pixels
    if src_width >= width and src_height >= height:
        return area_resize(pixels, width, height)
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))


def resize_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """`resize_pixels` for a PIL RGB image."""
    if image.size == (width, height):
        return image
    if image.width >= width and image.height >= height:
        return Image.fromarray(area_resize(np.asarray(image), width, height))
    return image.resize((width, height), Image.Resampling.LANCZOS)


def area_resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrink uint8 (H, W, C) pixels by area averaging: OpenCV's INTER_AREA, as sd-scripts uses.

    OpenCV is not our dependency, but sd-scripts installs it; where it imports, it does the work
    (about 3× faster, which keeps decoding from stealing the tagger's inference time), else
    `area_resize_numpy` gives the same pixels to ±1 level.
    """
    cv2 = _opencv()
    if cv2 is None:
        return area_resize_numpy(pixels, width, height)
    resized: np.ndarray = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    return resized


@functools.cache
def _opencv() -> Any:
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def area_resize_numpy(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV's INTER_AREA shrink in numpy, to ±1 level.

    Every output pixel is the coverage-weighted mean of the source pixels under it. OpenCV's
    details are kept: integer factors average whole blocks (a factor of 2 rounds halves up),
    other factors ignore coverage slivers under 1e-3 of a pixel. Rows, then columns, are reduced
    by adding shifted row gathers, which numpy does far faster than `np.add.reduceat`.
    """
    src_height, src_width, channels = pixels.shape
    scale_x, scale_y = 1.0 / (width / src_width), 1.0 / (height / src_height)
    fx, fy = round(scale_x), round(scale_y)
    if abs(scale_x - fx) < _EPSILON and abs(scale_y - fy) < _EPSILON:
        return _block_mean(pixels, fx, fy)
    rows = _area_reduce(pixels, height, scale_y, axis=0)
    result: np.ndarray = np.clip(np.rint(_area_reduce(rows, width, scale_x, axis=1)), 0, 255).astype(np.uint8)
    return result


def _block_mean(pixels: np.ndarray, fx: int, fy: int) -> np.ndarray:
    """Mean of fx × fy blocks, rounded as OpenCV rounds (a factor of 2 by 2 rounds halves up)."""
    height, width = pixels.shape[0] // fy, pixels.shape[1] // fx
    sums: np.ndarray = pixels[0 : height * fy : fy].astype(np.uint16 if fx * fy <= 256 else np.uint32)
    for k in range(1, fy):
        sums += pixels[k : height * fy : fy]
    blocks: np.ndarray = sums[:, 0 : width * fx : fx].copy()
    for k in range(1, fx):
        blocks += sums[:, k : width * fx : fx]
    if fx * fy == 4:
        halves_up: np.ndarray = ((blocks + 2) >> 2).astype(np.uint8)
        return halves_up
    means = blocks.astype(np.float32) * np.float32(1.0 / (fx * fy))
    rounded: np.ndarray = np.clip(np.rint(means), 0, 255).astype(np.uint8)
    return rounded


_EPSILON = 2.220446049250313e-16  # DBL_EPSILON: OpenCV's test for an integer factor


def _area_reduce(values: np.ndarray, size: int, scale: float, axis: int) -> np.ndarray:
    """Area-reduce `values` (H, W, C) along `axis` to `size` (float32), with OpenCV's weights."""
    src = values.shape[axis]
    first = np.empty(size, np.intp)  # first fully covered source pixel
    end = np.empty(size, np.intp)  # one past the last fully covered one; also the partial last pixel
    inner = np.empty(size, np.float32)
    head = np.zeros(size, np.float32)
    tail = np.zeros(size, np.float32)
    for d in range(size):
        f1 = d * scale
        f2 = f1 + scale
        cell = min(scale, src - f1)
        s2 = min(math.floor(f2), src - 1)
        s1 = min(math.ceil(f1), s2)
        first[d], end[d] = s1, s2
        inner[d] = 1.0 / cell
        if s1 - f1 > 1e-3:
            head[d] = (s1 - f1) / cell
        if f2 - s2 > 1e-3:
            tail[d] = min(f2 - s2, 1.0, cell) / cell
    runs = end - first
    # Index `src` is all zeros: gathers past the end of a run land there and add nothing.
    padded = np.concatenate([values, np.zeros_like(np.take(values, [0], axis=axis))], axis=axis)
    if values.dtype == np.uint8:
        acc_type: type[np.generic] = np.uint16 if runs.max() <= 256 else np.uint32
    else:
        acc_type = np.float32
    shape = [1, 1, 1]
    shape[axis] = size
    acc = np.zeros([size if i == axis else n for i, n in enumerate(values.shape)], acc_type)
    for k in range(int(runs.max())):
        acc += np.take(padded, np.where(k < runs, first + k, src), axis=axis)
    result = acc * inner.reshape(shape)
    result += np.take(padded, np.maximum(first - 1, 0), axis=axis) * head.reshape(shape)
    result += np.take(padded, end, axis=axis) * tail.reshape(shape)
    return result


# ---- cropping ------------------------------------------------------------------------------------


def center_box(width: int, height: int) -> Box:
    """The largest centred square."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def saliency_map(image: Image.Image) -> np.ndarray:
    """Where the subject probably is: a (h, w) map, high on detailed areas that differ from the border.

    Two cues, each scaled so its 99th percentile is 1: edge energy (luminance gradient magnitude),
    which is high on a drawn character and low on flat or softly shaded backgrounds; and colour
    distance from the median border colour, which stays high inside a flat-coloured subject and
    low on a busy background that also fills the border. Their product keeps what both agree on,
    plus a fraction of each so a subject found by one cue alone still counts.
    """
    thumb = image.copy()
    thumb.thumbnail((FOCUS_MAP_SIDE, FOCUS_MAP_SIDE), Image.Resampling.BOX)
    rgb = np.asarray(thumb, dtype=np.float32) / 255.0
    luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gx = np.zeros_like(luma)
    gy = np.zeros_like(luma)
    gx[:, 1:-1] = luma[:, 2:] - luma[:, :-2]
    gy[1:-1, :] = luma[2:, :] - luma[:-2, :]
    edges = _box_blur(np.hypot(gx, gy), radius=2)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distance = np.linalg.norm(rgb - np.median(border, axis=0), axis=2)
    e, c = _unit(edges), _unit(distance)
    saliency: np.ndarray = e * c + 0.25 * (e + c)
    return saliency


def _unit(values: np.ndarray) -> np.ndarray:
    top = float(np.percentile(values, 99))
    return np.clip(values / top, 0.0, 1.0) if top > 1e-6 else np.zeros_like(values)


def _box_blur(values: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)² window, edges repeated (cumulative sums: no Python loop)."""
    size = 2 * radius + 1
    padded = np.pad(values, radius, mode="edge")
    for axis in (0, 1):
        sums = np.cumsum(padded, axis=axis)
        zero = np.zeros_like(np.take(sums, [0], axis=axis))
        sums = np.concatenate([zero, sums], axis=axis)
        length = padded.shape[axis] - size + 1
        padded = (np.take(sums, np.arange(size, size + length), axis=axis)
                  - np.take(sums, np.arange(length), axis=axis)) / size  # fmt: skip
    return padded


def focus_box(image: Image.Image) -> Box:
    """The largest square, slid along the long side to hold the most saliency (see `saliency_map`).

    The square keeps the full short side, so nothing is zoomed into; only its position along the
    long side is chosen: the saliency map is summed across the short side, every window of the
    square's length is scored by its sum, and of the windows within FOCUS_TIE of the best the
    middle one is taken.
    """
    width, height = image.size
    if width == height:
        return (0, 0, width, height)
    saliency = saliency_map(image)
    horizontal = width > height
    profile = saliency.sum(axis=0 if horizontal else 1).astype(np.float64)
    long_side, short_side = max(width, height), min(width, height)
    scale = len(profile) / long_side
    window = max(1, min(len(profile), round(short_side * scale)))
    sums = np.convolve(profile, np.ones(window), mode="valid")
    if len(sums) == 1 or sums.max() <= 0:
        offset = (long_side - short_side) // 2
    else:
        candidates = np.flatnonzero(sums >= sums.max() * (1 - FOCUS_TIE))
        best = int(candidates[len(candidates) // 2])
        offset = min(long_side - short_side, round(best / scale))
    if horizontal:
        return (offset, 0, offset + short_side, short_side)
    return (0, offset, short_side, offset + short_side)


def crop_box(image: Image.Image, mode: CropMode) -> Box | None:
    """The square `mode` cuts out of `image`; None for `none`."""
    if mode == "none":
        return None
    if mode == "center":
        return center_box(*image.size)
    return focus_box(image)


# ---- prepared folders ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedImage:
    source: Path
    target: Path
    box: Box | None  # the crop taken from the upright source; None when copied as is


def prepared_names(source: Path, target: Path, crop: CropMode, size: int | None) -> dict[Path, str]:
    """Check that `prepare_folder` can write `source`'s copies into `target` (writing nothing); image → new name."""
    if crop != "none" and size is None:
        raise DatasetError(f"--crop {crop}: needs a crop size (e.g. 512 for SD1.5, 1024 for SDXL)")
    if target.exists() or target.is_symlink():
        raise DatasetError(f"{target}: already exists; prepared images go into a new folder, so choose "
                           "another one or delete it")  # fmt: skip
    if problem := creatable_problem(target):
        raise DatasetError(f"{problem}; choose another folder for the prepared images")
    images = find_images(source)
    names = {image: image.name if crop == "none" else image.stem + ".png" for image in images}
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise DatasetError(f"{source}: several images would be written as {', '.join(clashes)}; rename them "
                           "so their names differ before the extension")  # fmt: skip
    return names


def prepare_folder(
    source: Path,
    target: Path,
    crop: CropMode,
    size: int | None,
    caption_extensions: Sequence[str] = KNOWN_CAPTION_EXTENSIONS,
    threads: int | None = None,
) -> list[PreparedImage]:
    """Write training copies of `source`'s images (and their captions) into the new folder `target`.

    `crop` none copies the files byte for byte; center and focus write size × size PNGs, upright and
    on white. Originals are never touched. The folder appears only when complete, so a failure (an
    unreadable image, named in the error) leaves nothing half-written behind.
    """
    names = prepared_names(source, target, crop, size)
    images = list(names)
    partial = target.parent / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)

    def write(image: Path) -> PreparedImage | DatasetError:
        out = partial / names[image]
        box = None
        try:
            if crop == "none":
                shutil.copy2(image, out)
            else:
                assert size is not None
                upright = open_image(image)
                box = crop_box(upright, crop)
                assert box is not None
                resize_image(upright.crop(box), size, size).save(out, "PNG")
        except DatasetError as exc:
            return exc
        for ext in caption_extensions:
            caption = image.with_suffix(ext)
            if caption.is_file():
                shutil.copy2(caption, partial / (Path(names[image]).stem + ext))
        return PreparedImage(image, target / names[image], box)

    try:
        with ThreadPoolExecutor(threads or os.cpu_count() or 1) as pool:
            results = list(pool.map(write, images))
        failures = [line for r in results if isinstance(r, DatasetError) for line in r.lines]
        if failures:
            raise DatasetError(*failures)
        partial.rename(target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return [r for r in results if isinstance(r, PreparedImage)]
