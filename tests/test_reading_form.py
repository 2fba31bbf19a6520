"""The reading forms: the same functions as the trained layers, computed otherwise."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers

from pipeline.reading_form import cell_weights, folded, pooled_on_cells


def test_cell_weights_place_each_tap_once():
    """Every 3x3 tap lands in exactly one (cell, sub-pixel) slot for each pixel of the window."""
    kernel = np.arange(1, 3 * 3 * 2 * 1 + 1, dtype=np.float32).reshape(3, 3, 2, 1)
    cells, bias = cell_weights(kernel, np.array([0.5], np.float32))
    assert cells.shape == (2, 2, 8, 4) and bias.tolist() == [0.5] * 4
    for window_pixel in range(4):
        taps = cells[..., window_pixel]
        np.testing.assert_array_equal(np.sort(taps[taps != 0]), np.sort(kernel.ravel()))


@pytest.mark.parametrize("bias", [None, np.array([1.0, -2.0], np.float32)])
def test_folding_applies_the_normalisation_as_inference_does(bias):
    norm = layers.BatchNormalization(epsilon=0.25)
    norm.build((None, 2))
    # gamma, beta, moving mean, moving variance: scale = gamma / sqrt(var + eps) = (2, 1)
    norm.set_weights([np.array([2.0, 1.5]), np.array([1.0, 0.0]), np.array([0.5, 3.0]), np.array([0.75, 2.0])])
    kernel = np.ones((3, 3, 1, 2), np.float32)
    new_kernel, new_bias = folded(kernel, bias, norm)
    np.testing.assert_allclose(new_kernel[0, 0, 0], [2.0, 1.0])
    before = np.zeros(2) if bias is None else bias
    np.testing.assert_allclose(new_bias, [1.0 + (before[0] - 0.5) * 2.0, 0.0 + (before[1] - 3.0) * 1.0])


@pytest.mark.parametrize(("rows", "cols", "channels"), [(20, 20, 3), (7, 10, 2), (32, 128, 1), (9, 9, 4)])
def test_pooling_on_cells_is_convolution_relu_pooling(rows: int, cols: int, channels: int):
    rng = np.random.default_rng(rows * cols)
    kernel = rng.normal(size=(3, 3, channels, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    plain_in = keras.Input((rows, cols, channels))
    conv = layers.Conv2D(5, 3, padding="same", activation="relu")
    plain = keras.Model(plain_in, layers.MaxPooling2D(2)(conv(plain_in)))
    conv.set_weights([kernel, bias])
    cells_in = keras.Input((rows, cols, channels))
    cells = keras.Model(cells_in, pooled_on_cells(cells_in, width=5, name="c", prefix="cells"))
    cells.get_layer("c").set_weights(list(cell_weights(kernel, bias)))
    x = rng.random((4, rows, cols, channels), dtype=np.float32)
    expected = np.asarray(plain.predict_on_batch(x))
    assert expected.shape == (4, rows // 2, cols // 2, 5)
    np.testing.assert_allclose(np.asarray(cells.predict_on_batch(x)), expected, rtol=1e-5, atol=1e-5)
