"""Stage 5, classify: the small Keras CNN that reads one glyph crop.

It has one class per character plus a last *reject* class ("not one whole glyph": a sliver, two
glyphs, a line end). Segmentation asks it to score every candidate segment, and the reject class
is what stops a path through half an "m" from looking as good as a path through the whole one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.bundle import Bundle
from pipeline.reading_form import pooled_on_cells, transfer

if TYPE_CHECKING:  # keras is imported lazily: start-up without a model should not pay for it
    import keras


log = logging.getLogger(__name__)

#: Inference precisions of :meth:`GlyphClassifier.from_bundle`.
PRECISIONS = ("auto", "float32", "bfloat16")
#: CPU flags (Linux /proc/cpuinfo, x86) of native bfloat16 arithmetic, which oneDNN uses.
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

#: Builder arguments added after bundles were first written, with the values those bundles'
#: networks had: a manifest without the key rebuilds the network its weights belong to.
ADDED_LATER = {"convs": 1, "batch_norm": False, "members": 1, "channels": 1}


def build_glyph_cnn(
    *,
    size: int,
    n_classes: int,
    filters: Sequence[int] = (16, 32, 64),
    convs: int | Sequence[int] = (1, 1, 2),
    batch_norm: bool = True,
    dense: int = 128,
    dropout: float = 0.3,
    members: int = 1,
    channels: int = 1,
    reading: bool = False,
    cells: bool = True,
) -> keras.Model:
    """The glyph classifier: input float32 (B, size, size, channels), output softmax (B, n_classes + 1).

    ``n_classes`` characters; the extra last output is the reject class. Block ``n`` is ``convs``
    (or ``convs[n]``, one count per block) 3x3 convolutions of ``filters[n]`` channels (each
    batch-normalised when ``batch_norm``), then 2x2 max pooling. Training and inference use the
    same model (Dropout and batch normalisation switch modes themselves).

    ``reading`` builds the same function in a form that is cheaper to run (weights from a trained
    network: :func:`for_reading`):

    * Trimmed: where a block's maps have an odd side, its 2x2 pooling never reads their last row
      and column (5x5 -> 2x2 for 20x20 crops), so the block's last convolution computes only the
      rows and columns the pooling reads (one zero row and column padded on the top and left,
      then a valid convolution). For 20x20 crops this leaves out 9 of conv3b's 25 positions,
      about a sixth of the network's multiply-adds.
    * With ``cells`` (for Keras), the first block's last convolution, its ReLU and pooling computed
      on 2x2 cells (``reading_form.pooled_on_cells``): wider, and faster with Keras' CPU kernels,
      than a 3x3 convolution of three channels into 16. TensorFlow Lite's kernels run the plain
      convolution faster: ``cells=False`` (67 against 88 microseconds of CPU a captcha_v2 crop,
      and 75 for the network as trained; an ad-hoc timing on the 2-core machine).

    The default doubles only the last block's convolution. On the captcha_v2 development splits it
    read as well as two per block (segment route mean 93.9 against 93.1 % over seeds 8-12:
    ``bench/seeds.py --seeds 8 9 10 11 12`` on this code, and at commit dfe976b for two per block)
    with half the multiply-adds per 20x20 crop (1.9 M against 3.7 M: each block's second convolution
    costs 0.92 M, whatever the block).
    """
    import keras
    from keras import layers

    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    per_block = [convs] * len(filters) if isinstance(convs, int) else list(convs)
    if len(per_block) != len(filters):
        raise ValueError(f"convs has {len(per_block)} counts for {len(filters)} blocks")
    inputs = keras.Input(shape=(size, size, channels), name="glyph")

    def tower(prefix: str) -> keras.KerasTensor:
        x = inputs
        side = size  # rows (= columns) of the block's maps
        for n, (width, count) in enumerate(zip(filters, per_block, strict=True)):
            for k in range(count):
                base = f"conv{n + 1}" + ("" if count == 1 else "abcdefgh"[k])
                name = prefix + base
                padding = "same"
                if reading and cells and n == 0 and k == count - 1:
                    x = pooled_on_cells(x, width=width, name=name, prefix=f"{prefix}cells_{base}")
                    break
                if reading and k == count - 1 and side % 2:
                    # Outputs 0 .. side - 2 only: input rows -1 .. side - 1 (one zero row above).
                    x = layers.ZeroPadding2D(((1, 0), (1, 0)), name=f"{prefix}trim_{base}")(x)
                    padding = "valid"
                if batch_norm:
                    x = layers.Conv2D(width, 3, padding=padding, use_bias=False, name=name)(x)
                    x = layers.BatchNormalization(name=f"{prefix}bn_{base}")(x)
                    x = layers.Activation("relu", name=f"{prefix}relu_{base}")(x)
                else:
                    x = layers.Conv2D(width, 3, padding=padding, activation="relu", name=name)(x)
            else:  # no break: the block's pooling is still to come
                x = layers.MaxPooling2D(2, name=f"{prefix}pool{n + 1}")(x)
            side //= 2
        x = layers.Flatten(name=f"{prefix}flatten")(x)
        x = layers.Dense(dense, activation="relu", name=f"{prefix}dense")(x)
        x = layers.Dropout(dropout, name=f"{prefix}dropout")(x)
        return layers.Dense(n_classes + 1, activation="softmax", name=f"{prefix}probs")(x)

    if members == 1:
        outputs = tower("")
    else:
        outputs = layers.Average(name="probs")([tower(f"m{k + 1}_") for k in range(members)])
    return keras.Model(inputs, outputs, name="glyph_cnn")


def for_reading(model: keras.Model, arch: dict[str, Any], *, cells: bool = True) -> keras.Model:
    """The same function as a trained ``model`` (built from ``arch``), cheaper to run: the
    ``build_glyph_cnn(reading=True)`` form, with batch normalisation folded into the convolutions
    (``reading_form.transfer``)."""
    fast = build_glyph_cnn(**{**arch, "batch_norm": False, "reading": True, "cells": cells})

    def norm_of(conv: str) -> str:  # "m2_conv3a" -> "m2_bn_conv3a": member 2's; "conv3a" -> "bn_conv3a"
        prefix, _, base = conv.rpartition("_")
        return f"{prefix}_bn_{base}" if prefix else f"bn_{base}"

    return transfer(fast, model, norm_of=norm_of)


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU does bfloat16 arithmetic natively. Elsewhere (no such flag, no
    /proc/cpuinfo) bfloat16 would be emulated, slower than float32, so the answer is no."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return any(line.startswith("flags") and BF16_FLAGS & set(line.split(":", 1)[-1].split())
               for line in text.splitlines())


def resolve_precision(precision: str, engine: str = "auto") -> str:
    """``auto`` -> ``float32`` where TensorFlow Lite will run it (``engine`` ``auto`` or ``lite``
    and a TensorFlow that has it), else ``bfloat16`` where the CPU has it natively, else ``float32``.

    Lite first, even on a CPU with native bfloat16: there Keras in bfloat16 runs the CNN alone
    faster than Lite in float32 in batches of 512, but not in the calls of every size that a run
    makes, and a whole ``pipeline.run --mode segment`` is slower with it
    (``bench/precision.py``, ``bench/speed.py --against``; figures in the README's ``--precision``).
    Lite or not is :func:`resolve_engine`'s answer for float32 (``--engine lite`` therefore means
    float32, and a TensorFlow without Lite then says so when the bundle loads)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        if resolve_engine(engine, "float32") == "lite":
            return "float32"
        return "bfloat16" if cpu_has_bf16() else "float32"
    return precision


def resolve_engine(engine: str, precision: str) -> str:
    """``auto`` -> ``lite`` for float32 where this TensorFlow has TensorFlow Lite, else ``keras``
    (bfloat16 is Keras' mixed precision policy: TensorFlow Lite does not run it)."""
    from pipeline.lite import ENGINES, available

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "lite" and precision != "float32":
        raise ValueError(f"the lite engine computes in float32, not {precision}")
    if engine == "auto":
        return "lite" if precision == "float32" and available() else "keras"
    return engine


def in_bfloat16(model: keras.Model) -> keras.Model:
    """The same network computing in bfloat16 (weights kept in float32, Keras' ``mixed_bfloat16``
    policy), except the softmax layer, which stays in float32 so that the probabilities the
    segmentation judge multiplies keep their precision. ``bench/precision.py`` measures, on every
    image of both shipped bundles' training folders, the readings that differ from float32 and
    the speed ratio (``bench/results/precision.json``); ``tests/test_glyph_cnn.py`` checks the sample images."""
    import keras

    def clone(layer: keras.Layer) -> keras.Layer:
        config = layer.get_config()
        if not layer.name.endswith("probs") and "dtype" in config:
            config["dtype"] = "mixed_bfloat16"
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def trained_network(bundle: Bundle) -> tuple[keras.Model, dict[str, Any]]:
    """The bundle's glyph CNN as it was trained (batch normalisation and all) and its builder
    arguments. Raises ValueError when the bundle has none, BundleError on a wrong sha256."""
    entry = bundle.reader("glyph")
    if entry is None:
        raise ValueError(f"bundle {bundle.name!r} has no glyph reader")
    weights = bundle.weights_path("glyph")  # verifies sha256 first
    arch: dict[str, Any] = {**ADDED_LATER, **entry["architecture"]}
    model = build_glyph_cnn(**arch)
    model.load_weights(str(weights))
    return model, arch


class GlyphClassifier:
    """A trained glyph CNN and its character set; :meth:`predict` is one batched call. The crop
    size and channels are the model's input shape."""

    def __init__(self, model: keras.Model, charset: str, *, precision: str = "float32", batch_size: int = 512,
                 runner: Any = None) -> None:
        self.model = model
        self.charset = charset
        self.precision = precision
        #: What computes the probabilities: the Keras model, or a form of it with the same
        #: ``predict_on_batch`` (``lite.LiteNetwork``).
        self.runner = model if runner is None else runner
        #: Crops per model call. 512: the first block's maps then stay in cache; ~20 % more crops/s
        #: than 4,096 a call on the 2-core machine (ad-hoc timing). The batch size also moves the
        #: outputs' last bits (oneDNN blocks the work by it), so training keeps its own.
        self.batch_size = batch_size

    @property
    def engine(self) -> str:
        """``keras`` where the Keras model itself computes, else ``lite`` (the only other runner)."""
        return "keras" if self.runner is self.model else "lite"

    @classmethod
    def from_bundle(cls, bundle: Bundle, *, precision: str = "float32", engine: str = "auto") -> GlyphClassifier:
        """The bundle's glyph CNN, ready to predict: :func:`for_reading`, computing in
        ``precision`` (``auto``: :func:`resolve_precision`; bfloat16: :func:`in_bfloat16`),
        run by ``engine`` (:func:`resolve_engine`; ``lite``: TensorFlow Lite, ``pipeline/lite.py``).
        ``auto`` falls back to Keras, with a warning, where the conversion fails; ``lite`` raises
        RuntimeError then."""
        precision = resolve_precision(precision, engine)
        chosen = resolve_engine(engine, precision)
        trained, arch = trained_network(bundle)
        if chosen == "lite":
            from pipeline.lite import LiteNetwork

            model = for_reading(trained, arch, cells=False)  # the form Lite's kernels run fastest
            try:
                return cls(model, bundle.charset, precision=precision, runner=LiteNetwork(model))
            except RuntimeError as exc:
                if engine == "lite":
                    raise
                log.warning("glyph CNN read by Keras: %s", exc)
        model = for_reading(trained, arch)
        if precision == "bfloat16":
            model = in_bfloat16(model)
        return cls(model, bundle.charset, precision=precision)

    def warm_up(self) -> None:
        """Trace the model's predict function now (two batch sizes, so the trace Keras keeps
        takes any batch size), not on the first real batch."""
        for n in (1, 2):
            self.predict(np.zeros((n, *self.model.input_shape[1:]), np.float32))

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities of glyph crops.

        Args:
            crops: float32 (N, size, size), or (N, size, size, channels), as ``recognize.prepare``
                makes them (scaled to [0, 1]).

        Returns:
            float32 (N, len(charset) + 1); the last column is the reject class.
        """
        n_out = len(self.charset) + 1
        if len(crops) == 0:
            return np.zeros((0, n_out), dtype=np.float32)
        x = (crops[..., None] if crops.ndim == 3 else crops).astype(np.float32, copy=False)
        # With Keras, predict_on_batch runs its compiled predict function: ~1.6x the crops/s of an
        # eager model(x) call on this CPU (bench: 33.6k vs 20.4k crops/s).
        step = self.batch_size
        parts = [np.asarray(self.runner.predict_on_batch(x[i : i + step])) for i in range(0, len(x), step)]
        return np.concatenate(parts, axis=0)
