"""pipeline.line_input: the histogram-based normalisation equals the direct float computation."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.line_input import _normalise, _quantile, prepare_line


def _reference(gray: np.ndarray) -> np.ndarray:
    """The definition, written directly over float pixels (np.median / np.percentile)."""
    img = gray.astype(np.float32)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    background = float(np.median(border))
    deviation = img - background
    far = np.abs(deviation) > 48.0
    ink_lighter = float(deviation[far].mean()) > 0 if far.any() else background < 128
    if ink_lighter:
        img = 255.0 - img
        background = 255.0 - background
    ink = float(np.percentile(img, 1.0))
    span = background - ink
    if span < 16.0:
        return np.clip(img / max(background, 1.0), 0.0, 1.0)
    return np.clip((img - ink) / span, 0.0, 1.0)


def _cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    cases = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(1, 1), (2, 3), (17, 5), (50, 200)]]
    for value in (0, 7, 128, 250, 255):
        cases.append(np.full((12, 30), value, np.uint8))
    text = np.full((40, 120), 235, np.uint8)
    text[10:30, 20:100:7] = 30  # dark strokes on light
    cases += [text, 255 - text]  # and light strokes on dark
    noisy = np.clip(text.astype(int) + rng.integers(-20, 20, text.shape), 0, 255).astype(np.uint8)
    cases += [noisy, 255 - noisy]
    return cases


@pytest.mark.parametrize("index", range(len(_cases())))
def test_normalise_equals_the_direct_definition(index: int) -> None:
    gray = _cases()[index]
    np.testing.assert_allclose(_normalise(gray), _reference(gray), atol=1e-6)


@pytest.mark.parametrize("q", [0.0, 0.01, 0.25, 0.5, 0.99, 1.0])
def test_quantile_of_a_histogram_matches_percentile(q: float) -> None:
    values = np.random.default_rng(1).integers(0, 256, 1001).astype(np.uint8)
    counts = np.bincount(values, minlength=256)
    assert _quantile(counts, q) == pytest.approx(float(np.percentile(values, 100 * q)))
    few = values[:6]
    assert _quantile(np.bincount(few, minlength=256), q) == pytest.approx(float(np.percentile(few, 100 * q)))


def test_light_ink_comes_out_dark() -> None:
    gray = np.zeros((32, 64), np.uint8)
    gray[8:24, 10:50] = 220
    out = prepare_line(gray, height=32, width=128)
    assert out[16, 30] == pytest.approx(0.0)
    assert out[2, 2] == pytest.approx(1.0)
    assert out[:, 64:].min() == 1.0  # padding is background
