"""Tests for kohya_wrap.data.images: loading, padding, resizing, center/focus crops and prepared folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kohya_wrap.data import images as imaging
from kohya_wrap.data.images import (
    area_resize,
    area_resize_numpy,
    center_box,
    focus_box,
    open_image,
    pad_square,
    prepare_folder,
    resize_image,
    resize_pixels,
)
from kohya_wrap.errors import DatasetError


def test_alpha_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red, fully transparent on the left, opaque on the right
    rgba[:, 2:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    pixels = np.asarray(open_image(tmp_path / "a.png"))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 3].tolist() == [200, 0, 0]


def test_palette_transparency_and_grey_alpha(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.asarray(open_image(tmp_path / "p.png")).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    Image.new("LA", (1, 1), (0, 0)).save(tmp_path / "la.png")
    assert np.asarray(open_image(tmp_path / "la.png")).tolist() == [[[255, 255, 255]]]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    image.save(tmp_path / "a.jpg", exif=exif)
    assert open_image(tmp_path / "a.jpg").size == (20, 40)


@pytest.mark.parametrize("name", ["a.webp", "a.bmp", "a.jpeg", "a.png"])
def test_formats_load_as_rgb(tmp_path: Path, name: str) -> None:
    Image.new("RGB", (8, 6), (0, 128, 255)).save(tmp_path / name, **({"lossless": True} if "webp" in name else {}))
    image = open_image(tmp_path / name)
    assert image.mode == "RGB" and image.size == (8, 6)


def test_truncated_and_fake_images_are_named(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("not an image")
    for name in ("cut.png", "text.jpg"):
        with pytest.raises(DatasetError) as err:
            open_image(tmp_path / name)
        (line,) = err.value.lines
        assert line.startswith(f"{tmp_path / name}: cannot read this image (") and line.endswith("replace or remove it")


def test_pad_square_centres_on_white() -> None:
    pixels = np.zeros((2, 4, 3), np.uint8)
    square = pad_square(pixels)
    assert square.shape == (4, 4, 3)
    assert (square[0] == 255).all() and (square[3] == 255).all() and (square[1:3] == 0).all()
    odd = pad_square(np.zeros((4, 1, 3), np.uint8))
    assert (odd[:, 1] == 0).all() and (odd[:, 0] == 255).all() and (odd[:, 2:] == 255).all()


def test_resize_rules() -> None:
    block = np.array([[[0], [1]], [[1], [0]]], np.uint8).repeat(3, axis=2)
    # Shrinking by 2 averages 2×2 blocks, halves rounded up as OpenCV does: (0+1+1+0)/4 = 0.5 → 1.
    assert area_resize(block, 1, 1).tolist() == area_resize_numpy(block, 1, 1).tolist() == [[[1, 1, 1]]]
    small = np.random.default_rng(1).integers(0, 256, (5, 5, 3), dtype=np.uint8)
    lanczos = np.asarray(Image.fromarray(small).resize((9, 9), Image.Resampling.LANCZOS))
    assert np.array_equal(resize_pixels(small, 9, 9), lanczos)
    assert resize_image(Image.fromarray(small), 5, 5).size == (5, 5)


@pytest.mark.parametrize(("src", "dst"), [(1000, 448), (896, 448), (1344, 448), (449, 448), (700, 300), (123, 50)])
def test_area_resize_matches_opencv(src: int, dst: int) -> None:
    cv2 = pytest.importorskip("cv2")
    pixels = np.random.default_rng(src).integers(0, 256, (src, src + 7, 3), dtype=np.uint8)
    width = round(dst * (src + 7) / src)
    ours = area_resize_numpy(pixels, width, dst).astype(int)
    theirs = cv2.resize(pixels, (width, dst), interpolation=cv2.INTER_AREA).astype(int)
    difference = np.abs(ours - theirs)
    # OpenCV sums in float32, we in a different order: a value a hair from .5 may round the other way.
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-4


def test_area_resize_works_without_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    expected = area_resize_numpy(pixels, 90, 135)
    monkeypatch.setattr(imaging, "_opencv", lambda: None)
    assert np.array_equal(area_resize(pixels, 90, 135), expected)


def _scene(width: int, height: int, subject: tuple[int, int, int, int], background: str = "white") -> Image.Image:
    """A background with a detailed, coloured subject in the box (left, top, right, bottom)."""
    rng = np.random.default_rng(7)
    if background == "white":
        pixels = np.full((height, width, 3), 255, np.uint8)
    elif background == "texture":  # a busy but low-contrast backdrop, like foliage or fabric
        pixels = (np.array([90, 140, 90]) + rng.integers(-25, 26, (height, width, 3))).astype(np.uint8)
    else:  # a sky gradient
        ramp = np.linspace(120, 230, height, dtype=np.float32)[:, None, None]
        pixels = np.broadcast_to(ramp * np.array([0.6, 0.8, 1.0]), (height, width, 3)).astype(np.uint8)
    left, top, right, bottom = subject
    stripes = (np.indices((bottom - top, right - left)).sum(axis=0) // 4) % 2
    pixels[top:bottom, left:right] = np.where(stripes[..., None] == 1, [230, 40, 60], [40, 60, 200])
    return Image.fromarray(pixels)


def _covers(box: tuple[int, int, int, int], subject: tuple[int, int, int, int]) -> bool:
    return box[0] <= subject[0] and box[1] <= subject[1] and box[2] >= subject[2] and box[3] >= subject[3]


@pytest.mark.parametrize(
    ("size", "subject", "background"),
    [
        ((300, 100), (20, 20, 80, 80), "white"),
        ((300, 100), (225, 10, 290, 90), "white"),
        ((100, 300), (15, 215, 85, 285), "white"),
        ((400, 150), (30, 30, 130, 120), "texture"),
        ((400, 150), (260, 20, 380, 140), "sky"),
        ((900, 500), (560, 100, 880, 420), "texture"),
    ],
)
def test_focus_crop_finds_the_subject(
    size: tuple[int, int], subject: tuple[int, int, int, int], background: str
) -> None:
    image = _scene(*size, subject, background)
    box = focus_box(image)
    side = min(size)
    assert box[2] - box[0] == side and box[3] - box[1] == side
    assert _covers(box, subject), box
    assert not _covers(center_box(*size), subject)  # the centre crop would cut the subject


def test_focus_crop_falls_back_to_the_centre() -> None:
    assert focus_box(Image.new("RGB", (300, 100), (255, 255, 255))) == center_box(300, 100) == (100, 0, 200, 100)
    middle = focus_box(_scene(300, 100, (120, 10, 180, 90), "texture"))
    assert abs(middle[0] - 100) <= 2, middle
    assert focus_box(Image.new("RGB", (50, 50))) == (0, 0, 50, 50)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_prepare_folder_writes_crops_and_captions_to_a_new_folder(tmp_path: Path) -> None:
    source = tmp_path / "20_zdm 1boy"
    source.mkdir()
    _scene(300, 100, (225, 10, 290, 90)).save(source / "wide.png")
    Image.new("RGBA", (80, 120), (0, 0, 0, 0)).save(source / "tall.webp", lossless=True)
    Image.new("RGB", (50, 50), (9, 9, 9)).save(source / "small.bmp")
    (source / "wide.txt").write_text("zdm, 1boy\n")
    before = _digest(source)
    done = prepare_folder(source, tmp_path / "out" / source.name, "focus", 64)
    target = tmp_path / "out" / source.name
    assert sorted(p.name for p in target.iterdir()) == ["small.png", "tall.png", "wide.png", "wide.txt"]
    assert {Image.open(target / n).size for n in ("small.png", "tall.png", "wide.png")} == {(64, 64)}
    assert (target / "wide.txt").read_text() == "zdm, 1boy\n"
    assert np.asarray(Image.open(target / "tall.png")).min() == 255  # transparent → white
    assert _covers({d.source.name: d.box for d in done}["wide.png"] or (0, 0, 0, 0), (225, 10, 290, 90))
    assert _digest(source) == before
    with pytest.raises(DatasetError, match="already exists"):
        prepare_folder(source, target, "center", 64)


def test_prepare_folder_none_copies_bytes(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (30, 20)).save(source / "a.jpg", quality=70)
    prepare_folder(source, tmp_path / "copy", "none", None)
    assert _digest(tmp_path / "copy") == _digest(source)


def test_prepare_folder_failures_leave_nothing_behind(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    Image.new("RGB", (30, 20)).save(source / "good.png")
    (source / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError) as err:
        prepare_folder(source, tmp_path / "out", "center", 64)
    (line,) = err.value.lines
    assert line.startswith(f"{source / 'bad.png'}: cannot read this image")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    (source / "bad.png").unlink()
    Image.new("RGB", (30, 20)).save(source / "good.jpg")
    with pytest.raises(DatasetError, match="several images would be written as good.png"):
        prepare_folder(source, tmp_path / "out", "center", 64)
    with pytest.raises(DatasetError, match="needs a crop size"):
        prepare_folder(source, tmp_path / "out", "focus", None)
