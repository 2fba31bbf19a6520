"""Train the CTC reader (:mod:`pipeline.crnn`) on labelled grey images and describe it for a manifest.

The caller owns the data split (``pipeline.dataset.split_indices``); the held-out part passed here
(``pipeline.train`` passes its selection images, never the validation ones) is used for early
stopping and for the figures written into the manifest entry.

Training is tuned for small CAPTCHA sets on a CPU: a small input (height 32), a compact model,
batch norm, a warm-up + cosine learning-rate schedule, and fresh geometric / noise augmentation
every epoch (cheap OpenCV on the already-prepared model inputs), so a few hundred images suffice.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from pipeline.bundle import sha256_file
from pipeline.crnn import FRAME_STRIDE, CtcLoss, build_crnn, decode, encode_labels
from pipeline.line_input import prepare_batch
from pipeline.report import edit_distance

log = logging.getLogger(__name__)

WEIGHTS_FILE = "ctc.weights.h5"
#: Optimiser updates a default training run aims for: captcha_v2 reached its best validation
#: accuracy after ~550 updates (batch 16) and plateaued by ~1,700.
TARGET_STEPS = 3000

#: Default cap, in seconds, on the CRNN's training when it goes on to further cycles
#: (:func:`another_cycle`): a first cycle always runs whole.
CYCLE_BUDGET_S = 900.0
#: Most learning-rate cycles of a default training run. A scheme made here
#: (``bench/synthetic.py``: 37 characters, 6-7 a text) read 41 % after one 60-epoch cycle, still
#: improving at its last epoch, 74 % after a second as long (session 20, ``bench/HISTORY.md``),
#: and 90 % after a single one of 150 epochs; captcha_v2 and wp_rsc stop improving within their
#: first cycle or read all their selection images right.
MAX_CYCLES = 3
#: A cycle whose best epoch falls in its last quarter was still improving.
LATE = 0.75
#: A further cycle's length over the one before (``pipeline.train --ctc-next-length``), and its
#: peak learning rate over the one before (``--ctc-next-peak``): twice as long at the same peak,
#: restarts with growing periods (SGDR's T_mult = 2). A CTC model's loss can sit near its start
#: for a third of a first cycle before it falls, by when the cosine has taken most of the rate
#: away. On three samples of ``bench/synthetic.py``'s scheme the CRNN read 85.2 / 93.3 / 88.1 %
#: of the validation files, against 67.4 / 91.9 / 88.1 % with cycles as long as the first at half
#: its peak, the rule before (``bench/HISTORY.md``, *The CRNN's budget*, session 27).
NEXT_LENGTH = 2.0
NEXT_PEAK = 1.0

#: Augmentation ranges, in model-input pixels at height 32 (scaled for other heights). They cover
#: what CAPTCHA generators vary (placement, slant, size, stroke contrast, noise, stray
#: strike-through lines) and are deliberately mild: on captcha_v2 a stronger set (90 % of images,
#: blur, ink contrast down to 0.6, +-4 degrees) slowed learning so much that 120 epochs reached
#: only 49 % validation accuracy, against 98 % in 12 epochs with this one.
AUGMENTATION: dict[str, Any] = {
    "probability": 0.5,  # share of training images augmented each time they are drawn
    "rotation_deg": 3.0,
    "shear": 0.1,
    "scale": (0.95, 1.05),
    "shift_x_px": 2.0,
    "shift_y_px": 1.5,
    "ink_contrast": (0.8, 1.0),  # multiplies the ink's darkness
    "noise_sigma": (0.0, 0.03),
    "line_probability": 0.2,  # a random thin curve across the image
    "blur_probability": 0.0,
}


def train_ctc_reader(
    train_grays: Sequence[np.ndarray],
    train_labels: Sequence[str],
    val_grays: Sequence[np.ndarray],
    val_labels: Sequence[str],
    *,
    charset: str,
    out_dir: Path,
    seed: int = 0,
    max_epochs: int | None = None,
    batch_size: int = 16,
    patience: int | None = None,
    time_budget_s: float | None = None,
    max_cycles: int = MAX_CYCLES,
    cycle_budget_s: float = CYCLE_BUDGET_S,
    next_length: float = NEXT_LENGTH,
    next_peak: float = NEXT_PEAK,
    height: int | None = None,
    learning_rate: float = 3e-3,
    architecture: dict[str, Any] | None = None,
    augment: bool = True,
    augment_probability: float | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train the CRNN, write ``out_dir / "ctc.weights.h5"`` and return its manifest entry.

    Args:
        train_grays, val_grays: grey ``uint8 (H, W)`` images (any size; scaled to ``height``).
        train_labels, val_labels: their texts, any lengths, characters from ``charset``.
        charset: the scheme's characters; index ``i`` is ``charset[i]``, blank is ``len(charset)``.
        out_dir: where the weights file goes (created if needed).
        seed: seeds Keras/TF, numpy and the augmentation.
        max_epochs: epochs of one cycle; the learning rate decays to ~0 over this many. None:
            enough epochs for about :data:`TARGET_STEPS` updates, between 6 and 60 (60 epochs on
            captcha_v2's 710 training images, 7 on wp_rsc's 6,700), so training time follows
            the number of updates rather than the size of the data set.
        batch_size: images per step; small batches give more updates per epoch, which is what
            matters on a few hundred images.
        patience: epochs without a better validation score before stopping (None: a third
            of ``max_epochs``, at least 3). The score is whole-text validation accuracy, ties
            broken by validation loss; the best weights are restored either way. A later cycle
            counts them from its own midpoint at the earliest (:func:`patience_from`), with the
            same patience: a third of the later cycle's own length instead changed nothing on
            three samples of ``bench/synthetic.py``'s scheme, where its second cycles' best
            epochs came 71-77 epochs in (``bench/HISTORY.md``, *The CRNN's budget*, session 28).
        time_budget_s: stop after the first epoch that ends past this many seconds.
        max_cycles, cycle_budget_s: a cycle that was still improving at its end (its best epoch
            in its last quarter, the selection images not all read right) is followed by another
            from its best weights, at ``next_peak`` times the peak learning rate, ``next_length``
            times as many epochs and with a one-epoch warm-up, while the next one is expected to
            end within ``cycle_budget_s`` seconds of the start and at most ``max_cycles`` run
            (:func:`another_cycle`). A scheme that needs more updates than :data:`TARGET_STEPS`
            then gets them, and one that does not pays nothing.
        height: model input height, a multiple of 8 (None: :func:`input_height`). The width
            follows from the widest training image's aspect ratio (a multiple of 4, at least
            enough frames for the longest label).
        learning_rate: peak Adam learning rate (after a warm-up of ~3 epochs).
        architecture: overrides of :func:`pipeline.crnn.build_crnn` keyword arguments.
        augment: apply :data:`AUGMENTATION` to the training images.
        augment_probability: the share of training images augmented each time they are drawn
            (None: :data:`AUGMENTATION`'s).
        verbose: Keras progress output (0 silent, 1 bar, 2 a line per epoch).

    Returns:
        the ``ctc`` reader entry for a bundle manifest (weights, sha256, architecture,
        blank_index, charset, validation figures, training details).
    """
    if len(train_grays) != len(train_labels) or len(val_grays) != len(val_labels):
        raise ValueError("each image set needs exactly one label per image")
    if not (1.0 <= next_length <= 8.0 and 0.0 < next_peak <= 1.0):
        raise ValueError(f"a further cycle needs a length of 1 to 8 times and a peak above 0 and at most 1 "
                         f"times the one before, got {next_length:g} and {next_peak:g}")
    if not train_grays or not val_grays:
        raise ValueError("training needs at least one training and one validation image")
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)

    if height is None:
        height = input_height([g.shape[0] for g in train_grays])
    if height % 8 or not 8 <= height <= 256:
        raise ValueError(f"the CRNN's input height must be a multiple of 8 from 8 to 256, got {height}")
    max_len = max(len(t) for t in [*train_labels, *val_labels])
    width = _model_width(train_grays, height=height, max_label_length=max_len)
    # Every builder argument is written out, defaults included, so the manifest still rebuilds
    # this exact network after build_crnn's defaults change.
    arch: dict[str, Any] = {
        name: param.default
        for name, param in inspect.signature(build_crnn).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    arch.update({"height": height, "width": width, "n_classes": len(charset)}, **(architecture or {}))
    arch = {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}  # JSON-friendly
    training, inference = build_crnn(**arch)

    x_train = prepare_batch(train_grays, height=height, width=width)
    y_train = encode_labels(train_labels, charset, max_length=max_len)
    x_val = prepare_batch(val_grays, height=height, width=width)
    y_val = encode_labels(val_labels, charset, max_length=max_len)

    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    if max_epochs is None:
        max_epochs = int(np.clip(math.ceil(TARGET_STEPS / steps_per_epoch), 6, 60))
    if patience is None:
        patience = max(3, max_epochs // 3)
    elif patience < 1:
        raise ValueError(f"patience must be at least 1 epoch, got {patience}")
    if augment_probability is not None and not 0.0 <= augment_probability <= 1.0:
        raise ValueError(f"the augmented share must be from 0 to 1, got {augment_probability}")
    augmentation = dict(AUGMENTATION) if augment else {}
    if augmentation and augment_probability is not None:
        augmentation["probability"] = augment_probability
    batches = _AugmentedBatches(x_train, y_train, batch_size=batch_size, rng=rng, augmentation=augmentation)
    best = _BestOnValidation(
        inference, x_val, list(val_labels), charset=charset, patience=patience, time_budget_s=time_budget_s
    )
    start = time.monotonic()
    cycles: list[dict[str, Any]] = []
    peak, done, epochs = learning_rate, 0, max_epochs
    while True:
        began = time.monotonic()
        # The first cycle warms up from a tenth of the peak (CTC on random weights is unstable at
        # full rate); a later one starts from trained weights and needs only one epoch of it.
        warmup_epochs = 3 if not cycles else 1
        _compile(training, peak=peak, steps=steps_per_epoch * epochs, warmup=steps_per_epoch * warmup_epochs,
                 blank_index=len(charset))
        best.patience_from = patience_from(done, epochs, first=not cycles)
        history = training.fit(
            batches,
            validation_data=(x_val, y_val),
            validation_batch_size=256,
            initial_epoch=done,
            epochs=done + epochs,
            callbacks=[best],
            verbose=verbose,
        )
        ran = len(history.history.get("loss", []))
        cycles.append({"epochs": ran, "planned_epochs": epochs, "peak_learning_rate": peak,
                       "seconds": round(time.monotonic() - began, 1),
                       "best_accuracy": best.best_score[0]})
        first, done = done, done + ran
        next_epochs = max(1, round(epochs * next_length))
        # The next cycle's expected time: this one's per epoch run (it may have stopped early), times its epochs.
        if best.stopped_by == "time_budget" or not another_cycle(
            best_epoch=best.best_epoch, cycle_first=first, cycle_epochs=epochs,
            best_accuracy=best.best_score[0], elapsed_s=time.monotonic() - start,
            cycle_s=(time.monotonic() - began) / max(1, ran) * next_epochs, budget_s=cycle_budget_s,
            cycles=len(cycles), max_cycles=max_cycles,
        ):
            break
        log.info("ctc reader: still improving at epoch %d (best %d, selection accuracy %.4f); another cycle",
                 done, best.best_epoch + 1, best.best_score[0])
        best.restore()
        peak *= next_peak
        epochs = next_epochs
    seconds = time.monotonic() - start
    best.restore()

    texts = [text for text, _ in decode(inference.predict(x_val, batch_size=256, verbose=0), charset)]
    accuracy, cer = exact_and_cer(texts, list(val_labels))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / WEIGHTS_FILE
    training.save_weights(weights)
    epochs_run = done
    log.info(
        "ctc reader: val accuracy %.4f, CER %.4f on %d images after %d epochs (best %d) in %.0f s",
        accuracy, cer, len(val_labels), epochs_run, best.best_epoch + 1, seconds,
    )
    return {
        "weights": WEIGHTS_FILE,
        "sha256": sha256_file(weights),
        "architecture": arch,
        "blank_index": len(charset),
        "charset": charset,
        "input": {"height": height, "width": width, "channels": 1, "layout": "NHWC float32 [0,1], ink dark"},
        "validation": {"images": len(val_labels), "accuracy": accuracy, "char_error_rate": cer},
        "training": {
            "images": len(train_labels),
            "epochs": epochs_run,
            "best_epoch": best.best_epoch + 1,
            "seconds": round(seconds, 1),
            "stopped_by": best.stopped_by,
            "seed": seed,
            "batch_size": batch_size,
            "max_epochs": max_epochs,
            "patience": patience,
            "patience_counts_from": "a later cycle's midpoint",  # train_ctc.patience_from, since session 29
            "learning_rate": {"peak": learning_rate, "schedule": "linear warm-up + cosine decay"},
            "cycles": cycles,
            "max_cycles": max_cycles,
            "cycle_budget_s": cycle_budget_s,
            "next_length": next_length,
            "next_peak": next_peak,
            "augmentation": augmentation,
        },
    }


def another_cycle(
    *, best_epoch: int, cycle_first: int, cycle_epochs: int, best_accuracy: float, elapsed_s: float,
    cycle_s: float, budget_s: float, cycles: int, max_cycles: int,
) -> bool:
    """Whether a cycle that has just ended is followed by another.

    Args:
        best_epoch: the best epoch so far (0-based, counted over all cycles).
        cycle_first, cycle_epochs: the ended cycle's first epoch (0-based) and its planned length.
        best_accuracy: the selection accuracy of the best epoch.
        elapsed_s, cycle_s: seconds since training began, and what the next cycle is expected to
            take (the ended cycle's seconds per epoch run, times the next one's planned epochs).
        budget_s: the next cycle must be expected to end by then.
        cycles, max_cycles: cycles run so far, and the most allowed.
    """
    if cycles >= max_cycles or best_accuracy >= 1.0:
        return False
    still_improving = best_epoch >= cycle_first + LATE * cycle_epochs
    return still_improving and elapsed_s + cycle_s <= budget_s


def patience_from(cycle_first: int, cycle_epochs: int, *, first: bool) -> int:
    """The epoch (0-based, over all cycles) from which a cycle's patience counts, at the earliest.

    A first cycle's counts from its start. A later one restarts from the best weights at a high
    rate, which first makes them worse, for longer than a third of a short first cycle: on
    ``bench/synthetic.py --scheme imagecaptcha`` (a 21-epoch first cycle, patience 7) every
    42-epoch second cycle was stopped after 8 epochs, before it could recover. So a later cycle's
    counts from its midpoint, where the cosine has taken half the rate away: those cycles then
    ran on and the CRNN read 92.89 / 91.11 % of two samples' validation files against 91.33 /
    87.78 % (``bench/HISTORY.md``, *The CRNN's budget*, session 29).
    """
    return cycle_first if first else cycle_first + cycle_epochs // 2


def _compile(training: keras.Model, *, peak: float, steps: int, warmup: int, blank_index: int) -> None:
    """A fresh Adam whose learning rate warms up linearly from a tenth of ``peak`` over
    ``warmup`` steps, then decays along a cosine to ~0 by ``steps``: late epochs polish instead
    of jumping around."""
    warmup = min(warmup, steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10,
        decay_steps=max(1, steps - warmup),
        alpha=0.01,
        warmup_target=peak,
        warmup_steps=warmup,
    )
    training.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule, clipnorm=5.0),
                     loss=CtcLoss(blank_index=blank_index))


def exact_and_cer(predicted: Sequence[str], truth: Sequence[str]) -> tuple[float, float]:
    """Whole-text exact-match accuracy and character error rate (edit distance / true chars)."""
    if not truth:
        return 0.0, 0.0
    exact = sum(p == t for p, t in zip(predicted, truth, strict=True))
    edits = sum(edit_distance(p, t) for p, t in zip(predicted, truth, strict=True))
    return exact / len(truth), edits / max(1, sum(len(t) for t in truth))


def input_height(heights: Sequence[int]) -> int:
    """The CRNN's default input height for images of these heights: their median, clipped to
    16..32 and rounded up to a multiple of 8 (the network pools height by 8): 32 for captcha_v2's
    50-pixel images, 24 for wp_rsc's, 32 for a 30-pixel scheme. Larger inputs cost time without
    helping (40 pixels did no better than 32 on captcha_v2); rounding down shrank small schemes'
    few-pixel glyphs further (``bench/HISTORY.md``, *The CRNN's input*, session 30)."""
    return int(math.ceil(float(np.clip(np.median(heights), 16, 32)) / 8)) * 8


def _model_width(grays: Sequence[np.ndarray], *, height: int, max_label_length: int) -> int:
    """Input width: the widest image at ``height``, rounded up to the frame stride.

    CTC needs at least ``2 * L + 1`` frames for a label of ``L`` characters that are all
    repeats ("aaaa" = a-blank-a-...), so narrow schemes get padding rather than too few frames.
    """
    widest = max(g.shape[1] * height / g.shape[0] for g in grays)
    min_frames = 2 * max_label_length + 1
    width = max(int(math.ceil(widest)), min_frames * FRAME_STRIDE)
    return int(math.ceil(width / FRAME_STRIDE) * FRAME_STRIDE)


class _AugmentedBatches(keras.utils.PyDataset):
    """Shuffled training batches, each image freshly augmented every time it is drawn."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        rng: np.random.Generator,
        augmentation: dict[str, Any],
    ) -> None:
        super().__init__()
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.rng = rng
        self.augmentation = augmentation
        self.order = rng.permutation(len(x))

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        picked = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        xb = self.x[picked].copy()
        if self.augmentation:
            for i in range(len(xb)):
                if self.rng.random() < self.augmentation["probability"]:
                    xb[i, :, :, 0] = augment_image(xb[i, :, :, 0], self.rng, **self.augmentation)
        return xb, self.y[picked]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(self.x))


def augment_image(
    img: np.ndarray,
    rng: np.random.Generator,
    *,
    rotation_deg: float,
    shear: float,
    scale: tuple[float, float],
    shift_x_px: float,
    shift_y_px: float,
    ink_contrast: tuple[float, float],
    noise_sigma: tuple[float, float],
    line_probability: float,
    blur_probability: float,
    **_: Any,
) -> np.ndarray:
    """One random CAPTCHA-like distortion of a prepared model input ``float32 (H, W)`` (bg 1.0)."""
    h, w = img.shape
    px = h / 32.0  # ranges are given for height 32
    # Rotate / scale about the ink's centre, so the text never swings out of the frame.
    ink = np.argwhere(img < 0.5)
    cy, cx = ink.mean(axis=0) if len(ink) else (h / 2, w / 2)
    m = cv2.getRotationMatrix2D(
        (float(cx), float(cy)), rng.uniform(-rotation_deg, rotation_deg), rng.uniform(*scale)
    )
    k = rng.uniform(-shear, shear)
    m[0, 1] += k
    m[0, 2] += -k * cy + rng.uniform(-shift_x_px, shift_x_px) * px
    m[1, 2] += rng.uniform(-shift_y_px, shift_y_px) * px
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=1.0)
    # Fainter or stronger ink relative to the background.
    out = 1.0 - (1.0 - out) * rng.uniform(*ink_contrast)
    if rng.random() < line_probability:
        xs = np.arange(0, w, 4, dtype=np.float32)
        y0, y1 = rng.uniform(0.2 * h, 0.8 * h, size=2)
        wave = rng.uniform(0, 0.15 * h) * np.sin(xs / w * rng.uniform(1, 4) * np.pi + rng.uniform(0, np.pi))
        ys = y0 + (y1 - y0) * xs / w + wave
        pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
        cv2.polylines(out, [pts], False, float(rng.uniform(0.0, 0.5)), thickness=1, lineType=cv2.LINE_AA)
    if rng.random() < blur_probability:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    sigma = rng.uniform(*noise_sigma)
    if sigma > 0:
        out = out + rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class _BestOnValidation(keras.callbacks.Callback):
    """Early stopping on whole-text validation accuracy (ties: lower loss), keeping the best weights.

    Keras's EarlyStopping watches one logged number; exact-match accuracy needs CTC decoding,
    so we compute it here from the shared inference model once per epoch.
    """

    def __init__(
        self,
        inference: keras.Model,
        x_val: np.ndarray,
        val_labels: list[str],
        *,
        charset: str,
        patience: int,
        time_budget_s: float | None,
    ) -> None:
        super().__init__()
        self.inference = inference
        self.x_val, self.val_labels = x_val, val_labels
        self.charset = charset
        self.patience = patience
        self.time_budget_s = time_budget_s
        self.best_score: tuple[float, float] = (-1.0, -math.inf)
        self.best_epoch = 0
        self.best_weights: list[np.ndarray] | None = None
        self.stopped_by = "max_epochs"
        self.start = time.monotonic()
        self.patience_from = 0  # the epoch from which patience counts, at the earliest (:func:`patience_from`)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.stopped_by = "max_epochs"  # each cycle is a fit of its own; the budget counts from the first

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs if logs is not None else {}
        probs = self.inference.predict(self.x_val, batch_size=256, verbose=0)
        texts = [text for text, _ in decode(probs, self.charset)]
        accuracy, cer = exact_and_cer(texts, self.val_labels)
        logs["val_accuracy"], logs["val_cer"] = accuracy, cer
        val_loss = float(logs.get("val_loss", math.inf))
        score = (accuracy, -val_loss if math.isfinite(val_loss) else -math.inf)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self.best_weights = self.model.get_weights()
        log.debug("epoch %d: val accuracy %.4f, CER %.4f, val loss %.4f", epoch + 1, accuracy, cer, val_loss)
        if epoch - max(self.best_epoch, self.patience_from) >= self.patience:
            self.stopped_by = "patience"
            self.model.stop_training = True
        elif self.time_budget_s is not None and time.monotonic() - self.start > self.time_budget_s:
            self.stopped_by = "time_budget"
            self.model.stop_training = True

    def restore(self) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
