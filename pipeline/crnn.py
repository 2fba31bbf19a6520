"""The whole-line reader: a small CRNN (conv front end + bidirectional RNN) trained with CTC.

It reads a CAPTCHA without segmenting it, so it is the fallback when the glyph route cannot split
the image (and a second opinion when it can).

Array contract:

* input to :func:`pipeline.line_input.prepare_batch`: grey ``uint8 (H, W)`` images of any size and polarity;
* model input: ``float32 (B, height, width, 1)``, values in ``[0, 1]``, **ink dark (0) on a light
  background (1)**, the image scaled to ``height`` and left-aligned, padded on the right with
  background;
* model output (inference model): ``float32 (B, T, n_classes + 1)`` softmax probabilities over
  ``T = width // 4`` horizontal frames; index ``i < n_classes`` is ``charset[i]`` and the LAST
  index ``n_classes`` is the CTC blank.

Keras 3's own CTC defaults to blank = 0 (``keras.losses.CTC`` even hard-codes it); we pass
``mask_index=n_classes`` to ``keras.ops.ctc_loss`` / ``keras.ops.ctc_decode`` instead, so class
indices equal charset positions and a label may use every index including 0.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from pipeline.bundle import Bundle, BundleError
from pipeline.line_input import prepare_batch
from pipeline.reading_form import pooled_on_cells, transfer

log = logging.getLogger(__name__)

#: Horizontal downsampling of the conv front end: one output frame per this many input columns.
FRAME_STRIDE = 4
#: Label padding value: positions past a label's true length hold this (never a class index).
PAD_LABEL = -1
_RNN_CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


def build_crnn(
    *,
    height: int,
    width: int,
    n_classes: int,
    conv_filters: Sequence[int] = (16, 32, 64),
    rnn_units: Sequence[int] = (64,),
    dense_units: int = 96,
    dropout: float = 0.25,
    rnn_cell: str = "gru",
    reading: bool = False,
) -> tuple[keras.Model, keras.Model]:
    """Build the CRNN; returns ``(training_model, inference_model)`` sharing every layer.

    Args:
        height, width: model input size in pixels; ``width`` should be a multiple of 4.
        n_classes: size of the character set; the model has ``n_classes + 1`` outputs, the last
            one the CTC blank.
        conv_filters: filters of each conv block (3x3 conv, batch norm, ReLU, max pool). The
            first two blocks pool 2x2, later ones pool only in height, so there are
            ``T = width // 4`` time frames whatever the depth. 16/32/64 reads ~1.9x the
            images/s of 32/64/96 here and was as accurate on both development splits (captcha_v2
            125/125, wp_rsc 1,189/1,189).
        rnn_units: units per direction of each bidirectional RNN layer (1 or 2 layers).
        dense_units: width of the projection between the conv features and the RNN.
        dropout: dropout before the RNN and between/after the RNN layers (training only).
        rnn_cell: ``"gru"`` or ``"lstm"``. One bidirectional GRU layer left the CTC start-up
            plateau within ~3 epochs on captcha_v2 where two LSTM layers took ~10, at the same
            final accuracy, and is cheaper on a CPU.
        reading: build the inference model in the form that is cheaper to read with (weights from
            a trained model: :meth:`CtcReader.from_weights`): batch normalisation folded into the
            convolutions and the first block on 2x2 cells (``pipeline.reading_form``). The
            training model of this form is not for training.

    Returns:
        training model: ``float32 (B, height, width, 1)`` -> logits ``(B, T, n_classes + 1)``,
        to compile with :class:`CtcLoss`; inference model: same input -> softmax probabilities
        ``(B, T, n_classes + 1)``.
    """
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    if not conv_filters or not rnn_units:
        raise ValueError("conv_filters and rnn_units must each name at least one layer")
    if rnn_cell not in _RNN_CELLS:
        raise ValueError(f"rnn_cell must be one of {sorted(_RNN_CELLS)}, got {rnn_cell!r}")
    if width < FRAME_STRIDE or height < 2 ** len(conv_filters):
        raise ValueError(f"input {height}x{width} too small for {len(conv_filters)} conv blocks")

    image = keras.Input(shape=(height, width, 1), dtype="float32", name="image")
    x = image
    for i, filters in enumerate(conv_filters):
        if reading and i == 0:
            x = pooled_on_cells(x, width=filters, name="conv1", prefix="cells_conv1")
            continue
        if reading:
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        else:
            # Bias is redundant before batch norm; BN is what lets CTC leave its all-blank plateau
            # within a few epochs instead of dozens.
            x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i + 1}")(x)
            # momentum 0.9 (not 0.99): with few steps per epoch the moving statistics must keep up
            # with the weights, or validation (inference-mode BN) lags training by many epochs.
            x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
            x = keras.layers.Activation("relu", name=f"relu{i + 1}")(x)
        # Two 2x2 pools fix the frame stride at 4; deeper blocks shrink height only, keeping
        # enough frames for a blank between repeated characters ("nn", "mm").
        pool = (2, 2) if i < 2 else (2, 1)
        x = keras.layers.MaxPooling2D(pool, name=f"pool{i + 1}")(x)

    # (B, h, T, C) -> (B, T, h, C) -> (B, T, h * C): each frame is one column strip of features.
    _, feat_h, frames, feat_c = x.shape
    x = keras.layers.Permute((2, 1, 3), name="columns")(x)
    x = keras.layers.Reshape((frames, feat_h * feat_c), name="frames")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="project")(x)
    x = keras.layers.Dropout(dropout, name="dropout_project")(x)
    for i, units in enumerate(rnn_units):
        cell = _RNN_CELLS[rnn_cell](units, return_sequences=True, name=f"{rnn_cell}{i + 1}")
        x = keras.layers.Bidirectional(cell, name=f"rnn{i + 1}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_rnn{i + 1}")(x)
    # Logits, not probabilities: keras.ops.ctc_loss applies log-softmax itself.
    logits = keras.layers.Dense(n_classes + 1, name="logits")(x)

    training = keras.Model(image, logits, name="crnn_train")
    probs = keras.layers.Activation("softmax", dtype="float32", name="probs")(
        training.get_layer("logits").output
    )
    inference = keras.Model(training.input, probs, name="crnn_infer")
    return training, inference


class CtcLoss(keras.losses.Loss):
    """CTC loss with the blank at the last index and ``PAD_LABEL``-padded labels.

    ``y_true``: ``(B, L)`` class indices, padded past each label's length with ``PAD_LABEL``
    (so a 4- and a 6-character label share a batch); ``y_pred``: logits ``(B, T, n_classes + 1)``.
    Every image uses all ``T`` frames (images are padded to the model width).
    """

    def __init__(self, *, blank_index: int, name: str = "ctc", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.blank_index = int(blank_index)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        # Keras may hand y_true over as float; the indices are small integers, so the cast is exact.
        labels = keras.ops.cast(y_true, "int32")
        valid = keras.ops.greater_equal(labels, 0)
        label_length = keras.ops.sum(keras.ops.cast(valid, "int32"), axis=-1)
        # Padding must still be a legal index for the op; it is ignored past label_length.
        labels = keras.ops.where(valid, labels, keras.ops.zeros_like(labels))
        shape = keras.ops.shape(y_pred)
        logit_length = keras.ops.full((shape[0],), shape[1], dtype="int32")
        return keras.ops.ctc_loss(labels, y_pred, label_length, logit_length, mask_index=self.blank_index)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "blank_index": self.blank_index}


def encode_labels(labels: Sequence[str], charset: str, *, max_length: int | None = None) -> np.ndarray:
    """Texts -> ``int32 (N, max_length)`` charset indices padded with ``PAD_LABEL``.

    Raises:
        ValueError: a character outside the charset, or a label longer than ``max_length``.
    """
    index = {ch: i for i, ch in enumerate(charset)}
    longest = max((len(t) for t in labels), default=0)
    max_length = longest if max_length is None else max_length
    if longest > max_length:
        raise ValueError(f"a label has {longest} characters, more than max_length={max_length}")
    out = np.full((len(labels), max(max_length, 1)), PAD_LABEL, dtype=np.int32)
    for row, text in enumerate(labels):
        unknown = sorted(set(text) - index.keys())
        if unknown:
            raise ValueError(f"label {text!r} uses characters outside the charset: {''.join(unknown)!r}")
        out[row, : len(text)] = [index[ch] for ch in text]
    return out


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode(probs: np.ndarray, charset: str, lengths: Sequence[int] | None = None) -> list[tuple[str, np.ndarray]]:
    """Greedy best-path CTC decoding of a batch of frame probabilities, kept to the scheme's lengths.

    The text comes from ``keras.ops.ctc_decode`` (greedy, blank = last index): take the most
    probable class per frame, merge runs of the same class, drop blanks, so "aa" needs a
    blank between the two runs. Each character's confidence is the highest probability its
    class reached over the frames of its run on that best path.

    Where ``lengths`` is given and the best path reads a text of another length (a letter
    merged into its twin, or lost to the blank), that text is certainly wrong: the image is
    read instead by the most probable path that spells a text of an allowed length
    (:func:`best_path_of_length`; Keras' decoders take no length). So no reading that was right
    changes, and a reading whose length the scheme never has becomes one that may be right.

    Args:
        probs: ``float (B, T, len(charset) + 1)`` softmax outputs, blank last.
        charset: the characters of indices ``0 .. len(charset) - 1``.
        lengths: the text lengths the scheme has (``Bundle.lengths``); None: any.

    Returns:
        for each image ``(text, confidences)``, ``confidences`` ``float32 (len(text),)``.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 3 or probs.shape[2] != len(charset) + 1:
        raise ValueError(
            f"expected probabilities of shape (B, T, {len(charset) + 1}) for a {len(charset)}-character "
            f"charset, got {probs.shape}"
        )
    batch, frames, n_out = probs.shape
    if batch == 0:
        return []
    blank = n_out - 1
    steps = np.full((batch,), frames, dtype=np.int32)
    # ctc_decode documents logits as input; greedy decoding only takes the per-frame argmax,
    # which probabilities share, and we ignore its score output.
    decoded, _ = keras.ops.ctc_decode(probs, steps, strategy="greedy", mask_index=blank)
    # (1, B, T) with -1 after the end of each sequence.
    keras_paths = keras.ops.convert_to_numpy(decoded)[0]
    allowed = None if lengths is None else sorted({int(n) for n in lengths})

    results: list[tuple[str, np.ndarray]] = []
    for path_idx, run_idx, run_conf in _best_path_runs(probs, blank=blank):
        keras_idx = keras_paths[path_idx]
        keras_idx = keras_idx[keras_idx >= 0]
        if not np.array_equal(keras_idx, run_idx):
            # Only possible on an exact tie between two classes in some frame; keep text and
            # confidences consistent by following our own argmax path.
            log.warning("ctc_decode and numpy best path differ on image %d; using the numpy path", path_idx)
        if allowed and len(run_idx) not in allowed:
            run_idx, run_conf = _best_allowed(probs[path_idx], allowed, blank=blank, fallback=(run_idx, run_conf))
        results.append(("".join(charset[i] for i in run_idx), run_conf))
    return results


def _best_allowed(
    probs: np.ndarray, allowed: Sequence[int], *, blank: int, fallback: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The emitted classes and run confidences of the most probable path (one image's
    ``probs``, ``(T, K)``) among those of each allowed length; ``fallback`` where none fits in
    the frames."""
    logp = np.log(np.maximum(probs.astype(np.float64), 1e-30))
    best: tuple[float, np.ndarray] | None = None
    for n in allowed:
        found = best_path_of_length(logp, n, blank=blank)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
    if best is None:
        return fallback
    path = best[1]
    return _runs(path, probs[np.arange(len(path)), path], blank=blank)


def best_path_of_length(logp: np.ndarray, n: int, *, blank: int) -> tuple[float, np.ndarray] | None:
    """The most probable CTC path over ``T`` frames whose text has exactly ``n`` characters.

    Viterbi over states (characters emitted so far, last frame's class): a frame of the blank
    or of the class before emits nothing; a frame of another class starts a new character.

    Args:
        logp: ``float (T, K)`` log-probabilities, ``blank`` one of the K classes.
        n: the text's length.

    Returns:
        (the path's log-probability, its class per frame, ``int64 (T,)``), or None where no path
        of ``T`` frames spells ``n`` characters.
    """
    frames, k = logp.shape
    if n < 0 or frames == 0 or n > frames:
        return None
    chars = np.array([c for c in range(k) if c != blank], dtype=np.int64)
    neg = -np.inf
    score = np.full((n + 1, k), neg)  # score[m, c]: best path so far with m characters, last class c
    score[0, blank] = logp[0, blank]
    if n >= 1:
        score[1, chars] = logp[0, chars]
    prev = np.zeros((frames, n + 1, k), dtype=np.int64)  # the class of the frame before, per state
    rows = np.arange(n + 1)
    for t in range(1, frames):
        first = score.argmax(axis=1)
        top = score[rows, first]
        masked = score.copy()
        masked[rows, first] = neg
        second = masked.argmax(axis=1)
        runner = masked[rows, second]
        new = np.full((n + 1, k), neg)
        # The blank: from any class, with as many characters.
        new[:, blank] = top + logp[t, blank]
        prev[t, :, blank] = first
        # A class c with m characters: the run of c goes on (from c, m characters), or c starts
        # the m-th character (from the best other class with m - 1).
        stay = score[:, chars]
        start = np.full((n + 1, len(chars)), neg)
        start_from = np.zeros((n + 1, len(chars)), dtype=np.int64)
        if n >= 1:
            other = first[:-1, None] != chars[None, :]
            start[1:] = np.where(other, top[:-1, None], runner[:-1, None])
            start_from[1:] = np.where(other, first[:-1, None], second[:-1, None])
        goes_on = stay >= start
        new[:, chars] = np.where(goes_on, stay, start) + logp[t, chars][None, :]
        prev[t][:, chars] = np.where(goes_on, chars[None, :], start_from)
        score = new
    last = int(score[n].argmax())
    total = float(score[n, last])
    if not np.isfinite(total):
        return None
    path = np.empty(frames, dtype=np.int64)
    m, c = n, last
    for t in range(frames - 1, -1, -1):
        path[t] = c
        if t == 0:
            break
        before = int(prev[t, m, c])
        if c != blank and before != c:
            m -= 1
        c = before
    return total, path


def _runs(path: np.ndarray, conf: np.ndarray, *, blank: int) -> tuple[np.ndarray, np.ndarray]:
    """A path's emitted classes and, for each, the highest probability over the frames of its run."""
    # A run starts where the class changes; runs of the blank emit nothing.
    starts = np.flatnonzero(np.concatenate([[True], path[1:] != path[:-1]]))
    run_cls = path[starts]
    run_max = np.maximum.reduceat(conf, starts)
    keep = run_cls != blank
    return run_cls[keep].astype(np.int64), run_max[keep].astype(np.float32)


def _best_path_runs(probs: np.ndarray, *, blank: int) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Per image: (index, emitted class indices, per-class max probability over its run)."""
    best = probs.argmax(axis=-1)  # (B, T)
    best_p = probs.max(axis=-1)  # (B, T)
    return [(b, *_runs(best[b], best_p[b], blank=blank)) for b in range(best.shape[0])]


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


@dataclass
class CtcReader:
    """A trained CRNN with its charset and input size: grey images in, (text, confidences) out."""

    model: keras.Model  # the inference model: (B, height, width, 1) -> (B, T, n_classes + 1)
    charset: str
    height: int
    width: int
    #: The scheme's text lengths (:func:`decode`), None: any.
    lengths: tuple[int, ...] | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> CtcReader:
        """Rebuild the CRNN described by the bundle's ``ctc`` entry and load its verified weights.

        Raises:
            BundleError: no ``ctc`` reader, weights missing or not matching their sha256, or an
                entry inconsistent with its charset.
        """
        entry = bundle.reader("ctc")
        if entry is None:
            raise BundleError(f"bundle {bundle.name!r} has no 'ctc' reader")
        weights = bundle.weights_path("ctc")  # verifies the sha256
        charset = str(entry.get("charset", bundle.charset))
        arch = dict(entry["architecture"])
        if int(arch["n_classes"]) != len(charset) or int(entry.get("blank_index", len(charset))) != len(charset):
            raise BundleError(
                f"bundle {bundle.name!r}: ctc entry has n_classes={arch['n_classes']}, blank_index="
                f"{entry.get('blank_index')} for a {len(charset)}-character charset"
            )
        return cls.from_weights(weights, charset=charset, architecture=arch, lengths=bundle.lengths)

    @classmethod
    def from_weights(cls, weights: str | Path, *, charset: str, architecture: dict[str, Any],
                     lengths: Sequence[int] | None = None) -> CtcReader:
        """Rebuild with ``build_crnn(**architecture)``, load a ``.weights.h5`` file, and read with
        the ``build_crnn(reading=True)`` form of that network; ``lengths``: the scheme's text
        lengths, to which readings are kept (:func:`decode`)."""
        training, _ = build_crnn(**architecture)
        training.load_weights(weights)
        _, fast = build_crnn(**{**architecture, "reading": True})
        transfer(fast, training, norm_of=lambda conv: "bn" + conv.removeprefix("conv"))
        return cls(model=fast, charset=charset, height=int(architecture["height"]), width=int(architecture["width"]),
                   lengths=None if lengths is None else tuple(int(n) for n in lengths))

    def read(self, grays: Sequence[np.ndarray], *, batch_size: int = 256) -> list[tuple[str, np.ndarray]]:
        """Read grey ``uint8 (H, W)`` images; one model call per batch of ``batch_size``.

        Returns:
            per image ``(text, confidences)`` as :func:`decode`.
        """
        results: list[tuple[str, np.ndarray]] = []
        for start in range(0, len(grays), batch_size):
            results.extend(self.read_inputs(prepare_batch(grays[start : start + batch_size], height=self.height,
                                                          width=self.width), batch_size=batch_size))
        return results

    def read_inputs(self, x: np.ndarray, *, batch_size: int = 256) -> list[tuple[str, np.ndarray]]:
        """Read model inputs already made by ``pipeline.line_input`` (``prepare_line`` / ``prepare_batch``
        (``float32 (B, height, width)`` or ``(B, height, width, 1)``), e.g. in worker processes."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., None]
        if x.shape[1:] != (self.height, self.width, 1):
            raise ValueError(f"expected inputs of shape (B, {self.height}, {self.width}[, 1]), got {x.shape}")
        results: list[tuple[str, np.ndarray]] = []
        for start in range(0, len(x), batch_size):
            results.extend(decode(self.predict_probs(x[start : start + batch_size]), self.charset, self.lengths))
        return results

    def warm_up(self) -> None:
        """Trace the model's predict function now (two batch sizes, so the trace Keras keeps
        takes any batch size), not on the first real batch: ~0.4 s per trace here."""
        for n in (1, 2):
            self.read([np.full((self.height, self.width), 255, np.uint8)] * n)

    def predict_probs(self, x: np.ndarray) -> np.ndarray:
        """Model input ``float32 (B, height, width, 1)`` -> probabilities ``(B, T, n_classes + 1)``."""
        return np.asarray(self.model.predict_on_batch(x), dtype=np.float32)
