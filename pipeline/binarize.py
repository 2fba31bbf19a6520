"""Stage 1, binarize: grey image -> ink mask.

Polarity is decided from the data, not assumed: ink is the minority class. That lets a scheme with
light text on a dark background go through the same code as dark text on light.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import threshold_sauvola

from pipeline.clean import stroke_width


def check_gray(gray: np.ndarray) -> None:
    """Raise ValueError unless ``gray`` honours the grey contract: uint8 (H, W), non-empty."""
    if not isinstance(gray, np.ndarray) or gray.dtype != np.uint8 or gray.ndim != 2 or gray.size == 0:
        shape = getattr(gray, "shape", None)
        dtype = getattr(gray, "dtype", type(gray).__name__)
        raise ValueError(f"expected a grey uint8 (H, W) image, got {dtype} {shape}")


def binarize(
    gray: np.ndarray,
    *,
    method: str = "otsu",
    window: int = 25,
    k: float = 0.2,
    smooth: int = 3,
    smooth_min_stroke: float = 3.5,
) -> np.ndarray:
    """Threshold a grey image into an ink mask.

    Args:
        gray: uint8 (H, W).
        method: ``"otsu"`` for one global threshold, ``"sauvola"`` for a local one.
        window: Sauvola window size, pixels (made odd).
        k: Sauvola sensitivity.
        smooth: median filter size (odd; 1 = none) for bold schemes, whose noise textures
            otherwise make stroke edges ragged.
        smooth_min_stroke: smooth only when the unsmoothed mask's stroke width (pixels) is at
            least this: a median filter erases the 1-2 px strokes of thin fonts.

    Returns:
        bool (H, W), True where ink. Ink is taken to be the minority side of the threshold.
    """
    check_gray(gray)
    low, high, _, _ = cv2.minMaxLoc(gray)  # one pass, where gray.min() and gray.max() take two
    if low == high:
        return np.zeros(gray.shape, dtype=bool)
    mask = _threshold(gray, method, window, k)
    if smooth > 1 and stroke_width(mask) >= smooth_min_stroke:
        mask = _threshold(cv2.medianBlur(gray, int(smooth) | 1), method, window, k)
    return mask


def _threshold(gray: np.ndarray, method: str, window: int, k: float) -> np.ndarray:
    if method == "otsu":
        threshold, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        dark = gray <= threshold
    elif method == "sauvola":
        window = max(3, int(window) | 1)
        dark = gray <= threshold_sauvola(gray, window_size=window, k=k)
    else:
        raise ValueError(f"unknown binarize method {method!r} (use 'otsu' or 'sauvola')")
    # Ink covers less of a CAPTCHA than background does; flip when the dark side is the majority.
    return dark if 2 * np.count_nonzero(dark) <= dark.size else ~dark  # dark.mean() <= 0.5, without floats
