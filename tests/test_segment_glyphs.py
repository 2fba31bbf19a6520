"""segment (lattice and best path) and glyph crops on hand-made masks."""

from __future__ import annotations

import inspect
from dataclasses import asdict

import numpy as np
import pytest

from pipeline.binarize import binarize
from pipeline.clean import clean
from pipeline.config import BinarizeParams, CleanParams, GlyphParams, SegmentParams, StageParams
from pipeline.glyphs import crop_glyphs, lattice_crops, lattice_plan, shade
from pipeline.segment import _candidate_cuts, _edge_cuts, best_path, on_some_path, propose


def bars(xs: list[tuple[int, int]], height: int = 30, width: int = 100) -> np.ndarray:
    """A mask with one full-height 'glyph' bar per (x0, x1)."""
    mask = np.zeros((height, width), bool)
    for x0, x1 in xs:
        mask[5:25, x0:x1] = True
    return mask


def test_separate_glyphs_are_cut_in_the_gaps():
    mask = bars([(10, 20), (30, 40), (50, 60)])
    lat = propose(mask, lengths=(3,))
    assert lat.failure is None and lat.n_components == 3
    path = best_path(lat, np.zeros(len(lat.segments)), 3)
    assert path is not None
    # Each box holds exactly one bar: its ink columns are inside and no other bar's are.
    for (x0, _, x1, _), (a, b) in zip(path.boxes, [(10, 20), (30, 40), (50, 60)], strict=True):
        assert x0 <= a and b <= x1
        assert x1 - x0 < 25
    assert list(path.boxes[:, 1]) == [5, 5, 5] and list(path.boxes[:, 3]) == [25, 25, 25]


def test_touching_glyphs_are_split_at_the_waist():
    mask = bars([(10, 50)])
    mask[5:25, 29:31] = False
    mask[14:16, 29:31] = True  # a thin bridge: the two glyphs touch at one point
    lat = propose(mask, lengths=(2,))
    assert lat.n_components == 1
    path = best_path(lat, np.zeros(len(lat.segments)), 2)
    assert path is not None
    cut = path.boxes[0, 2]
    assert 28 <= cut <= 32 and path.boxes[1, 0] == cut


def test_classifier_scores_choose_the_path():
    mask = bars([(10, 50)])  # one blob, no natural cut
    lat = propose(mask, lengths=(2,))
    scores = np.zeros(len(lat.segments))
    # Reward the segment pair that cuts at the cut nearest to column 22 (not the centre).
    target = int(np.argmin(np.abs(lat.cuts - 22)))
    favoured = (lat.segments[:, 0] == target) | (lat.segments[:, 1] == target)
    scores[favoured] = 5.0
    path = best_path(lat, scores, 2)
    assert path is not None and path.boxes[0, 2] == lat.cuts[target]


def test_per_position_scores_force_an_alignment():
    lat = propose(bars([(10, 20), (30, 40), (50, 60)]), lengths=(3,))
    scores = np.zeros((len(lat.segments), 3))
    path = best_path(lat, scores, 3)
    assert path is not None and len(path.segment_ids) == 3


@pytest.mark.parametrize(
    ("mask", "lengths", "failure"),
    [
        (np.zeros((20, 50), bool), (4,), "no ink found"),  # blank image
        (bars([(10, 13)]), (5,), "too narrow"),  # 3 px of text cannot hold 5 glyphs
    ],
)
def test_named_failures(mask: np.ndarray, lengths: tuple[int, ...], failure: str):
    lat = propose(mask, lengths=lengths)
    assert lat.failure is not None and failure in lat.failure
    assert best_path(lat, np.zeros(0), lengths[0]) is None


def test_no_path_when_count_impossible():
    lat = propose(bars([(10, 20), (30, 40)]), lengths=(2,), max_width=1.2)
    assert best_path(lat, np.zeros(len(lat.segments)), 9) is None


def test_crop_keeps_aspect_and_centres():
    mask = np.zeros((20, 40), bool)
    mask[2:18, 10:14] = True  # tall thin glyph: 16 x 4
    crop = crop_glyphs(mask, np.array([[5, 20]]), size=20, margin=2)
    assert crop.shape == (1, 20, 20) and crop.dtype == np.uint8
    cols = np.flatnonzero(crop[0].max(axis=0) > 127)
    rows = np.flatnonzero(crop[0].max(axis=1) > 127)
    assert rows[0] == 2 and rows[-1] == 17  # height fills the inner 16 px
    assert 3 <= len(cols) <= 5 and abs((cols[0] + cols[-1]) / 2 - 9.5) <= 1  # width kept, centred


def test_a_source_image_is_cut_in_the_masks_boxes():
    mask = np.zeros((20, 40), bool)
    mask[2:18, 10:14] = True
    source = np.full((20, 40), 7, np.uint8)
    source[:, 12:] = 200  # only the box's columns 10-13 are taken: 7, 7, 200, 200
    crop = crop_glyphs(mask, np.array([[5, 20]]), size=20, margin=2, source=source)
    inner = crop[0][2:18]
    assert inner.max() >= 190 and 0 < inner[inner > 0].min() <= 20  # both levels, same box as the mask's
    assert (crop[0] > 0).sum() == (crop_glyphs(mask, np.array([[5, 20]]), size=20, margin=2)[0] > 0).sum()


def test_planes_are_cut_in_one_pass_exactly_as_each_alone():
    """A (H, W, C) source gives, plane by plane, the very crops a (H, W) source of that plane
    gives: the models were trained on crops cut one plane at a time."""
    rng = np.random.default_rng(3)
    mask = rng.random((24, 60)) < 0.4
    planes = rng.integers(0, 256, (24, 60, 2), dtype=np.uint8)
    spans = np.array([[0, 13], [9, 31], [30, 60], [41, 44]])
    both = crop_glyphs(mask, spans, size=20, margin=2, source=planes)
    assert both.shape == (4, 20, 20, 2) and both.dtype == np.uint8
    for c in range(2):
        np.testing.assert_array_equal(both[..., c], crop_glyphs(mask, spans, size=20, margin=2,
                                                                source=np.ascontiguousarray(planes[..., c])))


@pytest.mark.parametrize(("ink", "background"), [(30, 220), (220, 30), (120, 160)])
def test_shade_makes_ink_bright_and_background_dark_whatever_the_colours(ink: int, background: int):
    gray = np.full((10, 20), background, np.uint8)
    gray[3:7, 5:15] = ink
    gray[3, 5] = (ink + background) // 2  # an edge pixel in between
    binary = gray == ink
    out = shade(gray, binary)
    assert out.dtype == np.uint8 and out.shape == gray.shape
    assert out[4, 8] == 255 and out[0, 0] == 0
    assert 100 <= out[3, 5] <= 155


def test_shade_without_contrast_is_blank():
    gray = np.full((6, 6), 90, np.uint8)
    assert not shade(gray, np.zeros((6, 6), bool)).any()
    assert not shade(gray, np.ones((6, 6), bool)).any()
    binary = np.zeros((6, 6), bool)
    binary[2, 2] = True
    assert not shade(gray, binary).any()  # "ink" as grey as its background


def test_empty_crop_is_zero():
    crop = crop_glyphs(np.zeros((10, 10), bool), np.array([[0, 5]]), size=8)
    assert crop.shape == (1, 8, 8) and not crop.any()


@pytest.mark.parametrize(
    ("function", "params"),
    [(binarize, BinarizeParams()), (clean, CleanParams()), (propose, SegmentParams())],
)
def test_config_defaults_match_stage_defaults(function, params):
    """The dataclass in config.py and the stage's keyword defaults must not drift apart."""
    signature = inspect.signature(function).parameters
    for name, value in asdict(params).items():
        assert signature[name].default == value, name


def test_stage_params_roundtrip():
    params = StageParams()
    assert StageParams.from_dict(params.to_dict()) == params
    assert StageParams.from_dict({"segment": {"tail_ink": 0.5, "unknown": 1}}).segment.tail_ink == 0.5


def brute_force_best(lattice, scores: np.ndarray, n: int) -> float:
    """Best path score by enumerating every chain of n segments from a start cut to an end cut."""
    by_start: dict[int, list[int]] = {}
    for s, (i, _) in enumerate(lattice.segments):
        by_start.setdefault(int(i), []).append(s)
    ends = {int(e) % len(lattice.cuts) for e in lattice.ends}

    def walk(cut: int, left: int) -> float:
        if left == 0:
            return 0.0 if cut in ends else -np.inf
        return max((lattice.prior[s] + scores[s] + walk(int(lattice.segments[s, 1]), left - 1)
                    for s in by_start.get(cut, [])), default=-np.inf)

    return max(walk(int(start), n) for start in lattice.starts)


@pytest.mark.parametrize("seed", range(8))
def test_best_path_agrees_with_brute_force(seed: int):
    rng = np.random.default_rng(seed)
    gray = np.full((30, 120), 255, np.uint8)
    for x in rng.integers(5, 100, 6):  # random overlapping 'glyphs'
        gray[rng.integers(3, 10) : rng.integers(20, 28), x : x + rng.integers(6, 18)] = 0
    mask = binarize(gray, smooth=1)
    if seed % 2:  # thin line tails at both ends: paths may start / end with or without them
        inked = np.flatnonzero(mask.any(axis=0))
        mask[15, max(0, inked[0] - 12) : inked[0]] = True
        mask[15, inked[-1] : inked[-1] + 12] = True
    n = int(rng.integers(2, 5))
    lat = propose(mask, lengths=(n,))
    if seed % 2:
        assert len(lat.starts) + len(lat.ends) >= 3  # at least one tail fitted in the image
    scores = rng.normal(size=len(lat.segments))
    path = best_path(lat, scores, n)
    expected = brute_force_best(lat, scores, n)
    if path is None:
        assert expected == -np.inf
    else:
        assert path.score == pytest.approx(expected)
        assert path.score == pytest.approx(float((lat.prior + scores)[path.segment_ids].sum()))
        assert np.all(path.boxes[1:, 0] == path.boxes[:-1, 2])  # consecutive


@pytest.mark.parametrize(
    ("tail_width", "trimmed"),
    [
        (20, True),  # a strike line running 20 px past the last glyph: trimmed
        (3, False),  # 3 px of thin arms (an "E"): part of the glyph, kept
    ],
)
def test_line_tails_trimmed_glyph_arms_kept(tail_width: int, trimmed: bool):
    mask = bars([(10, 20), (30, 40)], width=80)
    mask[12, 40 : 40 + tail_width] = True  # 1 px high run of columns after the last glyph
    lat = propose(mask, lengths=(2,))
    assert lat.span[1] == (40 if trimmed else 40 + tail_width)


def test_opening_segments_start_at_a_start_cut():
    # A line tail before the first glyph: paths may start at the first ink (10) or after the tail (30).
    mask = bars([(30, 40), (50, 60)], width=80)
    mask[12, 10:30] = True
    lat = propose(mask, lengths=(2,))
    assert [int(lat.cuts[s]) for s in lat.starts] == [10, 30]
    starts_at = lat.cuts[lat.segments[:, 0]]
    np.testing.assert_array_equal(lat.opening, np.isin(starts_at, [10, 30]))
    assert lat.opening.any() and not lat.opening.all()
    assert not propose(np.zeros((10, 10), bool), lengths=(2,)).opening.size


@pytest.mark.parametrize("keep_tail", [True, False])
def test_the_classifier_decides_whether_a_trimmed_tail_belongs_to_the_last_glyph(keep_tail: bool):
    mask = bars([(10, 20), (30, 40)], width=80)
    mask[12, 40:60] = True  # a thin run after the last glyph: a line tail, or the arm of an "F"
    lat = propose(mask, lengths=(2,))
    assert lat.span == (10, 40) and lat.cuts[lat.ends[-1]] == 60
    ends_at = lat.cuts[lat.segments[:, 1]]
    # The classifier likes the last glyph with its arm (an "F") or without it (a line tail).
    scores = np.where(ends_at == (60 if keep_tail else 40), 5.0, 0.0)
    path = best_path(lat, scores, 2)
    assert path is not None and path.boxes[-1, 2] == (60 if keep_tail else 40)
    assert path.boxes[0, 0] == 10


@pytest.mark.parametrize("seed", range(12))
def test_on_some_path_keeps_exactly_the_segments_of_complete_paths(seed: int):
    """Pruning is exact: a segment is kept iff some chain of an allowed length from a start cut to
    an end cut uses it (checked by enumerating every chain)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(3, 9))
    pairs = [(i, j) for i in range(k) for j in range(i + 1, k) if rng.random() < 0.45]
    if not pairs:
        pairs = [(0, k - 1)]
    seg_from, seg_to = (np.array(v, dtype=np.int64) for v in zip(*pairs, strict=True))
    starts = tuple(sorted({0, int(rng.integers(0, k))}))
    ends = tuple(sorted({-1, int(rng.integers(0, k))}))
    lengths = tuple(sorted({int(rng.integers(1, 4)), int(rng.integers(1, 5))}))
    end_cuts = {e % k for e in ends}
    used: set[int] = set()

    def walk(cut: int, chain: list[int]) -> None:
        if len(chain) in lengths and cut in end_cuts:
            used.update(chain)
        if len(chain) < max(lengths):
            for s in np.flatnonzero(seg_from == cut):
                walk(int(seg_to[s]), [*chain, int(s)])

    for start in starts:
        walk(start, [])
    live = on_some_path(seg_from, seg_to, k, starts, ends, lengths)
    assert set(np.flatnonzero(live).tolist()) == used


def test_propose_offers_only_segments_on_complete_paths():
    mask = bars([(5, 15), (20, 30), (35, 45), (50, 60)], width=70)
    lat = propose(mask, lengths=(4,))
    live = on_some_path(lat.segments[:, 0], lat.segments[:, 1], len(lat.cuts), lat.starts, lat.ends, (4,))
    assert live.all() and len(lat.segments)
    # The trainer's view keeps the dead ends too (reject examples): a superset.
    every = propose(mask, lengths=(4,), complete_paths_only=False)
    kept = {tuple(lat.cuts[s]) for s in lat.segments}
    offered = {tuple(every.cuts[s]) for s in every.segments}
    assert kept < offered


@pytest.mark.parametrize("seed", range(6))
def test_pruning_keeps_the_best_path_of_every_length(seed: int):
    """Reading the pruned lattice gives the same best path, for each allowed length, as the full one."""
    rng = np.random.default_rng(100 + seed)
    gray = np.full((30, 160), 255, np.uint8)
    for x in rng.integers(5, 140, 7):
        gray[rng.integers(3, 10) : rng.integers(20, 28), x : x + rng.integers(6, 18)] = 0
    mask = binarize(gray, smooth=1)
    lengths = (3, 4, 5)
    pruned = propose(mask, lengths=lengths)
    full = propose(mask, lengths=lengths, complete_paths_only=False)
    assert np.array_equal(pruned.cuts, full.cuts) and len(pruned.segments) <= len(full.segments)

    def score(lat):  # the same random score for the same pair of cut columns in either lattice
        cols = lat.cuts[lat.segments]
        return np.sin(cols[:, 0] * 12.9898 + cols[:, 1] * 78.233 + seed) * 3.0

    for n in lengths:
        a, b = best_path(pruned, score(pruned), n), best_path(full, score(full), n)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.score == pytest.approx(b.score)
            assert np.array_equal(a.boxes, b.boxes)


def test_lattice_crops_from_planes_and_plan_alone_match_the_mask_s():
    """What a worker sends without the mask (its crop planes and plan) cuts the same crops, and
    without the plan too the mask is needed: refused, not guessed."""
    mask = np.zeros((20, 60), bool)
    mask[3:17, 5:15] = mask[3:17, 25:33] = mask[6:14, 40:55] = True
    lattice = propose(mask, lengths=(3,))
    params = GlyphParams(shade=True, first_mark=True)
    grey = np.where(mask, 200, 10).astype(np.uint8)
    source = np.stack([mask.astype(np.uint8) * 255, grey])
    ids = np.arange(len(lattice.segments))
    plan = lattice_plan(mask, lattice, params)
    with_mask = lattice_crops(mask, lattice, ids, params=params, source=source)
    without = lattice_crops(None, lattice, ids, params=params, source=source, plan=plan)
    np.testing.assert_array_equal(with_mask, without)
    assert with_mask.shape == (len(ids), 20, 20, 3) and (with_mask[lattice.opening, :, :, 2] == 255).all()
    with pytest.raises(ValueError, match="need the cleaned mask"):
        lattice_crops(None, lattice, ids, params=params, source=source)


def test_edge_cuts_sit_at_the_left_strokes_edge_beside_a_valley():
    # A stroke (columns 1-3), a neighbour's arm thinning from 12 to 9 pixels (4-6), the valley's
    # floor (7-8), the next glyph (9-11); the profile starts at column 10 of the image.
    inner = np.array([0, 20, 21, 21, 12, 11, 9, 6, 6, 10, 15, 20, 0], dtype=np.float64)
    # Climbing left from the floor (7) over the 1-pixel dip to the peak (column 1, 20 pixels):
    # 70 % of the way is 15.8 pixels, first reached left of column 4.
    assert _edge_cuts(inner, np.array([7]), 0.7, [10, 17, 22], 10) == [14]
    assert _edge_cuts(inner, np.array([7]), 0.7, [10, 15, 17, 22], 10) == []  # 1 column from a cut
    assert _edge_cuts(inner, np.array([0]), 0.7, [10, 22], 10) == []  # nothing rises on the left
    cuts_off = _candidate_cuts(inner, 0, 13, 2, 30.0, 6.0, 0.25)
    cuts_on = _candidate_cuts(inner, 0, 13, 2, 30.0, 6.0, 0.25, edge_cuts=0.7)
    assert set(cuts_off) < set(cuts_on) and 4 in set(cuts_on) - set(cuts_off)
