"""``python -m pipeline.samples``: make ``data/samples/``, the README's first-run demo folder.

The samples are made by this project, not copied: a seeded pick of captcha_v2 images from the
*validation* files of the shipped bundle (listed in its manifest: images its readers never trained
on), each re-encoded in
a different file format and colour mode (tinted RGB, transparent background, palette, 16-bit grey,
JPEG, BMP, WEBP, GIF, light-on-dark, another size), so the demo also exercises every loader path.
A few get hostile file names, with their labels in ``labels.csv``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.bundle import DEFAULT_MODEL, load_bundle
from pipeline.dataset import list_images
from pipeline.load import load_gray

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "datasets" / "captcha_v2" / "train"


def _tinted(gray: np.ndarray) -> Image.Image:
    ink = (255 - gray).astype(np.float32) / 255.0
    rgb = 255 - ink[..., None] * np.array([200, 120, 40], np.float32)  # ink drawn in brown-orange
    return Image.fromarray(rgb.clip(0, 255).astype(np.uint8), "RGB")


def _transparent(gray: np.ndarray) -> Image.Image:
    rgba = np.zeros((*gray.shape, 4), np.uint8)  # black everywhere; alpha carries the drawing
    rgba[..., 3] = 255 - gray
    return Image.fromarray(rgba, "RGBA")


def _sixteen_bit(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(gray.astype(np.uint16) * 257)


def _inverted(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(255 - gray, "L").convert("RGB")


def _larger(gray: np.ndarray) -> Image.Image:
    img = Image.fromarray(gray, "L")
    return img.resize((img.width * 3 // 2, img.height * 3 // 2), Image.Resampling.BICUBIC)


#: (file suffix, Pillow format, how the image is made from the source's grey pixels)
VARIANTS: list[tuple[str, str, Callable[[np.ndarray], Image.Image]]] = [
    (".png", "PNG", _tinted),
    (".png", "PNG", _transparent),
    (".png", "PNG", lambda g: Image.fromarray(g, "L").convert("P", palette=Image.Palette.ADAPTIVE, colors=32)),
    (".png", "PNG", _sixteen_bit),
    (".jpg", "JPEG", lambda g: _tinted(g)),
    (".bmp", "BMP", lambda g: Image.fromarray(g, "L")),
    (".webp", "WEBP", lambda g: Image.fromarray(g, "L").convert("RGB")),
    (".gif", "GIF", lambda g: Image.fromarray(g, "L").convert("P")),
    (".png", "PNG", _inverted),
    (".png", "PNG", _larger),
]
HOSTILE_NAMES = ["with space", "quote's \"double\"", "ünïcødé ✓"]


def make_samples(source: Path, out: Path, *, validation_files: Sequence[str], count: int = 40, seed: int = 0) -> int:
    """Write ``count`` sample images (and labels.csv) into ``out``, picked among ``validation_files``
    of ``source``; return how many were written."""
    wanted = set(validation_files)
    items = [it for it in list_images(source) if it.rel in wanted]
    picked = [items[i] for i in np.random.default_rng(seed).permutation(len(items))[:count]]
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, item in enumerate(picked):
        suffix, fmt, make = VARIANTS[n % len(VARIANTS)]
        image = make(load_gray(item.path))
        name = f"{HOSTILE_NAMES[n]}{suffix}" if n < len(HOSTILE_NAMES) else f"{item.label}{suffix}"
        buf = io.BytesIO()
        image.save(buf, format=fmt, **({"quality": 90} if fmt in ("JPEG", "WEBP") else {}))
        (out / name).write_bytes(buf.getvalue())
        rows.append((name, item.label))
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        writer.writerows(rows)
    return len(picked)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.samples", description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "samples")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the bundle whose validation files to use")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        print(f"error: source folder not found: {args.source}", file=sys.stderr)
        return 3
    validation = load_bundle(args.model).manifest["data"]["validation_files"]
    if args.out.is_dir():  # a fresh set: no stale files from an earlier pick
        for old in args.out.iterdir():
            old.unlink()
    written = make_samples(args.source, args.out, validation_files=validation, count=args.count)
    print(f"{written} samples in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
