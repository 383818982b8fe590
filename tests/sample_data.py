"""Small on-disk datasets and configs for the settings/render/CLI tests (PNG files made with PIL)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image


def write_images(
    folder: Path,
    sizes: Sequence[tuple[int, int]],
    caption: str | None = "zdm, 1boy",
    caption_extension: str = ".txt",
) -> list[Path]:
    """`len(sizes)` PNGs named 00.png, 01.png… (with a caption file each unless caption is None)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"{i:02d}.png"
        Image.new("RGB", size, (i * 30 % 256, 90, 160)).save(path)
        if caption is not None:
            path.with_suffix(caption_extension).write_text(caption + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def write_models(folder: Path) -> dict[str, Path]:
    """Empty stand-ins for the model files a config names (nothing here loads them)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {key: folder / f"{key}.safetensors" for key in ("base", "clip_l", "t5xxl", "ae")}
    for path in files.values():
        path.write_bytes(b"")
    return files


def config_text(family: str, models: dict[str, Path], dirs: Sequence[Path], extra: str = "") -> str:
    """A config file's text for `family` over the dataset folders `dirs`."""
    flux = "".join(f'{key} = "{models[key]}"\n' for key in ("clip_l", "t5xxl", "ae")) if family == "flux" else ""
    entries = ", ".join(f'{{ path = "{d}" }}' for d in dirs)
    return f'[model]\nfamily = "{family}"\nbase = "{models["base"]}"\n{flux}\n[dataset]\ndirs = [{entries}]\n\n{extra}'
