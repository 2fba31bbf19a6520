"""Stage 4, glyphs: cut candidate glyphs out of the cleaned mask, the classifier's input.

A crop keeps its aspect ratio (a sliver cut off an "m" must not look like a whole "n"): the ink's
bounding box inside the segment's columns is centred on a square canvas, then scaled to
``size x size``.
"""

from __future__ import annotations

import cv2
import numpy as np


def crop_glyphs(mask: np.ndarray, spans: np.ndarray, *, size: int = 28, margin: int = 2) -> np.ndarray:
    """Crops of the ink between column pairs.

    Args:
        mask: bool (H, W), ink True (the cleaned mask).
        spans: int (S, 2), column ranges [x0, x1) of the candidate glyphs.
        size: output side, pixels.
        margin: blank pixels kept around the ink, in output pixels.

    Returns:
        uint8 (S, size, size), ink 255 on 0; an all-zero crop where the columns hold no ink.
    """
    out = np.zeros((len(spans), size, size), dtype=np.uint8)
    ink = mask.astype(np.uint8) * 255
    inner = size - 2 * margin
    for n, (x0, x1) in enumerate(np.asarray(spans, dtype=np.int64)):
        piece = ink[:, max(0, x0) : max(0, x1)]
        rows = np.flatnonzero(piece.any(axis=1))
        cols = np.flatnonzero(piece.any(axis=0))
        if rows.size == 0:
            continue
        piece = piece[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        h, w = piece.shape
        scale = inner / max(h, w)
        nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
        small = cv2.resize(piece, (nw, nh), interpolation=cv2.INTER_AREA)
        top, left = (size - nh) // 2, (size - nw) // 2
        out[n, top : top + nh, left : left + nw] = small
    return out
