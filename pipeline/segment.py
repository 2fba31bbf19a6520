"""Stage 3, segment: an ink mask -> candidate glyph boxes, and the choice of N of them.

Connected components alone fail on CAPTCHAs whose glyphs touch (most captcha_v2 images are 1-4
blobs after line removal), and "always cut N equal slots" cannot follow the text. So segmentation
is done in two steps:

1. :func:`propose` builds a *lattice*: candidate cut columns (gaps between components, low-ink
   columns, and equal-width grid points where a blob offers no low-ink column) and every segment
   between two cuts whose width is plausible, each with a prior score (equal-width prior, ink cut).
2. :func:`best_path` picks exactly N consecutive segments that maximise prior + classifier score
   (dynamic programming over the lattice). The classifier scores all candidate segments of a whole
   batch of images in one call (see ``recognize``), which is what makes this fast.

With no classifier scores (all zeros) the path is the classic "N-1 low-ink cuts under an
equal-width prior" segmentation; that is how glyph crops for training are first found.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.clean import components


@dataclass(frozen=True)
class Lattice:
    """Candidate segmentations of one image.

    ``segments[s] = (i, j)`` is the candidate glyph spanning columns ``cuts[i]`` to ``cuts[j]``.
    A path starts at one of ``starts`` and ends at one of ``ends``: the text's ends with and
    without a possible line tail, so the classifier decides whether a low-ink run at an end is
    a line running on (left out) or part of a glyph (the arm of an "F", the foot of an "L").
    """

    cuts: np.ndarray  # int (K,), sorted candidate cut columns; cuts[0], cuts[-1] bound all the ink
    segments: np.ndarray  # int (S, 2), indices into ``cuts``, i < j
    prior: np.ndarray  # float (S,), log-prior of each segment (width, ink cut through)
    rows: np.ndarray  # int (S, 2), ink rows [top, bottom) inside each segment's columns
    n_components: int  # substantial connected components: the classic recipe's glyph count
    failure: str | None = None  # why no segmentation is possible, or None
    starts: tuple[int, ...] = (0,)  # cut indices a path may start at, ascending
    ends: tuple[int, ...] = (-1,)  # cut indices a path may end at, ascending (-1: the last cut)

    @functools.cached_property
    def opening(self) -> np.ndarray:
        """bool (S,): the segments that start at a start cut, i.e. that begin the text (computed
        once: crops of a few segments at a time ask for it)."""
        if not len(self.cuts):
            return np.zeros(len(self.segments), dtype=bool)
        starts = np.array(self.starts, dtype=np.int64) % len(self.cuts)
        return (self.segments[:, :1] == starts[None, :]).any(axis=1)  # np.isin costs more on a few starts

    def boxes(self, ids: np.ndarray) -> np.ndarray:
        """int (N, 4): (x0, y0, x1, y1) of segments ``ids``, the columns between their cuts and
        the ink rows inside them."""
        out = np.empty((len(ids), 4), dtype=np.int64)
        pairs = self.segments[ids]
        out[:, 0], out[:, 2] = self.cuts[pairs[:, 0]], self.cuts[pairs[:, 1]]
        out[:, 1::2] = self.rows[ids]
        return out

    @property
    def span(self) -> tuple[int, int]:
        """Columns [x0, x1) of the text without line tails (the innermost start and end)."""
        if not len(self.cuts):
            return (0, 0)
        return int(self.cuts[self.starts[-1]]), int(self.cuts[self.ends[0]])


@dataclass(frozen=True)
class Path:
    """The chosen segmentation: which lattice segments, in order, and their boxes."""

    segment_ids: np.ndarray  # int (N,), indices into ``Lattice.segments``
    boxes: np.ndarray  # int (N, 4), (x0, y0, x1, y1) per glyph, left to right
    score: float  # total log score of the path


def propose(
    mask: np.ndarray,
    *,
    lengths: tuple[int, ...],
    min_width: float = 0.35,
    max_width: float = 2.0,
    cut_ink: float = 1.0,
    cuts_per_glyph: float = 6.0,
    width_weight: float = 1.0,
    tail_ink: float = 0.2,
    tail_run: float = 0.4,
    grid_step: float = 0.25,
    edge_cuts: float = 0.0,
    complete_paths_only: bool = True,
    n_components: int | None = None,
) -> Lattice:
    """Candidate cuts and segments of a cleaned ink mask.

    Args:
        mask: bool (H, W), ink True.
        lengths: the text lengths the scheme uses (glyph counts to allow).
        min_width, max_width: plausible glyph widths, as fractions of span / N.
        cut_ink: columns with at most ``cut_ink * text_height`` ink are candidate cuts.
        cuts_per_glyph: at most this many low-ink candidate cuts per expected glyph.
        width_weight: weight of the equal-width prior.
        tail_ink, tail_run: a run of at least ``tail_run * text_height`` columns at an end of the
            text, each with at most ``tail_ink * text_height`` ink, is a line tail and trimmed.
        grid_step: spacing of grid cuts inside fused stretches, in mean glyph widths.
        edge_cuts: above 0, also a cut at the left edge of each low-ink valley (:func:`_edge_cuts`).
        complete_paths_only: offer only segments that lie on some complete path (the others can
            never be chosen); the glyph trainer turns this off to draw reject examples from
            every plausible segment.
        n_components: the mask's substantial components (:func:`substantial`) where the caller
            knows its components already (``clean.clean_counted``); counted here when None.
    """
    if mask.dtype != bool or mask.ndim != 2:
        raise ValueError(f"expected a bool (H, W) mask, got {mask.dtype} {mask.shape}")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"lengths must be positive glyph counts, got {lengths}")
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return _failed(0, "no ink found")
    ink = mask.astype(np.uint8)
    if n_components is None:
        n_components = _count_components(ink)
    # Text rows: where 90 % of the ink lies, robust to a stray line end above or below.
    row_ink = ink.sum(axis=1).astype(np.float64)
    cum = np.cumsum(row_ink) / row_ink.sum()
    top = int(np.searchsorted(cum, 0.05))
    bottom = int(np.searchsorted(cum, 0.95)) + 1
    text_height = max(1, bottom - top)
    col = ink.sum(axis=0).astype(np.float64)  # ink per column, pixels

    (xa, xb), (x0, x1) = _ink_extent(col), _trim_tails(col, tail_ink * text_height, tail_run * text_height)
    if x1 <= x0:
        return _failed(n_components, "no ink found")
    n_min, n_max = min(lengths), max(lengths)
    span = x1 - x0
    if span < n_min * 2:
        return _failed(n_components, f"text span {span} px is too narrow for {n_min} glyphs")
    cuts = _candidate_cuts(col, x0, x1, n_max, cut_ink * text_height, cuts_per_glyph, grid_step, edge_cuts)
    # A trimmed tail stays on offer: paths may also start at the first ink or end at the last
    # (cuts run from x0 to x1, and xa <= x0, x1 <= xb).
    cuts = np.array([*([xa] if xa < x0 else []), *cuts.tolist(), *([xb] if xb > x1 else [])], dtype=np.int64)
    starts = tuple(sorted({0, int(np.searchsorted(cuts, x0))}))
    ends = tuple(sorted({len(cuts) - 1, int(np.searchsorted(cuts, x1))}))

    # Every segment between two cuts whose width is plausible for some allowed length.
    widths = cuts[None, :] - cuts[:, None]  # (K, K), widths[i, j] = cuts[j] - cuts[i]
    lo = min_width * span / n_max
    hi = max_width * span / n_min
    i_idx, j_idx = np.nonzero((widths >= max(1.0, lo)) & (widths <= hi))
    if complete_paths_only:
        # The others could never be chosen; cropping and classifying them was about a quarter
        # of the reading work on captcha_v2.
        live = on_some_path(i_idx, j_idx, len(cuts), starts, ends, lengths)
        i_idx, j_idx = i_idx[live], j_idx[live]
    segments = _pairs(i_idx, j_idx)
    seg_width = widths[i_idx, j_idx].astype(np.float64)
    # Equal-width prior around the mean glyph width of the most likely length, and a penalty for
    # cutting through ink (normalised by the text height: a full-height stroke costs 1).
    mean_width = span / lengths[0]
    width_cost = 0.5 * ((seg_width - mean_width) / (0.35 * mean_width)) ** 2
    cut_cost = (col[np.minimum(cuts, len(col) - 1)] / text_height)[j_idx]
    prior = -width_weight * width_cost - cut_cost
    # Ink rows of each segment: per column the first and last ink row, then per pair of cuts the
    # min / max over the columns between (a cumulative table over the K cuts, no loop over S).
    h = mask.shape[0]
    has = mask.any(axis=0)
    first = np.where(has, mask.argmax(axis=0), h)
    last = np.where(has, h - mask[::-1].argmax(axis=0), 0)
    # interval_first[m]: the first ink row over the columns between cuts m and m + 1 (one reduceat).
    interval_first = np.minimum.reduceat(first[: cuts[-1]], cuts[:-1])
    interval_last = np.maximum.reduceat(last[: cuts[-1]], cuts[:-1])
    # table[i, j] = reduction over intervals i..j-1: mask intervals before i, accumulate along j.
    intervals = np.arange(len(cuts) - 1)
    before = intervals[None, :] < intervals[:, None]  # before[i, m]: interval m lies before cut i
    top_table = np.minimum.accumulate(np.where(before, h, interval_first[None, :]), axis=1)
    bottom_table = np.maximum.accumulate(np.where(before, 0, interval_last[None, :]), axis=1)
    # Segment (i, j) covers intervals i .. j - 1: entry [i, j - 1] of the tables.
    seg_rows = _pairs(top_table[i_idx, j_idx - 1], bottom_table[i_idx, j_idx - 1])
    return Lattice(cuts, segments, prior, seg_rows, n_components, starts=starts, ends=ends)


def best_path(lattice: Lattice, scores: np.ndarray, n: int) -> Path | None:
    """The N consecutive lattice segments from a start cut to an end cut (``Lattice.starts``,
    ``Lattice.ends``) with the highest total ``prior + scores``, or None when no such path exists.

    Args:
        lattice: from :func:`propose`.
        scores: float (S,), the classifier's log-score of each segment (zeros for none); or
            float (S, n), a score per segment and position (forced alignment to a known label).
        n: how many glyphs.
    """
    k = len(lattice.cuts)
    if lattice.failure or k < 2:
        return None
    n_seg = len(lattice.segments)
    seg_from, seg_to = lattice.segments[:, 0], lattice.segments[:, 1]
    # Dense (K, K) table per step: step[i, j] = score of the segment from cut i to cut j.
    total = lattice.prior[:, None] + (scores if scores.ndim == 2 else scores[:, None])  # (S, n) or (S, 1)
    seg_at = np.full((k, k), -1, dtype=np.int64)
    seg_at[seg_from, seg_to] = np.arange(n_seg)
    best = np.full(k, -np.inf)  # best score of m segments from a start cut to each cut
    best[list(lattice.starts)] = 0.0
    back = np.zeros((n, k), dtype=np.int64)  # the start cut of the m-th segment ending at each cut
    step = np.full((k, k), -np.inf)
    for m in range(n):
        if m == 0 or total.shape[1] > 1:  # the same table for every step unless scored per position
            step[seg_from, seg_to] = total[:, min(m, total.shape[1] - 1)]
        cand = best[:, None] + step  # (from cut, to cut)
        back[m] = cand.argmax(axis=0)
        best = cand[back[m], np.arange(k)]
    end_cuts = np.arange(k)[list(lattice.ends)]
    end = int(end_cuts[np.argmax(best[end_cuts])])
    if not np.isfinite(best[end]):
        return None
    chosen = []
    c = end
    for m in range(n - 1, -1, -1):
        start = int(back[m, c])
        chosen.append(int(seg_at[start, c]))
        c = start
    ids = np.array(chosen[::-1], dtype=np.int64)
    return Path(segment_ids=ids, boxes=lattice.boxes(ids), score=float(best[end]))


def on_some_path(seg_from: np.ndarray, seg_to: np.ndarray, k: int, starts: tuple[int, ...], ends: tuple[int, ...],
                 lengths: tuple[int, ...]) -> np.ndarray:
    """bool (S,): whether segment ``(seg_from[s], seg_to[s])`` lies on some path of consecutive
    segments, from a start cut to an end cut, whose length is one of ``lengths``."""
    n_max = max(lengths)
    step = np.zeros((k, k), dtype=bool)
    step[seg_from, seg_to] = True
    # forward[m, c]: some m segments lead from a start to cut c; backward[m, c]: from c to an end.
    forward = np.zeros((n_max, k), dtype=bool)
    backward = np.zeros((n_max, k), dtype=bool)
    forward[0, list(starts)] = True
    backward[0, [e % k for e in ends]] = True
    for m in range(1, n_max):  # boolean matrix products: OR over the cuts of AND
        forward[m] = forward[m - 1] @ step
        backward[m] = step @ backward[m - 1]
    live = np.zeros(len(seg_from), dtype=bool)
    for n in lengths:
        for m in range(n):  # the segment as the (m + 1)-th of n
            live |= forward[m][seg_from] & backward[n - 1 - m][seg_to]
    return live


def _pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 (S, 2) of two int (S,) columns (np.stack and a cast, at a third of their cost)."""
    out = np.empty((len(a), 2), dtype=np.int64)
    out[:, 0], out[:, 1] = a, b
    return out


def _failed(n_components: int, why: str) -> Lattice:
    empty = np.zeros((0, 2), dtype=np.int64)
    return Lattice(empty[:, 0], empty, np.zeros(0), empty, n_components, why)


def _count_components(ink: np.ndarray) -> int:
    """:func:`substantial` components of a uint8 ink image."""
    count, _, stats = components(ink)
    return substantial(stats[1:count, cv2.CC_STAT_AREA])


def substantial(areas: np.ndarray) -> int:
    """How many of the components with these ink areas hold at least 10 % of the largest one's."""
    if not len(areas):
        return 0
    return int((areas >= 0.1 * areas.max()).sum())


def _ink_extent(col: np.ndarray) -> tuple[int, int]:
    """Columns [x0, x1) from the first to the last inked column."""
    inked = np.flatnonzero(col > 0)
    return (int(inked[0]), int(inked[-1]) + 1) if inked.size else (0, 0)


def _trim_tails(col: np.ndarray, min_ink: float, min_run: float) -> tuple[int, int]:
    """Columns [x0, x1) of the text, without line tails at either end.

    A tail is a run of at least ``min_run`` columns with at most ``min_ink`` ink each at an end of
    the text: a strike line running on past the glyphs. A shorter low-ink run is part of a glyph
    (the arms of an "E", the bar of a "T") and stays.
    """
    inked = np.flatnonzero(col > 0)
    if inked.size == 0:
        return 0, 0
    x0, x1 = int(inked[0]), int(inked[-1]) + 1
    strong = np.flatnonzero(col > min_ink)
    if strong.size == 0:
        return x0, x1
    if strong[0] - x0 >= min_run:
        x0 = int(strong[0])
    if x1 - (strong[-1] + 1) >= min_run:
        x1 = int(strong[-1]) + 1
    return x0, x1


#: The column profile's smoothing kernel (:func:`_candidate_cuts`), made once.
_SMOOTH = np.ones(3) / 3.0


def _candidate_cuts(
    col: np.ndarray, x0: int, x1: int, n_max: int, max_ink: float, cuts_per_glyph: float, grid_step: float,
    edge_cuts: float = 0.0,
) -> np.ndarray:
    """Sorted candidate cut columns in [x0, x1], both ends included.

    Gaps (runs of empty columns) give one cut at their centre; inside ink, local minima of the
    column profile at or under ``max_ink``, lowest first; where a stretch wider than a glyph has
    none, equal-width grid points.
    """
    inner = col[x0:x1]
    smooth = np.convolve(inner, _SMOOTH, mode="same")
    cuts: set[int] = {x0, x1}
    # Gap centres.
    empty = inner == 0
    if empty.any():
        edges = np.diff(np.concatenate([[0], empty.astype(np.int8), [0]]))
        cuts.update((x0 + (np.flatnonzero(edges == 1) + np.flatnonzero(edges == -1)) // 2).tolist())
    # Local minima of the smoothed profile (plateaus count once), low enough to be cut through.
    left = np.concatenate([[np.inf], smooth[:-1]])
    right = np.concatenate([smooth[1:], [np.inf]])
    minima = np.flatnonzero((smooth <= left) & (smooth < right) & (smooth <= max_ink) & ~empty)
    budget = int(np.ceil(cuts_per_glyph * n_max))
    minima = minima[np.argsort(smooth[minima], kind="stable")][:budget]
    cuts.update((x0 + minima).tolist())
    # Grid points every ``grid_step`` glyph widths inside stretches with no cut wider than
    # ~1.2 glyphs (fused glyphs): the cut between two touching glyphs is near one of them.
    glyph = (x1 - x0) / n_max
    step = max(1.0, grid_step * glyph)
    ordered = sorted(cuts)
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        if b - a > 1.2 * glyph:
            for x in np.arange(a + step, b - 0.5 * step, step):
                cuts.add(int(round(x)))
    if edge_cuts > 0:
        cuts.update(_edge_cuts(inner, minima, edge_cuts, sorted(cuts), x0))
    out = np.array(sorted(cuts), dtype=np.int64)
    return out[(out >= x0) & (out <= x1)]


def _edge_cuts(inner: np.ndarray, minima: np.ndarray, share: float, have: list[int], x0: int,
               spacing: int = 2) -> list[int]:
    """Per valley floor ``m`` of the column profile ``inner``: climb left while the ink does not
    drop (by more than a pixel) to the left peak, and cut at the first column, from the floor,
    whose left neighbour has at least ``share`` of the way from the floor to that peak; kept
    where ``spacing`` columns or more from every cut in ``have`` (absolute columns; ``inner``
    starts at ``x0``)."""
    extra = []
    for m in minima.tolist():
        peak = m
        while peak > 0 and inner[peak - 1] >= inner[peak] - 1:
            peak -= 1
        if inner[peak] <= inner[m]:
            continue
        level = inner[m] + share * (inner[peak] - inner[m])
        j = m
        while j > peak and inner[j - 1] < level:
            j -= 1
        x = x0 + j
        if min(abs(x - c) for c in have) >= spacing:
            extra.append(x)
    return extra
