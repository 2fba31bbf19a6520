"""The CRNN's input: any grey image -> ``float32 (height, width)``, dark ink on a light background.

Kept apart from :mod:`pipeline.crnn` (which imports Keras) so worker processes can make the
inputs beside the classic stages without loading TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def prepare_batch(grays: Sequence[np.ndarray], *, height: int, width: int) -> np.ndarray:
    """Grey images of any size -> the model's input batch ``float32 (B, height, width, 1)``.

    Each image is made dark-ink-on-light (inverted when its ink is lighter than its
    background), contrast-stretched so the background is 1.0 and the darkest ink ~0.0, scaled
    to ``height`` keeping its aspect ratio, left-aligned and padded on the right with background.
    An image that would come out wider than ``width`` is squeezed to fit instead: clipping
    would cut characters off.

    Args:
        grays: ``uint8 (H, W)`` images.

    Raises:
        ValueError: an image that is not 2-D ``uint8`` or is empty.
    """
    batch = np.ones((len(grays), height, width, 1), dtype=np.float32)
    for i, gray in enumerate(grays):
        batch[i, :, :, 0] = prepare_line(gray, height=height, width=width)
    return batch


def prepare_line(gray: np.ndarray, *, height: int, width: int) -> np.ndarray:
    """One grey ``uint8 (H, W)`` image -> the model's input ``float32 (height, width)`` (see
    :func:`prepare_batch`)."""
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2:
        kind = f"{gray.dtype} {gray.shape}" if isinstance(gray, np.ndarray) else type(gray).__name__
        raise ValueError(f"expected a grey uint8 (H, W) image, got {kind}")
    h, w = gray.shape
    if h == 0 or w == 0:
        raise ValueError(f"empty image ({h}x{w})")
    norm = _normalise(gray)
    new_w = max(1, min(width, int(round(w * height / h))))
    # INTER_AREA when shrinking keeps thin strokes; linear when enlarging small schemes.
    interp = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    scaled = cv2.resize(norm, (new_w, height), interpolation=interp)
    out = np.ones((height, width), dtype=np.float32)
    out[:, :new_w] = scaled
    return out


def _normalise(gray: np.ndarray) -> np.ndarray:
    """``uint8 (H, W)`` -> ``float32 (H, W)``: background 1.0, ink towards 0.0.

    Every output value depends only on the pixel's grey level, so the statistics are read off
    256-bin histograms and the result is one 256-entry table applied to the image.
    """
    # The border is almost all background in every CAPTCHA scheme we know (text sits inside
    # a margin); its median ignores the odd noise line crossing it.
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = _quantile(np.bincount(border, minlength=256), 0.5)
    counts = np.bincount(gray.ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64)
    # Ink = the pixels far from the background; it is lighter than the background on
    # light-on-dark schemes, which we invert so the model only ever sees dark ink.
    deviation = levels - background
    far = np.abs(deviation) > 48.0
    ink_lighter = float(counts[far] @ deviation[far]) > 0 if counts[far].any() else background < 128
    if ink_lighter:
        counts = counts[::-1]  # the histogram of 255 - gray
        background = 255.0 - background
    ink = _quantile(counts, 0.01)
    table = (255.0 - levels if ink_lighter else levels).astype(np.float32)
    span = background - ink
    if span < 16.0:
        # A blank or nearly uniform image: no stretch, just keep it light.
        table = np.clip(table / np.float32(max(background, 1.0)), 0.0, 1.0)
    else:
        table = np.clip((table - np.float32(ink)) / np.float32(span), 0.0, 1.0)
    return table[gray]


def _quantile(counts: np.ndarray, q: float) -> float:
    """The ``q`` quantile (linear interpolation, as ``np.percentile``) of the grey levels whose
    histogram is ``counts``."""
    cumulative = np.cumsum(counts)
    position = q * (int(cumulative[-1]) - 1)
    lower = int(np.floor(position))
    lo = float(np.searchsorted(cumulative, lower, side="right"))
    hi = float(np.searchsorted(cumulative, lower + 1, side="right"))
    return lo + (hi - lo) * (position - lower)
