"""binarize and clean on tiny hand-made arrays with exact answers."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.binarize import binarize
from pipeline.clean import clean, clean_counted, components, frame, stroke_width
from pipeline.segment import propose, substantial


def test_dark_ink_on_light():
    gray = np.full((10, 10), 220, np.uint8)
    gray[2:5, 2:8] = 20
    mask = binarize(gray, smooth=1)
    expected = np.zeros((10, 10), bool)
    expected[2:5, 2:8] = True
    np.testing.assert_array_equal(mask, expected)


def test_light_ink_on_dark_is_the_same_mask():
    gray = np.full((10, 10), 220, np.uint8)
    gray[2:5, 2:8] = 20
    np.testing.assert_array_equal(binarize(255 - gray, smooth=1), binarize(gray, smooth=1))


def test_flat_image_has_no_ink():
    assert not binarize(np.full((5, 5), 7, np.uint8)).any()


def test_input_not_modified_and_contract_checked():
    gray = np.full((6, 6), 200, np.uint8)
    gray[2:4, 2:4] = 0
    before = gray.copy()
    binarize(gray, method="sauvola", window=5)
    np.testing.assert_array_equal(gray, before)
    with pytest.raises(ValueError, match="grey uint8"):
        binarize(gray.astype(np.float32))
    with pytest.raises(ValueError, match="unknown binarize method"):
        binarize(gray, method="magic")


def bold_glyph_with_hairline() -> np.ndarray:
    """A 7 px thick bar (a 'stroke') crossed by a 1 px line running the full width."""
    mask = np.zeros((30, 60), bool)
    mask[8:22, 20:27] = True  # stroke 7 px wide
    mask[15, :] = True  # hairline strike-through
    return mask


def test_stroke_width():
    assert stroke_width(np.zeros((5, 5), bool)) == 0.0
    assert 5.0 <= stroke_width(bold_glyph_with_hairline()) <= 8.0


def test_clean_removes_hairline_keeps_stroke():
    mask = bold_glyph_with_hairline()
    cleaned = clean(mask)
    assert not cleaned[15, :10].any() and not cleaned[15, 40:].any()  # line gone away from ink
    assert cleaned[8:22, 21:26].all()  # stroke core kept


def test_clean_leaves_thin_fonts_alone():
    mask = np.zeros((20, 40), bool)
    mask[3:17, 5:7] = True  # 2 px strokes: nothing is thinner than them to remove
    mask[3:17, 20:22] = True
    np.testing.assert_array_equal(clean(mask), mask)


def test_clean_removes_specks():
    mask = np.zeros((20, 40), bool)
    mask[2:18, 5:11] = True
    mask[10, 30] = True  # one-pixel speck
    cleaned = clean(mask)
    assert not cleaned[10, 30] and cleaned[3:17, 6:10].all()


def test_thin_strokes_survive_binarize():
    """A 1 px stroke (a thin serif font at CAPTCHA size) must not be smoothed away."""
    gray = np.full((24, 30), 255, np.uint8)
    gray[4:20, 10] = 0  # one-pixel vertical stroke
    gray[19, 10:20] = 0  # one-pixel base
    mask = binarize(gray)
    assert mask[4:20, 10].all() and mask[19, 10:20].all()


def test_opening_switched_off_per_scheme():
    mask = np.zeros((40, 60), bool)
    mask[5:35, 10:20] = True  # 10 px stroke
    mask[20, :] = True  # 1 px hairline across
    assert clean(mask, thin_ratio=0.0)[20, 40:].all()  # the hairline stays
    assert not clean(mask)[20, 40:].any()


def test_upright_thin_strokes_survive_where_asked():
    """The stem of a "7" can be as thin as a strike line; it runs up and down, the line across."""
    mask = np.zeros((40, 60), bool)
    mask[5:35, 5:15] = True  # 10 px stroke: the scheme's stroke width
    mask[10:30, 30:33] = True  # 3 px upright stroke, 20 tall
    mask[20:22, 15:58] = True  # 2 px line across
    plain, upright = clean(mask, speck_ratio=0.0), clean(mask, speck_ratio=0.0, upright_ratio=0.9)
    assert not plain[10:30, 30:33].any()  # the opening alone erases the thin stem with the line
    assert upright[10:30, 30:33].all() and not upright[20:22, 40:58].any()  # the stem stays, the line goes
    assert not (upright & ~mask).any() and (upright >= plain).all()  # nothing added that was not ink
    # Off with the opening: a thin scheme is left alone either way.
    np.testing.assert_array_equal(clean(mask, thin_ratio=0.0, upright_ratio=0.9), clean(mask, thin_ratio=0.0))


def _bars(height: int, width: int, stroke: int) -> np.ndarray:
    gray = np.full((height, width), 255, np.uint8)
    for x in range(width // 8, width - stroke, width // 4):
        gray[height // 5 : height - height // 5, x : x + stroke] = 0
    return gray


def test_bold_treatment_is_decided_per_scheme():
    from pipeline.config import StageParams
    from pipeline.train import scheme_params

    bold = [_bars(50, 200, 9) for _ in range(5)]
    assert scheme_params(bold, 50, StageParams()) == StageParams()
    # A thin-stroked scheme with one bold outlier: no smoothing, no opening, for all its images.
    thin = [_bars(24, 72, 2) for _ in range(4)] + [_bars(24, 72, 6)]
    params = scheme_params(thin, 24, StageParams())
    assert params.binarize.smooth == 1 and params.clean.thin_ratio == 0.0
    assert params.segment == StageParams().segment


def test_components_are_opencvs_default_components():
    """The faster labelling algorithm finds the same components, numbered the same, with the same stats."""
    rng = np.random.default_rng(5)
    for density in (0.0, 0.05, 0.3, 0.6, 1.0):
        ink = (rng.random((50, 200)) < density).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
        ours = components(ink)
        assert ours[0] == count
        np.testing.assert_array_equal(ours[1], labels)
        np.testing.assert_array_equal(ours[2], stats)


@pytest.mark.parametrize("density", [0.0, 0.02, 0.1, 0.3])
def test_the_kept_areas_are_the_cleaned_masks_own_components(density: float):
    """clean_counted's areas are those of the cleaned mask's components (specks dropped, none
    joined or split), so the lattice's count from them is the count propose makes itself."""
    rng = np.random.default_rng(11)
    mask = rng.random((50, 200)) < density
    mask[10:40, 20:32] = True  # a bold glyph with a hairline, and another
    mask[25, :] = True
    mask[12:38, 60:70] = True
    cleaned, kept = clean_counted(mask)
    np.testing.assert_array_equal(cleaned, clean(mask))
    count, _, stats = components(cleaned.astype(np.uint8))
    assert sorted(kept.tolist()) == sorted(stats[1:count, cv2.CC_STAT_AREA].tolist())
    assert substantial(kept) == propose(cleaned, lengths=(2,)).n_components >= 2


def test_an_empty_mask_keeps_no_components():
    cleaned, kept = clean_counted(np.zeros((10, 10), bool))
    assert not cleaned.any() and kept.shape == (0,) and substantial(kept) == 0


@pytest.mark.parametrize("specks", [0, 1, 5, 6, 7, 40])
def test_specks_are_dropped_whatever_their_number(specks: int):
    """Few dropped specks are erased box by box, many by one look-up: either way exactly the
    components under the speck area go, overlapping boxes included (a speck inside a glyph's box)."""
    mask = np.zeros((40, 160), bool)
    mask[5:35, 10:22] = True  # two glyphs, the first an "n" with a speck under its arch
    mask[5:12, 22:40] = True
    mask[5:35, 34:40] = True
    mask[5:35, 60:72] = True
    rng = np.random.default_rng(specks)
    spots = [(30, 28)] + [(int(y), int(x)) for y, x in zip(rng.integers(0, 40, 200), rng.integers(80, 160, 200),
                                                           strict=True)]
    placed = []
    for y, x in spots:
        if len(placed) == specks:
            break
        if not mask[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2].any():
            mask[y, x] = True
            placed.append((y, x))
    cleaned, kept = clean_counted(mask, thin_ratio=0)
    count, labels, stats = components(mask.astype(np.uint8))
    big = stats[:, cv2.CC_STAT_AREA] >= 10
    big[0] = False
    np.testing.assert_array_equal(cleaned, big[labels])
    assert len(kept) == 2 and not any(cleaned[y, x] for y, x in placed) and len(placed) == specks


def _glyph_bars(h: int = 40, w: int = 100) -> np.ndarray:
    """Three upright 6x20 "glyphs" in a 40x100 mask."""
    mask = np.zeros((h, w), bool)
    for x in (20, 45, 70):
        mask[10:30, x : x + 6] = True
    return mask


def _framed(mask: np.ndarray, inset: int = 0, width: int = 2) -> np.ndarray:
    out = mask.copy()
    h, w = out.shape
    top, bottom, left, right = inset, h - inset, inset, w - inset
    out[top : top + width, left:right] = out[bottom - width : bottom, left:right] = True
    out[top:bottom, left : left + width] = out[top:bottom, right - width : right] = True
    return out


# what is drawn, what frame() must find (as a function of the glyph mask), cover
FRAME_CASES = [
    ("a 2-pixel frame at the edges", lambda m: _framed(m), lambda m: _framed(m) & ~m, 0.8),
    ("a frame inset by 3 pixels", lambda m: _framed(m, inset=3), lambda m: _framed(m, inset=3) & ~m, 0.8),
    ("no frame", lambda m: m, lambda m: np.zeros_like(m), 0.8),
    ("a frame, removal off", lambda m: _framed(m), lambda m: np.zeros_like(m), 0.0),
]


@pytest.mark.parametrize(("case", "draw", "expected", "cover"), FRAME_CASES, ids=[c[0] for c in FRAME_CASES])
def test_frame_finds_the_lines_around_the_image(case: str, draw, expected, cover: float) -> None:
    glyphs = _glyph_bars()
    np.testing.assert_array_equal(frame(draw(glyphs), cover=cover), expected(glyphs))


def test_frame_leaves_text_and_lines_inside_the_band_alone() -> None:
    mask = _glyph_bars()
    mask[20, :] = True  # a line straight across the middle: a strike line, not a frame
    mask[1, 10:70] = True  # a stroke along the top edge, 60 % of the width
    assert not frame(mask).any()


def test_clean_erases_a_frame_and_keeps_the_glyphs_it_touches() -> None:
    glyphs = _glyph_bars()
    glyphs[0:30, 20:26] = True  # the first glyph runs up into the frame's top side
    cleaned, areas = clean_counted(_framed(glyphs), thin_ratio=0.0)
    expected = glyphs.copy()
    expected[0:2] = False  # only the pixels the glyph shares with the frame go
    np.testing.assert_array_equal(cleaned, expected)
    assert sorted(areas.tolist()) == [120, 120, 28 * 6]

