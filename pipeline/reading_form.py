"""Cheaper forms of trained networks for reading: the same function, computed in fewer or wider
passes. Training needs batch normalisation and plain 3x3 convolutions; reading needs neither.

* Batch normalisation folded into the convolution before it (:func:`folded`): one pass fewer
  over every activation map.
* A 3x3 "same" convolution + ReLU + 2x2 max pooling computed on 2x2 cells (:func:`pooled_on_cells`,
  :func:`cell_weights`): the input becomes (rows / 2 + 1) x (cols / 2 + 1) cells of 4 x channels
  values, one 2x2 convolution gives the four pixels of each pooling window as 4 x filters
  channels, and a max over the four gives the pooled map. It costs more multiply-adds (16 x 12 x
  64 a cell against 4 x 27 x 16 for 3 input channels and 16 filters), but the convolution is wide
  enough for the CPU's kernels: a 3x3 convolution of 1-3 channels into 16 ran at a fifth of the
  rate of the later, wider ones.

``glyph_cnn.for_reading`` and ``crnn.CtcReader`` read with these forms; ``bench/reading_forms.py``
measures them against the networks as trained (readings, probabilities, speed), and the tests
check the outputs on trained-looking weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # keras is imported lazily: start-up without a model should not pay for it
    import keras


def pooled_on_cells(x: keras.KerasTensor, *, width: int, name: str, prefix: str) -> keras.KerasTensor:
    """3x3 "same" convolution (``width`` filters, bias) + ReLU + 2x2 max pooling of
    (B, rows, cols, C) maps, on 2x2 cells: (B, rows // 2, cols // 2, width). The convolution is
    named ``name`` and takes :func:`cell_weights` of the 3x3 one."""
    from keras import layers

    rows, cols, channels = x.shape[1:]
    # Pooled row i reads input rows 2i - 1 .. 2i + 2: cells i and i + 1 of the input padded by one
    # row above (and below as far as the cells need).
    cell_rows, cell_cols = rows // 2 + 1, cols // 2 + 1
    x = layers.ZeroPadding2D(((1, 2 * cell_rows - rows - 1), (1, 2 * cell_cols - cols - 1)), name=f"{prefix}_pad")(x)
    x = layers.Reshape((cell_rows, 2, cell_cols, 2, channels), name=f"{prefix}_split")(x)
    x = layers.Permute((1, 3, 2, 4, 5), name=f"{prefix}_order")(x)  # (cell row, cell column, dy, dx, c)
    x = layers.Reshape((cell_rows, cell_cols, 4 * channels), name=f"{prefix}_cells")(x)
    x = layers.Conv2D(4 * width, 2, activation="relu", name=name)(x)  # channels: (a, b, filter)
    return _window_max()(cell_rows - 1, cell_cols - 1, width, name=f"{prefix}_pool")(x)


def cell_weights(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 3x3 convolution's kernel (3, 3, C, F) and bias (F,) as the 2x2 convolution over 2x2 cells
    of :func:`pooled_on_cells`: kernel (2, 2, 4C, 4F), bias (4F,). Output channel (a, b, f) is
    filter f at pixel (a, b) of the pooling window; cell (p, q), sub-pixel (dy, dx) holds the
    input pixel at offset (2p + dy - a, 2q + dx - b) from that pixel's kernel corner."""
    c, f = kernel.shape[2], kernel.shape[3]
    cells = np.zeros((2, 2, 2, 2, c, 2, 2, f), dtype=kernel.dtype)  # p, q, dy, dx, c, a, b, f
    for p, q, dy, dx, a, b in np.ndindex(2, 2, 2, 2, 2, 2):
        ky, kx = 2 * p + dy - a, 2 * q + dx - b
        if 0 <= ky < 3 and 0 <= kx < 3:
            cells[p, q, dy, dx, :, a, b, :] = kernel[ky, kx]
    return cells.reshape(2, 2, 4 * c, 4 * f), np.tile(bias, 4)


def folded(kernel: np.ndarray, bias: np.ndarray | None, norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
    """[kernel, bias] of a convolution that also applies ``norm`` as it does at inference:
    weights times gamma / sqrt(variance + epsilon), bias (beta - mean) times that plus beta's
    share. ``bias`` None: a convolution without one (the usual one before batch normalisation)."""
    gamma, beta, mean, variance = norm.get_weights()
    scale = gamma / np.sqrt(variance + norm.epsilon)
    shift = beta - mean * scale if bias is None else beta + (bias - mean) * scale
    return [kernel * scale, shift]


def transfer(fast: keras.Model, trained: keras.Model, *, norm_of: Callable[[str], str]) -> keras.Model:
    """Give the reading form ``fast`` the weights of ``trained``, layer by layer by name: each
    convolution folds the normalisation layer ``norm_of(its name)`` where ``trained`` has one,
    and takes :func:`cell_weights` where ``fast`` computes it on cells. Returns ``fast``."""
    names = {layer.name for layer in trained.layers}
    for layer in fast.layers:
        if not layer.weights:
            continue
        weights = trained.get_layer(layer.name).get_weights()
        if layer.__class__.__name__ == "Conv2D":
            kernel, bias = weights[0], (weights[1] if len(weights) > 1 else None)
            if norm_of(layer.name) in names:
                weights = folded(kernel, bias, trained.get_layer(norm_of(layer.name)))
            if tuple(layer.kernel.shape) != kernel.shape:  # on cells
                weights = list(cell_weights(*weights))
        layer.set_weights(weights)
    return fast


@functools.cache
def _window_max() -> type:
    """The layer taking the max over the four window pixels of each cell's (a, b, filter)
    channels: (B, rows, cols, 4 x width) -> (B, rows, cols, width). A reduction over a reshaped
    axis, for which Keras has no layer (MaxPooling3D over it took twice as long: ad-hoc timing).
    Made on first use: keras is imported lazily."""
    import keras

    class WindowMax(keras.layers.Layer):
        def __init__(self, rows: int, cols: int, width: int, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.rows, self.cols, self.width = rows, cols, width

        def call(self, x: Any) -> Any:
            return keras.ops.max(keras.ops.reshape(x, (-1, self.rows, self.cols, 4, self.width)), axis=3)

        def compute_output_shape(self, shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
            return (shape[0], self.rows, self.cols, self.width)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "rows": self.rows, "cols": self.cols, "width": self.width}

    return WindowMax
