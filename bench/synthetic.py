"""Train and read a scheme unlike the shipped ones, made here: does nothing assume their numbers?

    python bench/synthetic.py [--scheme lines|night|colours|framed|imagecaptcha|smallcaptcha] [--images 900]
                              [--seed 0]
                              [--keep DIR]
                              [-- TRAIN_ARGS]

Makes a seeded labelled folder (``labels.csv``) of a scheme that differs from both shipped ones
in every way the pipeline must not assume: 64x240 RGB, 6 or 7 characters of 37 in mixed case
(``ACDEFHKMNPRTUVWXYabdefhkmnprtuy345678``), four OpenCV Hershey fonts, glyphs rotated by up to
15 degrees and jittered, dark ink of a random colour on a noisy two-colour gradient, a thin
sine-shaped strike line in the ink's colour, and coloured speckles. Then runs the real commands
on it: ``python -m pipeline.train FOLDER --out BUNDLE --seed 1`` (both readers, the defaults),
and ``python -m pipeline.run`` in the default mode and ``--mode both`` on the bundle's
validation files (never trained on). Writes ``bench/results/synthetic.json``: the run's
``report.json`` figures for each route, the routing threshold chosen at training, the
training times, and the command. About 15 minutes on the 2-core machine. Arguments after ``--``
go to ``pipeline.train`` (``-- --ctc-epochs 150``), and the results then to
``synthetic_<those arguments>.json``; another ``--seed`` to ``synthetic_seed_<N>[_<arguments>].json``.

``--scheme night`` makes another scheme, unlike both shipped ones and the one above: 40x170
RGBA, light text of one random colour on a dark noisy page whose four corners are rounded off
(transparent), 4 to 6 characters of 32 (upper case and digits, ``NIGHT_CHARSET``), two Hershey
fonts, coloured speckles, no line. Its results go to ``synthetic_night[_...].json``.

``--scheme colours``: 50x180 RGB, 5 characters of 28 (lower case and digits,
``COLOURS_CHARSET``), each letter of its own random colour at least 150 RGB levels from the
page's (a random colour, light or dark), so that some letters are as bright as the page and
differ from it in hue only; coloured speckles, no line. Results: ``synthetic_colours[_...].json``.

``--scheme framed``: the colours scheme's size, letters and fonts, in dark grey on a light noisy
page, inside a 2-pixel frame drawn around the image's edges. Results: ``synthetic_framed[_...].json``.

``--scheme imagecaptcha``: images made by the ``captcha`` package's ``ImageCaptcha`` (the generator
that many public CAPTCHA data sets and tutorials use; ``pip install -e '.[bench]'``), 60x160 RGB,
4 characters of 36 (digits and upper case), each of the text's own colour on a pale page of
another, warped, rotated and overlapping, with a curve in the text's colour through them and
dots. The package draws from Python's ``secrets``, which cannot be seeded; here its draws come
from a ``random.Random`` seeded with ``--seed`` instead, so a version of the package makes the
same images every time (the version is in the results file). Results:
``synthetic_imagecaptcha[_...].json``.

``--scheme smallcaptcha``: the same generator at a small size, 30x90 RGB with the font sizes scaled
to it (21, 25, 28 px), 4 or 5 characters of 36 (digits and lower case): glyphs a few pixels wide
that overlap more than they stand apart. Results: ``synthetic_smallcaptcha[_...].json``.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.metadata
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import cv2
import numpy as np
from common import RESULTS, ROOT, file_tag, split_train_args

CHARSET = "ACDEFHKMNPRTUVWXYabdefhkmnprtuy345678"
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)
HEIGHT, WIDTH = 64, 240
NIGHT_CHARSET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
NIGHT_HEIGHT, NIGHT_WIDTH, NIGHT_CORNER = 40, 170, 7
COLOURS_CHARSET = "abcdefghkmnpqrstuvwxyz234578"
COLOURS_HEIGHT, COLOURS_WIDTH = 50, 180
IMAGECAPTCHA_CHARSET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMAGECAPTCHA_HEIGHT, IMAGECAPTCHA_WIDTH = 60, 160
SMALLCAPTCHA_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"
SMALLCAPTCHA_HEIGHT, SMALLCAPTCHA_WIDTH, SMALLCAPTCHA_FONT_SIZES = 30, 90, (21, 25, 28)
T = TypeVar("T")


def speckle(image: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Draw ``count`` one-pixel-radius dots of random colours at random places on ``image``."""
    h, w = image.shape[:2]
    for _ in range(count):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        cv2.circle(image, (int(rng.integers(0, w)), int(rng.integers(0, h))), 1, colour, -1)


def make_image(text: str, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 (HEIGHT, WIDTH, 3) CAPTCHA of ``text``."""
    start, end = rng.integers(150, 255, 3), rng.integers(150, 255, 3)
    ramp = np.linspace(0.0, 1.0, WIDTH)[None, :, None]
    image = start * (1 - ramp) + end * ramp + rng.normal(0.0, 12.0, (HEIGHT, WIDTH, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    ink = np.array(rng.integers(0, 110, 3), dtype=np.float32)
    font = FONTS[int(rng.integers(0, len(FONTS)))]
    x = 8 + int(rng.integers(0, 10))
    for char in text:
        scale, thickness = float(rng.uniform(0.95, 1.15)), int(rng.integers(2, 4))
        (width, _), _ = cv2.getTextSize(char, font, scale, thickness)
        glyph = np.zeros((HEIGHT, width + 12), np.uint8)
        cv2.putText(glyph, char, (6, 44 + int(rng.integers(-5, 5))), font, scale, 255, thickness, cv2.LINE_AA)
        turn = cv2.getRotationMatrix2D((glyph.shape[1] / 2, HEIGHT / 2), float(rng.uniform(-15, 15)), 1.0)
        glyph = cv2.warpAffine(glyph, turn, (glyph.shape[1], HEIGHT))
        x1 = min(WIDTH, x + glyph.shape[1])
        alpha = glyph[:, : x1 - x].astype(np.float32)[..., None] / 255.0
        image[:, x:x1] = (image[:, x:x1] * (1 - alpha) + ink * alpha).astype(np.uint8)
        x += width + int(rng.integers(-3, 3))
    xs = np.arange(WIDTH)
    ys = 32 + 8 * np.sin(xs / WIDTH * np.pi * rng.uniform(1, 3) + rng.uniform(0, 6))
    line = np.stack([xs, ys.astype(np.int32)], axis=1).reshape(-1, 1, 2)
    cv2.polylines(image, [line], False, tuple(float(v) for v in ink), 1, cv2.LINE_AA)
    speckle(image, rng, 40)
    return image


def make_night_image(text: str, rng: np.random.Generator) -> np.ndarray:
    """One BGRA uint8 (NIGHT_HEIGHT, NIGHT_WIDTH, 4) CAPTCHA of ``text`` (``--scheme night``)."""
    h, w = NIGHT_HEIGHT, NIGHT_WIDTH
    page = rng.integers(10, 70, 3).astype(np.float64)
    image = np.clip(page + rng.normal(0.0, 8.0, (h, w, 3)), 0, 255).astype(np.uint8)
    ink = tuple(int(v) for v in rng.integers(170, 256, 3))
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX)[int(rng.integers(0, 2))]
    x = 10 + int(rng.integers(0, 8))
    for char in text:
        scale = float(rng.uniform(0.7, 0.85))
        (width, _), _ = cv2.getTextSize(char, font, scale, 2)
        cv2.putText(image, char, (x, 30 + int(rng.integers(-3, 4))), font, scale, ink, 2, cv2.LINE_AA)
        x += width + int(rng.integers(-2, 3))
    speckle(image, rng, 30)
    # Rounded corners: transparent (alpha 0, black) further than NIGHT_CORNER pixels from the
    # rectangle inset by that much.
    r = NIGHT_CORNER
    yy, xx = np.mgrid[0:h, 0:w]
    far = (yy - np.clip(yy, r, h - 1 - r)) ** 2 + (xx - np.clip(xx, r, w - 1 - r)) ** 2 > r**2
    alpha = np.where(far, 0, 255).astype(np.uint8)
    image[alpha == 0] = 0
    return np.dstack([image, alpha])


def make_colours_image(text: str, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 (COLOURS_HEIGHT, COLOURS_WIDTH, 3) CAPTCHA of ``text`` (``--scheme colours``)."""
    h, w = COLOURS_HEIGHT, COLOURS_WIDTH
    page = rng.integers(0, 256, 3).astype(np.float64)
    image = np.clip(page + rng.normal(0.0, 6.0, (h, w, 3)), 0, 255).astype(np.uint8)
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_COMPLEX)[int(rng.integers(0, 2))]
    x = 8 + int(rng.integers(0, 10))
    for char in text:
        while True:  # a colour a reader can see: far enough from the page's, in any direction
            ink = rng.integers(0, 256, 3).astype(np.float64)
            if np.linalg.norm(ink - page) >= 150.0:
                break
        scale = float(rng.uniform(0.9, 1.1))
        (width, _), _ = cv2.getTextSize(char, font, scale, 2)
        cv2.putText(image, char, (x, 35 + int(rng.integers(-4, 5))), font, scale,
                    tuple(float(v) for v in ink), 2, cv2.LINE_AA)
        x += width + int(rng.integers(0, 5))
    speckle(image, rng, 25)
    return image


def make_framed_image(text: str, rng: np.random.Generator) -> np.ndarray:
    """One BGR uint8 (COLOURS_HEIGHT, COLOURS_WIDTH, 3) CAPTCHA of ``text`` (``--scheme framed``)."""
    h, w = COLOURS_HEIGHT, COLOURS_WIDTH
    image = np.clip(235.0 + rng.normal(0.0, 6.0, (h, w, 3)), 0, 255).astype(np.uint8)
    font = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_COMPLEX)[int(rng.integers(0, 2))]
    x = 12 + int(rng.integers(0, 10))
    for char in text:
        scale = float(rng.uniform(0.9, 1.1))
        (width, _), _ = cv2.getTextSize(char, font, scale, 2)
        cv2.putText(image, char, (x, 35 + int(rng.integers(-4, 5))), font, scale, (40, 40, 40), 2, cv2.LINE_AA)
        x += width + int(rng.integers(0, 5))
    cv2.rectangle(image, (0, 0), (w - 1, h - 1), (40, 40, 40), 2)
    return image


class _SeededSecrets:
    """What the ``captcha`` package asks of the ``secrets`` module, drawn from a seeded
    ``random.Random`` instead: the package (0.7) draws every choice from ``secrets``, which
    cannot be seeded, and a benchmark's images must be the same on every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def randbelow(self, n: int) -> int:
        return self._random.randrange(n)

    def randbits(self, k: int) -> int:
        return self._random.getrandbits(k)

    def choice(self, seq: Sequence[T]) -> T:
        return self._random.choice(seq)


def imagecaptcha_maker(seed: int, *, height: int = IMAGECAPTCHA_HEIGHT, width: int = IMAGECAPTCHA_WIDTH,
                       font_sizes: tuple[int, ...] | None = None) -> Callable[[str, np.random.Generator], np.ndarray]:
    """The ``captcha`` package's maker (``--scheme imagecaptcha``, ``smallcaptcha``): a function
    (text, rng) -> BGR uint8 (height, width, 3), its draws seeded by ``seed``."""
    try:
        import captcha.image
    except ImportError:
        raise SystemExit("--scheme imagecaptcha needs the captcha package: pip install -e '.[bench]'") from None
    captcha.image.secrets = _SeededSecrets(seed)  # type: ignore[assignment]
    maker = captcha.image.ImageCaptcha(width=width, height=height, font_sizes=font_sizes)

    def make(text: str, rng: np.random.Generator) -> np.ndarray:
        rgb = np.asarray(maker.generate_image(text).convert("RGB"))
        return np.ascontiguousarray(rgb[..., ::-1])

    return make


def imagecaptcha_version() -> str | None:
    try:
        return importlib.metadata.version("captcha")
    except importlib.metadata.PackageNotFoundError:
        return None


def _fixed(make: Callable[[str, np.random.Generator], np.ndarray]) -> Callable[[int], Callable]:
    """A scheme's maker as a function of the seed, for a maker that draws from ``rng`` alone."""
    return lambda seed: make


#: Per scheme: its characters, the lengths its texts are drawn from [low, high), and its maker as
#: a function of the image seed (the ``captcha`` package needs its own draws seeded).
SCHEMES = {"lines": (CHARSET, (6, 8), _fixed(make_image)), "night": (NIGHT_CHARSET, (4, 7), _fixed(make_night_image)),
           "colours": (COLOURS_CHARSET, (5, 6), _fixed(make_colours_image)),
           "framed": (COLOURS_CHARSET, (5, 6), _fixed(make_framed_image)),
           "imagecaptcha": (IMAGECAPTCHA_CHARSET, (4, 5), imagecaptcha_maker),
           "smallcaptcha": (SMALLCAPTCHA_CHARSET, (4, 6), functools.partial(
               imagecaptcha_maker, height=SMALLCAPTCHA_HEIGHT, width=SMALLCAPTCHA_WIDTH,
               font_sizes=SMALLCAPTCHA_FONT_SIZES))}
#: The schemes the ``captcha`` package makes.
CAPTCHA_PACKAGE = ("imagecaptcha", "smallcaptcha")
#: Per scheme: its images' (height, width).
SIZES = {"lines": (HEIGHT, WIDTH), "night": (NIGHT_HEIGHT, NIGHT_WIDTH), "colours": (COLOURS_HEIGHT, COLOURS_WIDTH),
         "framed": (COLOURS_HEIGHT, COLOURS_WIDTH), "imagecaptcha": (IMAGECAPTCHA_HEIGHT, IMAGECAPTCHA_WIDTH),
         "smallcaptcha": (SMALLCAPTCHA_HEIGHT, SMALLCAPTCHA_WIDTH)}


def make_scheme(folder: Path, count: int, seed: int, scheme: str = "lines") -> None:
    """``count`` numbered PNGs and their ``labels.csv`` in ``folder``."""
    charset, (low, high), maker_for = SCHEMES[scheme]
    make = maker_for(seed)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        text = "".join(rng.choice(list(charset), size=int(rng.integers(low, high))))
        name = f"{i:04d}.png"
        if not cv2.imwrite(str(folder / name), make(text, rng)):
            raise SystemExit(f"cannot write {folder / name}")
        rows.append((name, text))
    with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label"])
        writer.writerows(rows)


def _run(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="lines",
                        help="which scheme to make (default %(default)s; see the module's docstring)")
    parser.add_argument("--images", type=int, default=900)
    parser.add_argument("--seed", type=int, default=0, help="seed of the images (training uses --seed 1)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the images, bundle and run outputs here")
    argv = sys.argv[1:]
    own, extra = split_train_args(argv)
    args = parser.parse_args(own)
    # Another seed of images is another sample of the scheme: its own file, beside seed 0's.
    scheme = [args.scheme] if args.scheme != "lines" else []
    tag = file_tag(scheme + (["seed", str(args.seed)] if args.seed != 0 else []) + extra)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images, bundle = work / "images", work / "bundle"
        make_scheme(images, args.images, args.seed, args.scheme)
        started = time.perf_counter()
        _run(["pipeline.train", str(images), "--out", str(bundle), "--seed", "1", *extra])
        train_seconds = time.perf_counter() - started
        manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
        # The validation files, with their labels, as a folder of their own.
        validation = set(manifest["data"]["validation_files"])
        val = work / "validation"
        val.mkdir()
        with (images / "labels.csv").open(encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r["file"] in validation]
        for row in rows:
            (val / row["file"]).symlink_to(Path("..") / images.name / row["file"])  # relative: --keep copies it
        with (val / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["file", "label"])
            writer.writerows((r["file"], r["label"]) for r in rows)
        figures = {}
        readers = set(manifest["readers"])
        # Both readers: the default mode and both; one reader (``-- --reader ctc``): that one alone.
        modes = ("auto", "both") if readers == {"glyph", "ctc"} else ("segment" if "glyph" in readers else "ctc",)
        for mode in modes:
            out = work / f"run_{mode}"
            _run(["pipeline.run", str(val), "--out", str(out), "--model", str(bundle), "--mode", mode, "-q"])
            report = json.loads((out / "report.json").read_text(encoding="utf-8"))
            figures[mode] = {"routes": report["routes"], "comparison": report["comparison"],
                             "reachable": report["segmentation"].get("reachable"),
                             "glyph_accuracy": report["glyphs"].get("accuracy")}
        if args.keep is not None:
            shutil.copytree(work, args.keep, dirs_exist_ok=True, symlinks=True)
    result = {
        "command": "python bench/synthetic.py " + " ".join(argv),
        "train_args": extra,
        "scheme": {"name": args.scheme, "images": args.images, "seed": args.seed,
                   "size": list(SIZES[args.scheme]),
                   "charset": SCHEMES[args.scheme][0], "lengths": manifest["lengths"],
                   **({"captcha_package": imagecaptcha_version()} if args.scheme in CAPTCHA_PACKAGE else {})},
        "validation_images": len(rows),
        "routing": manifest.get("routing"),
        "training_seconds": {"command": round(train_seconds, 1),
                             **{name: r["training"]["seconds"] for name, r in manifest["readers"].items()}},
        "stage_params": manifest["params"],
        # How each reader's training went (the CRNN's cycles among them), and what it read on the
        # selection and validation images.
        "readers": {name: {key: r.get(key) for key in ("training", "selection", "validation")}
                    for name, r in manifest["readers"].items()},
        "default_mode": figures["auto"]["routes"]["auto"] if "auto" in figures else None,
        **{mode: figures[mode] for mode in modes if mode != "auto"},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"synthetic{'_' + tag if tag else ''}.json").write_text(json.dumps(result, indent=1) + "\n",
                                                                       encoding="utf-8")
    routes = figures[modes[-1]]["routes"]
    print(f"synthetic scheme {args.scheme!r}, {len(rows)} validation images: "
          + ", ".join(f"{name} {r['accuracy']:.2%}" for name, r in routes.items())
          + f" (routing: {manifest.get('routing')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
