"""Paths over a batch of lattices (against the one-image DP), and the segment route's lazy
classification (against classifying every segment), on random lattices with exact answers."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.binarize import binarize
from pipeline.paths import LatticeBatch
from pipeline.recognize import OPTIMISTIC_ROUNDS, Prepared, Trace, classify_rest, reachable, read_segments
from pipeline.segment import Lattice, best_path, propose

CHARSET = "abcd"


def random_lattice(rng: np.random.Generator, lengths: tuple[int, ...], width: int = 160) -> Lattice:
    gray = np.full((30, width), 255, np.uint8)
    for x in rng.integers(5, width - 20, int(rng.integers(3, 8))):  # random overlapping 'glyphs'
        gray[rng.integers(3, 10) : rng.integers(20, 28), x : x + rng.integers(6, 18)] = 0
    return propose(binarize(gray, smooth=1), lengths=lengths)


def blank_lattice() -> Lattice:
    lat = propose(np.zeros((30, 60), bool), lengths=(3,))
    assert lat.failure
    return lat


class TableGlyphs:
    """A glyph reader that reads each crop's row of a fixed probability table: crops carry their
    row index in their first two pixels (see :func:`coded`). Counts the crops it was asked about."""

    def __init__(self, table: np.ndarray, charset: str = CHARSET) -> None:
        assert table.shape[1] == len(charset) + 1
        self.charset = charset
        self.table = table.astype(np.float32)
        self.asked = 0
        self.calls = 0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.asked += len(crops)
        codes = np.rint(crops[:, 0, 0] * 255).astype(int) + 256 * np.rint(crops[:, 0, 1] * 255).astype(int)
        return self.table[codes]


def coded(lattices: list[Lattice]) -> list[Prepared]:
    """Prepared images whose crops are numbered across the batch (row of ``TableGlyphs.table``)."""
    out, start = [], 0
    for lat in lattices:
        idx = np.arange(start, start + len(lat.segments))
        start += len(idx)
        crops = np.zeros((len(idx), 4, 4), np.uint8)
        crops[:, 0, 0], crops[:, 0, 1] = idx % 256, idx // 256
        blank = np.zeros((30, 10), np.uint8)
        out.append(Prepared(blank, blank.astype(bool), blank.astype(bool), lat, all_crops=crops))
    return out


def table(rng: np.random.Generator, n: int, peaked: bool) -> np.ndarray:
    """Random class probabilities (len(CHARSET) characters + reject); peaked ones look like a
    trained CNN's: most rows near one-hot, often on the reject class."""
    alpha = 0.15 if peaked else 1.0
    return rng.dirichlet(np.full(len(CHARSET) + 1, alpha), n)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("lengths", [(4,), (3, 4, 5)])
def test_batch_best_equals_the_one_image_dp(seed: int, lengths: tuple[int, ...]):
    rng = np.random.default_rng(seed)
    lattices = [random_lattice(rng, lengths) for _ in range(4)]
    lattices.insert(2, blank_lattice())
    batch = LatticeBatch(lattices)
    scores = rng.normal(size=batch.offsets[-1])
    scores[rng.random(len(scores)) < 0.1] = -np.inf  # segments that may not be used
    for n in lengths:
        score, ids = batch.best(scores, n)
        for b, lat in enumerate(lattices):
            lo, hi = batch.offsets[b], batch.offsets[b + 1]
            path = best_path(lat, scores[lo:hi], n)
            if path is None:
                assert score[b] == -np.inf
            else:
                assert score[b] == path.score  # bit for bit: the same additions in the same order
                np.testing.assert_array_equal(ids[b] - lo, path.segment_ids)


@pytest.mark.parametrize("seed", range(4))
def test_through_is_the_best_path_using_each_segment(seed: int):
    rng = np.random.default_rng(50 + seed)
    lat = random_lattice(rng, (4,))
    batch = LatticeBatch([lat])
    scores = rng.normal(size=len(lat.segments))
    through = batch.through(scores, 4)
    big = 1e6  # forces segment s onto the best path whenever some path uses it
    for s in range(len(lat.segments)):
        forced = scores.copy()
        forced[s] += big
        path = best_path(lat, forced, 4)
        if path is None or s not in path.segment_ids:
            assert through[s] == -np.inf
        else:
            assert through[s] == pytest.approx(path.score - big, abs=1e-6)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("lengths", [(5,), (3, 4, 5)])
@pytest.mark.parametrize("peaked", [True, False])
def test_lazy_reading_equals_classifying_every_segment(seed: int, lengths: tuple[int, ...], peaked: bool):
    rng = np.random.default_rng(seed)
    lattices = [random_lattice(rng, lengths, width=200) for _ in range(5)] + [blank_lattice()]
    prepared = coded(lattices)
    probs = table(rng, sum(len(lat.segments) for lat in lattices), peaked)
    lazy_reader, full_reader = TableGlyphs(probs), TableGlyphs(probs)
    lazy = read_segments(prepared, lazy_reader, lengths)
    full = read_segments(prepared, full_reader, lengths, every=True)
    assert full_reader.calls == 1 and full_reader.asked == len(probs)
    assert lazy_reader.calls <= 2 + OPTIMISTIC_ROUNDS  # a few calls per batch, whatever its size
    for (r1, p1, c1, l1), (r2, p2, c2, l2) in zip(lazy, full, strict=True):
        assert (r1.text, r1.failure) == (r2.text, r2.failure)
        np.testing.assert_array_equal(r1.char_conf, r2.char_conf)
        assert (p1 is None) == (p2 is None)
        if p1 is not None and p2 is not None:
            np.testing.assert_array_equal(p1.segment_ids, p2.segment_ids)
            np.testing.assert_array_equal(p1.boxes, p2.boxes)
            assert p1.score == p2.score
            np.testing.assert_array_equal(c1, c2)
        seen = ~np.isnan(l1[:, 0])
        np.testing.assert_array_equal(l1[seen], l2[seen])
        assert not np.isnan(l2).any()


def test_lazy_reading_classifies_fewer_segments_when_the_cnn_is_sure():
    rng = np.random.default_rng(7)
    lattices = [random_lattice(rng, (5,), width=200) for _ in range(20)]
    probs = table(rng, sum(len(lat.segments) for lat in lattices), peaked=True)
    reader = TableGlyphs(probs)
    read_segments(coded(lattices), reader, (5,))
    assert reader.asked < len(probs)


def test_classify_rest_fills_the_left_out_segments_for_reachable():
    rng = np.random.default_rng(3)
    lattices = [random_lattice(rng, (4,), width=200) for _ in range(6)]
    prepared = coded(lattices)
    probs = table(rng, sum(len(lat.segments) for lat in lattices), peaked=True)
    reader = TableGlyphs(probs)
    traces = []
    for prep, (reading, path, chosen, lattice_probs) in zip(prepared, read_segments(prepared, reader, (4,)),
                                                            strict=True):
        traces.append(Trace(prepared=prep, segment=reading, path=path, glyph_probs=chosen,
                            lattice_probs=lattice_probs))
    left_out = [tr for tr in traces if tr.lattice_probs is not None and np.isnan(tr.lattice_probs).any()]
    assert left_out  # else this test tests nothing
    with pytest.raises(ValueError, match="every lattice segment"):
        reachable(left_out[0].prepared.lattice, left_out[0].lattice_probs, "abcd", CHARSET)
    classify_rest(traces, reader)
    for b, tr in enumerate(traces):
        assert tr.lattice_probs is not None
        lo = sum(len(lat.segments) for lat in lattices[:b])
        np.testing.assert_array_equal(tr.lattice_probs, probs[lo : lo + len(tr.lattice_probs)].astype(np.float32))
