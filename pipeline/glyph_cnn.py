"""Stage 5, classify: the small Keras CNN that reads one glyph crop.

It has one class per character plus a last *reject* class ("not one whole glyph": a sliver, two
glyphs, a line end). Segmentation asks it to score every candidate segment, and the reject class
is what stops a path through half an "m" from looking as good as a path through the whole one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.bundle import Bundle

if TYPE_CHECKING:  # keras is imported lazily: start-up without a model should not pay for it
    import keras


#: Builder arguments added after bundles were first written, with the values those bundles'
#: networks had: a manifest without the key rebuilds the network its weights belong to.
ADDED_LATER = {"convs": 1, "batch_norm": False}


def build_glyph_cnn(
    *,
    size: int,
    n_classes: int,
    filters: Sequence[int] = (16, 32, 64),
    convs: int = 2,
    batch_norm: bool = True,
    dense: int = 128,
    dropout: float = 0.3,
) -> keras.Model:
    """The glyph classifier: input float32 (B, size, size, 1), output softmax (B, n_classes + 1).

    ``n_classes`` characters; the extra last output is the reject class. Each block is ``convs``
    3x3 convolutions of ``filters[n]`` channels (each batch-normalised when ``batch_norm``),
    then 2x2 max pooling. Training and inference use the same model (Dropout and batch
    normalisation switch modes themselves).
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=(size, size, 1), name="glyph")
    x = inputs
    for n, width in enumerate(filters):
        for k in range(convs):
            name = f"conv{n + 1}" + ("" if convs == 1 else "abcdefgh"[k])
            if batch_norm:
                x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
                x = layers.BatchNormalization(name=f"bn_{name}")(x)
                x = layers.Activation("relu", name=f"relu_{name}")(x)
            else:
                x = layers.Conv2D(width, 3, padding="same", activation="relu", name=name)(x)
        x = layers.MaxPooling2D(2, name=f"pool{n + 1}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes + 1, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="glyph_cnn")


def fold_batch_norm(model: keras.Model, arch: dict[str, Any]) -> keras.Model:
    """The same function as a trained batch-normalised ``model`` without its normalisation layers:
    each convolution absorbs the scale and shift its normalisation applies at inference (weights
    times gamma / sqrt(variance + epsilon), bias beta - mean times that). One pass fewer over every
    activation map (an ad-hoc timing on this CPU put the saving at about a sixth of the CNN's time)."""
    folded = build_glyph_cnn(**{**arch, "batch_norm": False})
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = model.get_layer(layer.name)
        if layer.__class__.__name__ != "Conv2D":
            layer.set_weights(source.get_weights())
            continue
        (kernel,) = source.get_weights()
        norm = model.get_layer(f"bn_{layer.name}")
        gamma, beta, mean, variance = norm.get_weights()
        scale = gamma / np.sqrt(variance + norm.epsilon)
        layer.set_weights([kernel * scale, beta - mean * scale])
    return folded


class GlyphClassifier:
    """A trained glyph CNN and its character set; :meth:`predict` is one batched call."""

    def __init__(self, model: keras.Model, charset: str, *, size: int) -> None:
        self.model = model
        self.charset = charset
        self.size = size

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> GlyphClassifier:
        entry = bundle.reader("glyph")
        if entry is None:
            raise ValueError(f"bundle {bundle.name!r} has no glyph reader")
        weights = bundle.weights_path("glyph")  # verifies sha256 first
        arch: dict[str, Any] = {**ADDED_LATER, **entry["architecture"]}
        model = build_glyph_cnn(**arch)
        model.load_weights(str(weights))
        if arch["batch_norm"]:
            model = fold_batch_norm(model, arch)
        return cls(model, bundle.charset, size=int(arch["size"]))

    def warm_up(self) -> None:
        """Trace the model's predict function now (two batch sizes, so the trace Keras keeps
        takes any batch size), not on the first real batch."""
        for n in (1, 2):
            self.predict(np.zeros((n, self.size, self.size), np.float32))

    def predict(self, crops: np.ndarray, *, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities of glyph crops.

        Args:
            crops: float32 (N, size, size), as made by ``glyphs.crop_glyphs``.

        Returns:
            float32 (N, len(charset) + 1); the last column is the reject class.
        """
        n_out = len(self.charset) + 1
        if len(crops) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        x = crops[..., None].astype(np.float32, copy=False)
        # predict_on_batch runs Keras' compiled predict function: ~1.6x the crops/s of an eager
        # model(x) call on this CPU (bench: 33.6k vs 20.4k crops/s).
        parts = [np.asarray(self.model.predict_on_batch(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
        return np.concatenate(parts, axis=0)
