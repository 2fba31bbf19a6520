"""Stage 4, glyphs: cut candidate glyphs out of the cleaned mask, the classifier's input.

A crop keeps its aspect ratio (a sliver cut off an "m" must not look like a whole "n"): the ink's
bounding box inside the segment's columns is centred on a square canvas, then scaled to
``size x size``. Crops are cut from the cleaned mask and, for bundles that ask for it, also from
the grey image (:func:`shade`), as a second channel, and carry a constant channel that marks where
in the text a crop stands (the first-glyph mark, :func:`lattice_crops`).
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.config import GlyphParams
from pipeline.segment import Lattice


def lattice_crops(
    mask: np.ndarray | None, lattice: Lattice, ids: np.ndarray, *, params: GlyphParams,
    source: np.ndarray | None = None, plan: np.ndarray | None = None,
) -> np.ndarray:
    """The classifier's input for lattice segments ``ids``: their crops (:func:`crop_glyphs`, of
    ``source`` when given: the mask and grey-level planes, uint8 (C, H, W)), then the first-glyph
    mark where ``params.first_mark``: a constant channel, all 255 for the segments that begin the
    text (``Lattice.opening``) and 0 for the others, a fact about the segment its pixels cannot show.

    ``plan``: :func:`lattice_plan` of every segment when the caller made it already (the
    workers do), so that only the cutting is left.

    Returns:
        uint8 (N, size, size), or (N, size, size, params.channels) (planes cut one after the
        other, then merged: this runs a few times per image, in the main process).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if plan is not None and source is not None:
        plan, planes = plan[ids], source
    elif mask is None:
        raise ValueError("crops need the cleaned mask unless both their planes and their plan are given")
    else:
        plan = plan[ids] if plan is not None else lattice_plan(mask, lattice, params, ids)
        planes = source if source is not None else (mask.astype(np.uint8) * 255)[None]
    size, n = params.size, len(ids)
    out = np.zeros((params.channels, n, size, size), dtype=np.uint8)  # plane by plane, each contiguous
    cut_crops(planes, plan, size=size, out=out[: len(planes)])
    if (mark := params.mark_channel) is not None:
        out[mark, lattice.opening[ids]] = 255
    if params.channels == 1:
        return out[0]
    if n == 0:
        return np.zeros((0, size, size, params.channels), dtype=np.uint8)
    # Channels last (what the CNN takes) by OpenCV's merge of the planes: a few microseconds,
    # where NumPy's strided copy of a transposed view costs several times that.
    return np.asarray(cv2.merge([plane.reshape(n * size, size) for plane in out])).reshape(n, size, size, -1)


def lattice_plan(mask: np.ndarray, lattice: Lattice, params: GlyphParams, ids: np.ndarray | None = None) -> np.ndarray:
    """:func:`crop_plan` of lattice segments ``ids`` (None: all of them)."""
    ids = np.arange(len(lattice.segments)) if ids is None else np.asarray(ids, dtype=np.int64)
    spans = lattice.cuts[lattice.segments[ids]] if len(ids) else np.zeros((0, 2), np.int64)
    return crop_plan(mask, spans, size=params.size, margin=params.margin, rows=lattice.rows[ids])


def crop_glyphs(
    mask: np.ndarray, spans: np.ndarray, *, size: int = 20, margin: int = 2, rows: np.ndarray | None = None,
    source: np.ndarray | None = None,
) -> np.ndarray:
    """Crops of the ink between column pairs: :func:`crop_plan`, then :func:`cut_crops`.

    Args:
        mask: bool (H, W), ink True (the cleaned mask).
        spans: int (S, 2), column ranges [x0, x1) of the candidate glyphs.
        size: output side, pixels.
        margin: blank pixels kept around the ink, in output pixels.
        rows: int (S, 2), the ink rows [top, bottom) of each span when the caller has them already
            (``Lattice.rows``); measured here when None.
        source: uint8 (H, W), or (H, W, C) planes cut in one pass, to cut the boxes from instead
            of the mask (the boxes still come from the mask's ink), e.g. :func:`shade`.

    Returns:
        uint8 (S, size, size), or (S, size, size, C) for a (H, W, C) source; ink 255 on 0 for the
        mask; an all-zero crop where the columns hold no ink.
    """
    plan = crop_plan(mask, spans, size=size, margin=margin, rows=rows)
    if source is None or source.ndim == 2:
        return cut_crops(mask.astype(np.uint8) * 255 if source is None else source, plan, size=size)
    planes = cut_crops(np.ascontiguousarray(np.moveaxis(source, -1, 0)), plan, size=size)
    return np.ascontiguousarray(np.moveaxis(planes, 0, -1))


def crop_plan(
    mask: np.ndarray, spans: np.ndarray, *, size: int = 20, margin: int = 2, rows: np.ndarray | None = None
) -> np.ndarray:
    """Where each crop comes from and where it goes (arguments as :func:`crop_glyphs`).

    A crop keeps its aspect ratio: the span's ink box (its columns tightened to the first and last
    inked column) is scaled so that its longer side is ``size - 2 * margin`` and centred.

    Returns:
        int64 (S, 8): per span the ink box rows [r0, r1) and columns [c0, c1), then the scaled
        box's height, width, top and left on the ``size x size`` canvas; height 0 where the
        columns hold no ink.
    """
    spans = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    plan = np.zeros((len(spans), 8), dtype=np.int64)
    if len(spans) == 0:
        return plan
    h, w = mask.shape
    inner = size - 2 * margin
    # Tighten every span to its ink columns at once: the first / last inked column inside it.
    inked = np.flatnonzero(mask.any(axis=0))
    x0 = np.minimum(np.maximum(spans[:, 0], 0), w)  # np.clip, at a third of its call overhead
    x1 = np.minimum(np.maximum(spans[:, 1], 0), w)
    lo = inked[np.minimum(np.searchsorted(inked, x0), len(inked) - 1)] if len(inked) else x0
    hi = inked[np.maximum(np.searchsorted(inked, x1) - 1, 0)] + 1 if len(inked) else x0
    if rows is None:
        has = mask.any(axis=0)
        first = np.where(has, mask.argmax(axis=0), h)
        last = np.where(has, h - mask[::-1].argmax(axis=0), 0)
        rows = np.array([(first[a:b].min(initial=h), last[a:b].max(initial=0)) for a, b in zip(x0, x1, strict=True)],
                        dtype=np.int64).reshape(-1, 2)
    # The same float64 arithmetic and round-half-to-even as Python's round() crop by crop.
    has_ink = (hi > lo) & (lo >= x0) & (hi <= x1)
    ph, pw = rows[:, 1] - rows[:, 0], hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = inner / np.maximum(ph, pw)
        nh = np.maximum(1, np.rint(ph * scale)).astype(np.int64)
        nw = np.maximum(1, np.rint(pw * scale)).astype(np.int64)
    for column, values in enumerate((rows[:, 0], rows[:, 1], lo, hi, nh, nw, (size - nh) // 2, (size - nw) // 2)):
        plan[:, column] = values  # column by column: np.stack and a copy cost more on a few dozen rows
    plan[~has_ink, 4] = 0
    return plan


def cut_crops(ink: np.ndarray, plan: np.ndarray, *, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The crops a :func:`crop_plan` describes, cut from ``ink``: uint8 (H, W), or (C, H, W)
    planes; into ``out`` (zeros, uint8 (S, size, size), or (C, S, size, size) for planes: plane by
    plane) when given.

    Each plane is resized on its own, straight into its place in ``out``: OpenCV's multi-channel
    INTER_AREA rounds differently (by one level), and crops must stay what the shipped models were
    trained on; planes first, a plane's rows are contiguous, so OpenCV neither copies its input
    nor its output.
    """
    flat = ink.ndim == 2
    planes = ink[None] if flat else ink
    shape = (len(plan), size, size) if flat else (len(planes), len(plan), size, size)
    if out is None:
        out = np.zeros(shape, dtype=np.uint8)
    elif out.shape != shape or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {shape}, got {out.dtype} {out.shape}")
    pairs = list(zip(planes, out[None] if flat else out, strict=True))  # (source plane, its crops)
    for n, (r0, r1, c0, c1, nh, nw, top, left) in enumerate(plan.tolist()):
        if nh == 0:
            continue  # no ink in these columns
        for plane, crops in pairs:
            cv2.resize(plane[r0:r1, c0:c1], (nw, nh), dst=crops[n, top : top + nh, left : left + nw],
                       interpolation=cv2.INTER_AREA)
    return out


def shade(gray: np.ndarray, binary: np.ndarray) -> np.ndarray:
    """The grey image as ink-bright uint8 (H, W), whatever the scheme's colours: the median grey
    level of the binarised ink goes to 255 and the background's to 0 (linear, clipped), so dark
    text on light and light text on dark, faint and strong, give the CNN the same range.

    Args:
        gray: uint8 (H, W), the image the mask came from.
        binary: bool (H, W), the binarised ink (before cleaning, so that the strike line and
            specks count as ink when the levels are measured).
    """
    # Grey-level histograms of the ink and the background (uint8: 256 bins; OpenCV's, exact
    # counts in float32 up to 2**24 pixels): their medians are np.median's, at a fraction of the
    # cost of sorting the pixels.
    if gray.size >= 2**24:
        raise ValueError(f"image of {gray.size} pixels is too large to shade")
    gray = np.ascontiguousarray(gray)
    in_ink = cv2.calcHist([gray], [0], np.ascontiguousarray(binary).view(np.uint8), [256], [0, 256]).ravel()
    n_ink = int(in_ink.sum())
    if n_ink == 0 or n_ink == gray.size:
        return np.zeros_like(gray)
    outside = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel() - in_ink  # exact: counts under 2**24
    ink = _median_of_histogram(in_ink)
    background = _median_of_histogram(outside)
    if abs(ink - background) < 1.0:
        return np.zeros_like(gray)
    # The linear map of each of the 256 levels, then a look-up: per pixel the same float32
    # arithmetic as mapping the image itself.
    levels = (np.arange(256, dtype=np.float32) - background) * (255.0 / (ink - background))
    return cv2.LUT(gray, np.minimum(np.maximum(levels, 0.0), 255.0).astype(np.uint8))


def _median_of_histogram(counts: np.ndarray) -> float:
    """np.median of the values a histogram counts (the mean of the two middle ones for an even
    count), from the histogram: counts[v] = how many values equal v."""
    cum = np.cumsum(counts.astype(np.int64))
    n = int(cum[-1])
    lo, hi = np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")  # values at the middle ranks
    return (float(lo) + float(hi)) / 2.0
