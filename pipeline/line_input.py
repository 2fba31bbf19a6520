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
    """``uint8 (H, W)`` -> ``float32 (H, W)``: background 1.0, ink towards 0.0."""
    img = gray.astype(np.float32)
    # The border is almost all background in every CAPTCHA scheme we know (text sits inside
    # a margin); its median ignores the odd noise line crossing it.
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = float(np.median(border))
    # Ink = the pixels far from the background; it is lighter than the background on
    # light-on-dark schemes, which we invert so the model only ever sees dark ink.
    deviation = img - background
    far = np.abs(deviation) > 48.0
    ink_lighter = float(deviation[far].mean()) > 0 if far.any() else background < 128
    if ink_lighter:
        img = 255.0 - img
        background = 255.0 - background
    ink = float(np.percentile(img, 1.0))
    span = background - ink
    if span < 16.0:
        # A blank or nearly uniform image: no stretch, just keep it light.
        return np.clip(img / max(background, 1.0), 0.0, 1.0)
    return np.clip((img - ink) / span, 0.0, 1.0)
