"""Stage 2, clean: remove strike-through lines and specks from an ink mask without eating strokes.

Everything is relative to the scheme's own stroke width, measured on the mask: a line is "thin"
only relative to the glyph strokes beside it, so bold CAPTCHAs with hairline strike-throughs get an
opening while thin serif fonts (nothing thinner than their strokes) are left alone.
"""

from __future__ import annotations

import cv2
import numpy as np


def components(ink: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """8-connected components of a uint8 (H, W) ink image: (count with the background, int32
    labels, OpenCV's stats per label), as ``cv2.connectedComponentsWithStats``.

    By the Grana (block-based) algorithm: the components and their stats are the same whatever
    the algorithm, and on CAPTCHA-sized masks this one took 0.04 against 0.08 ms of OpenCV's
    default (ad-hoc timing over captcha_v2's cleaned masks, one OpenCV thread as in the workers)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(ink, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return count, labels, stats


def stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width of the ink, pixels: twice the 90th percentile of the distance transform.

    Args:
        mask: bool (H, W), ink True.
    """
    if not mask.any():
        return 0.0
    values = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)[mask]
    # np.percentile(values, 90) (linear interpolation) by one partial sort: ~7x faster on a few
    # thousand ink pixels here.
    position = 0.9 * (len(values) - 1)
    lo = int(position)
    hi = min(lo + 1, len(values) - 1)
    part = np.partition(values, (lo, hi))
    return 2.0 * float(part[lo] + (position - lo) * (part[hi] - part[lo]))


def clean(
    mask: np.ndarray,
    *,
    thin_ratio: float = 0.5,
    min_stroke_for_opening: float = 3.5,
    speck_ratio: float = 0.03,
    upright_ratio: float = 0.0,
    border_cover: float = 0.8,
    border_band: float = 0.15,
) -> np.ndarray:
    """Erase a frame, then structures much thinner than the strokes, then connected components too
    small to be ink.

    Args:
        mask: bool (H, W), ink True. Not modified.
        thin_ratio: structures thinner than ``thin_ratio * stroke width`` are opened away; 0: no
            opening (schemes without strike lines, see ``pipeline.train.scheme_params``).
        min_stroke_for_opening: below this stroke width (pixels), skip the opening.
        speck_ratio: components with area under ``speck_ratio * text_height**2`` are removed.
        upright_ratio: where the opening runs, also keep the ink that an upright bar
            ``upright_ratio * stroke width`` tall (and one pixel wide) fits in: thin glyph strokes
            that run up and down survive, strike lines that run across do not; 0: off.
        border_cover, border_band: :func:`frame`'s arguments (``border_cover`` 0: no frame removal).

    Returns:
        bool (H, W), the cleaned mask.
    """
    return clean_counted(mask, thin_ratio=thin_ratio, min_stroke_for_opening=min_stroke_for_opening,
                         speck_ratio=speck_ratio, upright_ratio=upright_ratio, border_cover=border_cover,
                         border_band=border_band)[0]


def frame(mask: np.ndarray, *, cover: float = 0.8, band: float = 0.15) -> np.ndarray:
    """The ink of a frame drawn around the image: bool (H, W), True on every row within ``band``
    of the height from the top or bottom edge that is inked along at least ``cover`` of the width,
    and on every such column near the left or right edge.

    Text never inks a whole row or column end to end, so nothing of a glyph is taken but the
    pixels it shares with a frame it touches. Left in, a frame is one component as large as the
    image: the text's span is the whole width, and the segmenter cuts the frame into glyphs.
    """
    h, w = mask.shape
    lines = np.zeros(mask.shape, dtype=bool)
    if cover <= 0:
        return lines
    reach_rows, reach_cols = int(np.ceil(band * h)), int(np.ceil(band * w))
    row_ink = np.count_nonzero(mask, axis=1)
    col_ink = np.count_nonzero(mask, axis=0)
    rows = np.flatnonzero(row_ink >= cover * w)
    cols = np.flatnonzero(col_ink >= cover * h)
    lines[rows[(rows < reach_rows) | (rows >= h - reach_rows)]] = True
    lines[:, cols[(cols < reach_cols) | (cols >= w - reach_cols)]] = True
    return lines & mask


def clean_counted(
    mask: np.ndarray,
    *,
    thin_ratio: float = 0.5,
    min_stroke_for_opening: float = 3.5,
    speck_ratio: float = 0.03,
    upright_ratio: float = 0.0,
    border_cover: float = 0.8,
    border_band: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`clean`, and the ink areas (pixels, int (N,)) of the components it kept: those are
    the cleaned mask's own 8-connected components (dropping whole components joins or splits none
    of the others), so the segmenter need not label them again.
    """
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"expected a bool (H, W) mask, got {mask.dtype} {mask.shape}")
    if border_cover > 0:
        border = frame(mask, cover=border_cover, band=border_band)
        if border.any():
            mask = mask & ~border
    ink = mask.astype(np.uint8)
    width = stroke_width(mask)
    if thin_ratio > 0 and width >= min_stroke_for_opening:
        # Odd sizes only: OpenCV's even kernels shift the opened image by a pixel.
        size = max(3, int(round(width * thin_ratio)) | 1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        opened = np.asarray(cv2.morphologyEx(ink, cv2.MORPH_OPEN, kernel), dtype=np.uint8)
        if upright_ratio > 0:
            # Strike lines run across; a glyph's thin strokes (the stem of a "7", the slant of a
            # "4") run up and down. Also keep what an upright bar fits in: the union of two
            # openings is still an opening (nothing is added that was not ink).
            bar = cv2.getStructuringElement(cv2.MORPH_RECT, (1, max(3, int(round(width * upright_ratio)) | 1)))
            opened |= np.asarray(cv2.morphologyEx(ink, cv2.MORPH_OPEN, bar), dtype=np.uint8)
        ink = opened
    count, labels, stats = components(ink)
    if count <= 1:
        return ink.astype(bool), np.zeros(0, dtype=np.int64)
    areas = stats[1:, cv2.CC_STAT_AREA]
    heights = stats[1:, cv2.CC_STAT_HEIGHT]
    # Text height: the tallest of the substantial components (a speck or a line tail is not text).
    substantial = areas >= 0.2 * areas.max()
    text_height = float(heights[substantial].max())
    kept = areas >= speck_ratio * text_height**2
    return _without(ink, labels, stats, np.flatnonzero(~kept) + 1), areas[kept].astype(np.int64)


#: Up to this many dropped components, :func:`_without` erases each inside its own box; beyond,
#: one look-up over the whole label image is cheaper (a 50x200 label image: the look-up about
#: 40 microseconds whatever the count, the boxes 2 plus about 6 a speck; ad-hoc timing).
_FEW = 6


def _without(ink: np.ndarray, labels: np.ndarray, stats: np.ndarray, dropped: np.ndarray) -> np.ndarray:
    """bool (H, W): the ink, but for the components ``dropped`` (their labels). The same mask as
    ``keep[labels]`` with ``keep`` false for the background and the dropped components; a few
    specks are erased within their bounding boxes, not by indexing the whole label image."""
    if len(dropped) > _FEW:
        keep = np.ones(len(stats), dtype=bool)
        keep[0] = False
        keep[dropped] = False
        return keep[labels]
    out = ink.astype(bool)
    for label in dropped.tolist():
        x, y, w, h = stats[label, :4].tolist()
        box = out[y : y + h, x : x + w]
        box[labels[y : y + h, x : x + w] == label] = False
    return out
