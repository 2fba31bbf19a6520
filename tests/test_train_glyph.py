"""The glyph trainer's examples on a hand-made lattice: aligned glyphs, near-copies, rejects."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.glyphs import crop_glyphs
from pipeline.recognize import Prepared
from pipeline.segment import Lattice
from pipeline.train_glyph import _fit, augment, struck, training_crops


def _three_touching_glyphs() -> Prepared:
    """Glyphs 'a', 'b', 'c' fill columns [0, 20), [20, 40), [40, 60); the lattice offers the exact
    cuts, a near-copy of 'a' missing one column, a one-column sliver and a segment over 'a' + 'b'."""
    mask = np.ones((10, 60), bool)
    mask[:, 19] = mask[:, 39] = False  # waists between the glyphs
    mask[:3, 40:] = False  # 'c' is shorter: its crop differs from the others
    cuts = np.array([0, 1, 20, 40, 60])
    segments = np.array([[0, 2], [2, 3], [3, 4], [1, 2], [0, 1], [1, 3]])
    prior = np.array([0.0, 0.0, 0.0, -5.0, -5.0, -5.0])  # the exact cuts are the aligned path
    rows = np.tile([0, 10], (len(segments), 1))
    lattice = Lattice(cuts, segments, prior, rows, n_components=1)
    crops = crop_glyphs(mask, cuts[segments], size=16, margin=1)
    return Prepared(gray=np.zeros((10, 60), np.uint8), binary=mask, cleaned=mask, lattice=lattice, all_crops=crops)


def test_near_copies_carry_their_glyphs_class_and_slivers_are_rejects():
    prep = _three_touching_glyphs()
    crops, classes, used, widths = training_crops([prep], ["abc"], "abc", rejects_per_glyph=2.0, seed=0)
    assert used == 1
    np.testing.assert_allclose(widths, [1.0, 1.0, 1.0])
    reject = 3
    # Aligned 'a', 'b', 'c', then the near-copy of 'a' (segment 3), then both rejects (4, 5).
    assert sorted(classes.tolist()) == [0, 0, 1, 2, reject, reject]
    by_class = {c: [crop for crop, k in zip(crops, classes, strict=True) if k == c] for c in set(classes.tolist())}
    assert any(np.array_equal(crop, prep.crops[3]) for crop in by_class[0])
    for crop in by_class[reject]:
        assert np.array_equal(crop, prep.crops[4]) or np.array_equal(crop, prep.crops[5])


def test_no_near_copies_when_switched_off():
    prep = _three_touching_glyphs()
    _, classes, _, _ = training_crops([prep], ["abc"], "abc", near_per_glyph=0.0, seed=0)
    assert sorted(c for c in classes.tolist() if c != 3) == [0, 1, 2]


def _glyph_with_a_neighbours_edge() -> Prepared:
    """The glyphs of :func:`_three_touching_glyphs` and one more segment: 'a' with the first three
    columns of 'b' (purity 190 / 220 = 0.86 of its ink from 'a', all of 'a's ink)."""
    mask = np.ones((10, 60), bool)
    mask[:, 19] = mask[:, 39] = False
    cuts = np.array([0, 20, 23, 40, 60])
    segments = np.array([[0, 1], [1, 3], [3, 4], [0, 2]])
    prior = np.array([0.0, 0.0, 0.0, -5.0])
    lattice = Lattice(cuts, segments, prior, np.tile([0, 10], (len(segments), 1)), n_components=1)
    crops = crop_glyphs(mask, cuts[segments], size=16, margin=1)
    return Prepared(gray=np.zeros((10, 60), np.uint8), binary=mask, cleaned=mask, lattice=lattice, all_crops=crops)


@pytest.mark.parametrize(("purity", "rejects"), [(0.8, 0), (0.85, 0), (0.87, 1), (0.9, 1)])
def test_reject_purity_decides_a_segment_with_a_neighbours_edge(purity: float, rejects: int):
    _, classes, _, _ = training_crops([_glyph_with_a_neighbours_edge()], ["abc"], "abc", rejects_per_glyph=2.0,
                                      reject_purity=purity, seed=0)
    assert sorted(classes.tolist()) == [0, 1, 2] + [3] * rejects  # never a near-copy: 0.86 < 0.9


@pytest.mark.parametrize(("name", "value"), [("reject_purity", 0.0), ("reject_purity", 0.95),
                                             ("reject_coverage", 0.95), ("reject_coverage", -0.1)])
def test_reject_bounds_must_stay_under_the_near_copies(name: str, value: float):
    with pytest.raises(ValueError, match=name):
        training_crops([_three_touching_glyphs()], ["abc"], "abc", seed=0, **{name: value})


@pytest.mark.parametrize(("smoothing", "low", "high"), [(0.0, 0.0, 0.5), (0.5, 0.8, 5.0)])
def test_label_smoothing_sets_a_floor_under_the_loss(smoothing: float, low: float, high: float):
    """Two easy classes plus reject (3 outputs): plain targets are learnt to a small loss; with
    smoothing 0.5 each target is (2/3, 1/6, 1/6), whose entropy (0.87) no network can go under."""
    crops = np.zeros((256, 12, 12), np.uint8)
    crops[::2, 2:10, 5:7] = 255  # class 0: a bar
    crops[1::2, 5:7, 2:10] = 255  # class 1: a dash
    classes = np.arange(256) % 2
    arch = {"size": 12, "n_classes": 2, "filters": [8], "convs": 1, "dense": 16, "dropout": 0.0}
    _, info = _fit(crops, classes, arch=arch, select=([], []), charset="ab", lengths=(1,), epochs=4, seed=0,
                   batch_size=32, label_smoothing=smoothing)
    assert low <= info["history"][-1]["loss"] <= high
    # Selection figures only every fifth epoch and after the last (here: the fourth).
    assert ["selection_accuracy" in h for h in info["history"]] == [False, False, False, True]


def test_selection_figures_need_a_positive_interval():
    with pytest.raises(ValueError, match="log_every must be at least 1"):
        _fit(np.zeros((4, 12, 12), np.uint8), np.zeros(4, np.int64), arch={}, select=([], []), charset="ab",
             lengths=(1,), epochs=1, seed=0, batch_size=2, log_every=0)


def test_struck_crops_get_a_line_in_grey_and_in_the_mask_only_beside_ink():
    crops = np.zeros((40, 20, 20, 3), np.uint8)
    crops[:, 4:16, 9:11, 0] = 255  # an upright bar in the mask
    crops[:, 4:16, 9:11, 1] = 200  # and in the grey levels
    crops[:, :, :, 2] = 255  # the first-glyph mark: never drawn on
    before = crops.copy()
    out = struck(crops, np.random.default_rng(0), 1.0, grey=1)
    assert np.array_equal(crops, before)  # a copy
    assert np.array_equal(out[..., 2], before[..., 2])
    mask_added = (out[..., 0] > 0) & (before[..., 0] == 0)
    grey_added = out[..., 1] > before[..., 1]
    assert grey_added.any(axis=(1, 2)).all()  # every crop struck, share 1
    near = np.zeros((20, 20), bool)
    near[2:18, 7:13] = True  # within 2 pixels of the bar
    assert not (mask_added & ~near).any()
    assert mask_added.any()
    assert np.array_equal(struck(crops, np.random.default_rng(0), 0.0, grey=1), crops)
    one = struck(crops[..., 0], np.random.default_rng(1), 1.0)  # mask-only crops: (N, s, s)
    assert one.shape == (40, 20, 20) and (one > crops[..., 0]).any()


def test_augment_warps_the_pixels_and_keeps_the_first_glyph_mark_whole():
    crops = np.zeros((30, 24, 24, 3), np.uint8)
    crops[:, 6:18, 10:14, 0] = 255  # an upright bar in the mask
    crops[:, 6:18, 10:14, 1] = 180  # and in the grey levels
    crops[::2, :, :, 2] = 255  # every other crop begins the text
    before = crops.copy()
    out = augment(crops, np.random.default_rng(0), mark=2)
    assert np.array_equal(crops, before)  # a copy
    assert not np.array_equal(out[..., 0], before[..., 0])  # the pixels moved
    assert np.array_equal(out[..., 2], before[..., 2])  # the mark did not: 255 or 0 over the whole crop
    # The same draws either way: only the mark channel differs from a warp of every channel.
    warped = augment(crops, np.random.default_rng(0))
    assert np.array_equal(warped[..., :2], out[..., :2])
    assert (warped[::2, ..., 2] == 0).any()  # warped, the mark gets a blank border that no crop read has
