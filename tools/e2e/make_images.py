"""Write tiny training images (a solid colour with a white box) and a .txt caption beside each."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = (
    ("red", (220, 30, 30)),
    ("green", (30, 200, 30)),
    ("blue", (30, 30, 220)),
    ("yellow", (230, 220, 20)),
    ("purple", (140, 30, 160)),
)
TRIGGER = "e2etok"


def make_images(out: Path, count: int, size: int) -> None:
    """Write img0.png/img0.txt … into `out`; the box differs per image so no two are identical."""
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name, rgb = COLOURS[i % len(COLOURS)]
        image = Image.new("RGB", (size, size), rgb)
        quarter = size // 4
        ImageDraw.Draw(image).rectangle(
            (quarter + i * 2, quarter, 3 * quarter, 3 * quarter - i * 2), fill=(255, 255, 255)
        )
        image.save(out / f"img{i}.png")
        (out / f"img{i}.txt").write_text(f"{TRIGGER}, a {name} square, white box", encoding="utf-8")


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    make_images(args.out, args.count, args.size)
    print(f"wrote {args.count} images of {args.size}px to {args.out}")


if __name__ == "__main__":
    main()
