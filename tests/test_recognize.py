"""The orchestrator: routing decisions (one row per reason) and batching, with stub readers."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from pipeline.config import GlyphParams, StageParams
from pipeline.recognize import Reading, prepare, recognize, route

CHARSET = "ab"


@pytest.mark.parametrize(
    ("segment", "mode", "have_ctc", "expected_route", "reason_part"),
    [
        (Reading("ab", np.array([0.99, 0.98])), "auto", True, "segment", "each confidence >= 0.90"),  # sure
        (Reading("ab", np.array([0.99, 0.41])), "auto", True, "ctc", "glyph 2 'b' confidence 0.41 < 0.90"),
        # A path with a rejected segment: routed by its glyphs' confidences like any other reading.
        (Reading("ab", np.array([0.95, 0.3]), "found 1 glyphs, expected 2"), "auto", True, "ctc",
         "found 1 glyphs, expected 2; glyph 2 'b' confidence 0.30 < 0.90"),
        (Reading("ab", np.array([0.95, 0.92]), "found 1 glyphs, expected 2"), "auto", True, "segment",
         "found 1 glyphs, expected 2, but each glyph's confidence >= 0.90"),
        (Reading("", np.zeros(0), "no segmentation into 2 glyphs"), "auto", True, "ctc", "no segmentation"),
        (Reading("", np.zeros(0), "no ink found"), "auto", True, "ctc", "no ink found"),  # blank image
        (None, "auto", True, "ctc", "no glyph reader"),  # bundle without a glyph CNN
        (Reading("ab", np.array([0.2, 0.2])), "auto", False, "segment", "no ctc reader"),  # nothing to fall to
        (Reading("ab", np.array([0.2, 0.2])), "segment", True, "segment", "forced by --mode segment"),
        (Reading("ab", np.array([0.99, 0.99])), "ctc", True, "ctc", "forced by --mode ctc"),
        (Reading("ab", np.array([0.95, 0.91])), "both", True, "segment", "each confidence"),  # both routes as auto
    ],
)
def test_route(segment, mode, have_ctc, expected_route, reason_part):
    chosen, reason = route(segment, mode, 0.9, have_ctc)
    assert chosen == expected_route and reason_part in reason


class StubGlyphs:
    """Reads every crop as 'a' with p=0.95, or as 'b' with p=0.4 where the crop is narrow."""

    charset = CHARSET

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls += 1
        probs = np.tile([0.95, 0.03, 0.02], (len(crops), 1))
        return probs.astype(np.float32)


class StubLine:
    def __init__(self) -> None:
        self.calls = 0
        self.images = 0
        self.input_calls = 0

    def read(self, grays: Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]:
        self.calls += 1
        self.images += len(grays)
        return [("bb", np.array([0.8, 0.9])) for _ in grays]

    def read_inputs(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        assert x.dtype == np.float32 and x.shape[1:] == (8, 24)
        self.input_calls += 1
        return [("cc", np.array([0.7, 0.9])) for _ in x]


def two_glyphs(blank: bool = False) -> np.ndarray:
    gray = np.full((20, 40), 255, np.uint8)
    if not blank:
        gray[4:16, 5:14] = 0
        gray[4:16, 24:33] = 0
    return gray


@pytest.mark.parametrize("mode", ["auto", "segment", "ctc", "both"])
def test_recognize_batches_each_reader_once(mode: str):
    batch = [prepare(two_glyphs(blank=(i == 2)), params=StageParams(), lengths=(2,), height=20) for i in range(4)]
    glyphs, line = StubGlyphs(), StubLine()
    traces = recognize(batch, mode=mode, lengths=(2,), classifier=glyphs, line_reader=line, threshold=0.9)
    assert glyphs.calls == (0 if mode == "ctc" else 1)  # one CNN call for every crop of the batch
    # One CRNN call per batch: for the blank image in auto, for all in ctc / both, none in segment.
    assert line.calls == (0 if mode == "segment" else 1)
    blank = traces[2]
    if mode in ("auto", "both"):
        assert [t.route for t in traces] == ["segment", "segment", "ctc", "segment"]
        assert blank.text == "bb" and "no ink found" in blank.reason
        assert traces[0].text == "aa" and traces[0].confidence == pytest.approx(0.95 ** 2)
        assert line.images == (4 if mode == "both" else 1)
    if mode == "both":
        assert all(t.segment is not None and t.ctc is not None for t in traces)
    if mode == "segment":
        assert {t.route for t in traces} == {"segment"} and not blank.text and blank.reason == "no ink found"
    if mode == "ctc":
        assert all(t.text == "bb" and t.segment is None for t in traces)


def test_segment_mode_never_calls_the_crnn():
    batch = [prepare(two_glyphs(), params=StageParams(), lengths=(2,), height=20)]
    line = StubLine()
    traces = recognize(batch, mode="segment", lengths=(2,), classifier=StubGlyphs(), line_reader=line, threshold=0.9)
    assert line.calls == 0 and traces[0].route == "segment" and traces[0].text == "aa"


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        recognize([], mode="fast", lengths=(2,), classifier=None, line_reader=None, threshold=0.5)


def test_shade_adds_a_second_channel_and_keeps_the_first():
    params = StageParams()
    shaded = StageParams.from_dict({**params.to_dict(), "glyph": {**params.to_dict()["glyph"], "shade": True}})
    plain, both = (prepare(two_glyphs(), params=p, lengths=(2,), height=20) for p in (params, shaded))
    assert plain.crops.ndim == 3 and both.crops.shape == (*plain.crops.shape, 2)
    np.testing.assert_array_equal(both.crops[..., 0], plain.crops)
    assert both.crops[..., 1].any()
    traces = recognize([both], mode="segment", lengths=(2,), classifier=StubGlyphs(), line_reader=None, threshold=0.5)
    assert traces[0].text == "aa"


def test_first_mark_adds_a_channel_set_exactly_on_the_opening_segments():
    params = StageParams()
    glyph = params.to_dict()["glyph"]
    both = StageParams.from_dict({**params.to_dict(), "glyph": {**glyph, "shade": True}})
    marked = StageParams.from_dict({**params.to_dict(), "glyph": {**glyph, "shade": True, "first_mark": True}})
    plain, three = (prepare(two_glyphs(), params=p, lengths=(2,), height=20) for p in (both, marked))
    assert three.crops.shape == (*plain.crops.shape[:3], 3)
    np.testing.assert_array_equal(three.crops[..., :2], plain.crops)  # mask and grey levels unchanged
    opening = three.lattice.opening
    assert opening.any() and not opening.all()
    assert (three.crops[opening, ..., 2] == 255).all() and not three.crops[~opening, ..., 2].any()
    traces = recognize([three], mode="segment", lengths=(2,), classifier=StubGlyphs(), line_reader=None, threshold=0.5)
    assert traces[0].text == "aa"


@pytest.mark.parametrize(("shade", "first_mark"), [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("blank", [False, True])  # a blank image has no segments: (0, size, size, ...)
def test_crops_have_the_channels_the_params_name(shade: bool, first_mark: bool, blank: bool):
    params = StageParams(glyph=GlyphParams(shade=shade, first_mark=first_mark))
    crops = prepare(two_glyphs(blank=blank), params=params, lengths=(2,), height=20).crops
    size = params.glyph.size
    expected = (size, size) if params.glyph.channels == 1 else (size, size, params.glyph.channels)
    assert crops.shape[1:] == expected and crops.dtype == np.uint8
    assert (len(crops) == 0) == blank


@pytest.mark.parametrize(("shade", "first_mark"), [(False, False), (True, False), (False, True), (True, True)])
def test_crops_cut_a_few_at_a_time_are_the_crops_cut_all_at_once(shade: bool, first_mark: bool):
    """The segment route cuts crops of a few segments per call (Prepared.crops_of); they must be
    exactly the crops of cutting every segment, in any order and any grouping."""
    params = StageParams(glyph=GlyphParams(shade=shade, first_mark=first_mark))
    gray = two_glyphs()
    gray[10, 14:24] = 0  # a thin bridge: more candidate segments
    prepared = prepare(gray, params=params, lengths=(2, 3), height=20)
    n = len(prepared.lattice.segments)
    assert n >= 3 and prepared.all_crops is None  # nothing cut in prepare
    alone = [prepare(gray, params=params, lengths=(2, 3), height=20).crops_of(np.array([i])) for i in range(n)]
    every = prepared.crops
    for ids in (np.arange(n)[::-1], np.array([n - 1, 0]), np.zeros(0, np.int64)):
        np.testing.assert_array_equal(prepare(gray, params=params, lengths=(2, 3), height=20).crops_of(ids), every[ids])
    np.testing.assert_array_equal(np.concatenate(alone), every)
    assert "glyphs" in prepared.ms
    # The plan made in prepare (the workers) only moves work: without it the crops are the same.
    assert prepared.plan is not None and len(prepared.plan) == n
    unplanned = prepare(gray, params=params, lengths=(2, 3), height=20)
    unplanned.plan = None
    np.testing.assert_array_equal(unplanned.crops_of(np.arange(n)[::-1]), every[::-1])


def test_crnn_inputs_made_with_the_stages_are_used():
    """With ``line_size`` the CRNN input is made in ``prepare`` (the workers) and read as is."""
    batch = [prepare(two_glyphs(blank=(i == 1)), params=StageParams(), lengths=(2,), height=20, line_size=(8, 24))
             for i in range(3)]
    assert all(p.line_input is not None and p.line_input.shape == (8, 24) for p in batch)
    line = StubLine()
    traces = recognize(batch, mode="auto", lengths=(2,), classifier=StubGlyphs(), line_reader=line, threshold=0.9)
    assert (line.calls, line.input_calls) == (0, 1)
    assert [t.text for t in traces] == ["aa", "cc", "aa"]


def test_the_routing_threshold_follows_the_stronger_reader():
    """train.best_threshold: where the CRNN is right and the glyph CNN unsure, everything goes to
    the CRNN; where the CRNN is the weaker reader, segment readings stay, even those with a
    rejected segment ("found 1 glyphs, expected 2") whose glyphs still read right."""
    from pipeline.train import best_threshold

    labels = ["ab", "ba", "aa", "bb"]
    unsure = [Reading(t, np.array([0.9, 0.35]), "found 1 glyphs, expected 2") for t in labels]
    right_ctc = [Reading(t, np.array([0.99, 0.99])) for t in labels]
    wrong_ctc = [Reading("", np.zeros(0)) for _ in labels]
    assert best_threshold(unsure, right_ctc, labels) == (1.0, 1.0)
    # Ties go towards the stronger reader alone: here the glyph reader, so the lowest threshold.
    assert best_threshold(unsure, wrong_ctc, labels) == (0.0, 1.0)
    # A reading with no glyphs at all always goes to the CRNN, whatever the threshold.
    none = [Reading("", np.zeros(0), "no segmentation into 2 glyphs") for _ in labels]
    assert best_threshold(none, right_ctc, labels) == (1.0, 1.0)
    assert best_threshold(none, wrong_ctc, labels) == (1.0, 0.0)


@pytest.mark.parametrize(("ctc_texts", "expected"), [
    # The glyph reader reads 3 of 4 alone, the CRNN 2. Up to 0.95 auto reads 3 (the unsure "ba"
    # and "aa" are right whichever reader has them); above, the sure "ab" goes to the CRNN and
    # is lost. A tie from 0 to 0.95, broken towards the glyph reader: the lowest.
    (["xx", "ba", "aa", "xx"], 0.0),
    # Both read 3 alone (the CRNN gets "bb" right instead of "ab"): auto reads 3 at every
    # threshold, and the tie goes to the CRNN, the highest.
    (["xx", "ba", "aa", "bb"], 1.0),
])
def test_routing_ties_go_towards_the_reader_that_is_stronger_alone(ctc_texts: list[str], expected: float):
    from pipeline.train import best_threshold

    labels = ["ab", "ba", "aa", "bb"]
    segment = [Reading("ab", np.array([0.95, 0.95])), Reading("ba", np.array([0.5, 0.9])),
               Reading("aa", np.array([0.6, 0.9])), Reading("ba", np.array([0.95, 0.95]))]
    ctc = [Reading(t, np.array([0.9, 0.9])) for t in ctc_texts]
    assert best_threshold(segment, ctc, labels) == (expected, 0.75)


def _readers(pattern: str) -> tuple[list[Reading], list[Reading], list[str]]:
    """One image a letter: S the segment reading is right and sure (0.9), C the CRNN is right and
    the segment reading wrong and unsure (0.5), B both right (segment unsure), N neither."""
    labels = [f"{c}{i}" for i, c in enumerate(pattern)]
    segment = [Reading(label if c in "SB" else "??", np.array([0.9 if c == "S" else 0.5] * 2))
               for c, label in zip(pattern, labels, strict=True)]
    ctc = [Reading(label if c in "CB" else "!!", np.array([0.9, 0.9]))
           for c, label in zip(pattern, labels, strict=True)]
    return segment, ctc, labels


@pytest.mark.parametrize(("pattern", "threshold", "expected"), [
    # The CRNN reads 8 alone, the glyph reader 2; auto at 0.9 reads all 10: 2 wins, no loss,
    # p = 0.25: not evidence, so the CRNN's end.
    ("SS" + "C" * 8, 1.0, {"searched_threshold": 0.9, "stronger_alone": "ctc", "wins": 2, "losses": 0, "p": 0.25,
                           "selection_accuracy": 0.8}),
    # 5 wins, no loss: p = 1/32 < 0.05, the threshold found stays.
    ("SSSSS" + "C" * 7, 0.9, {"wins": 5, "losses": 0, "p": 0.0312, "selection_accuracy": 1.0}),
    # The glyph reader is the stronger: its end is 0.0, where every sure or unsure reading stays.
    ("S" * 8 + "CC", 0.0, {"stronger_alone": "glyph", "wins": 2, "losses": 0, "selection_accuracy": 0.8}),
    # The readers read as many alone: nothing to fall back to, the threshold found stays.
    ("SSSSS" + "CCCCC", 0.9, {"stronger_alone": None, "selection_accuracy": 1.0}),
    # The threshold found is the stronger reader's end: nothing to test.
    ("C" * 6 + "BN", 1.0, {"searched_threshold": 1.0, "wins": 0, "losses": 0, "p": 1.0}),
])
def test_routing_leaves_the_stronger_reader_only_on_a_sign_tests_evidence(pattern: str, threshold: float,
                                                                          expected: dict):
    from pipeline.train import routing_choice

    choice = routing_choice(*_readers(pattern))
    assert choice["threshold"] == threshold
    assert {key: choice[key] for key in expected} == expected
