"""Tests of the CTC reader: builder, CTC loss and decoding, pre-processing, a tiny training run.

Everything here is synthetic and seeded (no data sets, no network) and runs in well under a
minute on two cores; tiny model configurations keep the Keras parts fast.
"""

from __future__ import annotations

import itertools
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from pipeline.bundle import MANIFEST, BundleError, load_bundle
from pipeline.crnn import (
    PAD_LABEL,
    CtcLoss,
    CtcReader,
    _best_path_runs,
    best_path_of_length,
    build_crnn,
    decode,
    encode_labels,
)
from pipeline.line_input import prepare_batch
from pipeline.train_ctc import another_cycle, augment_image, exact_and_cer, patience_from, train_ctc_reader

TINY = {"height": 16, "width": 48, "n_classes": 10, "conv_filters": (4, 8), "rnn_units": (8,), "dense_units": 8}
DIGITS = "0123456789"


def _probs(frames: list[int | tuple[int, float]], n_out: int) -> np.ndarray:
    """Probabilities ``(T, n_out)``: each frame puts ``p`` (default 0.9) on its class, the rest evenly."""
    out = np.empty((len(frames), n_out), dtype=np.float32)
    for t, frame in enumerate(frames):
        cls, p = frame if isinstance(frame, tuple) else (frame, 0.9)
        out[t] = (1.0 - p) / (n_out - 1)
        out[t, cls] = p
    return out


def _render(text: str, *, height: int = 24, width: int = 80, ink: int = 0, paper: int = 255) -> np.ndarray:
    """A grey uint8 image of ``text`` in a plain OpenCV font."""
    img = np.full((height, width), paper, dtype=np.uint8)
    cv2.putText(img, text, (3, height - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ink, 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------------------------- builder


def test_build_crnn_shapes_and_names() -> None:
    training, inference = build_crnn(**TINY)
    x = np.random.default_rng(0).random((3, 16, 48, 1), dtype=np.float32)
    logits = np.asarray(training.predict_on_batch(x))
    probs = np.asarray(inference.predict_on_batch(x))
    assert logits.shape == (3, 48 // 4, 11)  # T = width / 4; n_classes + 1 outputs, blank last
    assert probs.shape == (3, 12, 11)
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    # The inference model is the training graph plus a softmax: same layer objects.
    assert inference.get_layer("logits") is training.get_layer("logits")
    assert {"conv1", "bn1", "pool2", "frames", "project", "rnn1", "logits", "probs"} <= {
        layer.name for layer in inference.layers
    }


def test_build_crnn_gru_and_two_rnn_layers() -> None:
    _, inference = build_crnn(**{**TINY, "rnn_units": (8, 6), "rnn_cell": "gru", "conv_filters": (4, 4, 8)})
    assert inference.output_shape == (None, 12, 11)


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_classes": 0},  # no characters
        {"rnn_units": ()},  # no recurrent layer
        {"rnn_cell": "transformer"},  # unknown cell
        {"height": 2},  # three pools cannot fit
    ],
)
def test_build_crnn_rejects_bad_configs(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_crnn(**{**TINY, "conv_filters": (4, 4, 8), **overrides})


def test_weights_round_trip_gives_same_outputs(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    training, inference = build_crnn(**TINY)
    x = np.random.default_rng(1).random((2, 16, 48, 1), dtype=np.float32)
    expected = np.asarray(inference.predict_on_batch(x))
    training.save_weights(tmp_path / "ctc.weights.h5")

    keras.utils.set_random_seed(2)  # different initial weights, overwritten by the load
    reader = CtcReader.from_weights(tmp_path / "ctc.weights.h5", charset=DIGITS, architecture=dict(TINY))
    np.testing.assert_allclose(reader.predict_probs(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("architecture", [TINY, {**TINY, "height": 24, "width": 52, "conv_filters": (4, 8, 8)}])
def test_the_reading_form_is_the_trained_network(tmp_path: Path, architecture: dict) -> None:
    """``from_weights`` reads with batch normalisation folded and the first block on cells; with
    normalisation statistics away from their initial values it still gives the same outputs."""
    keras.utils.set_random_seed(3)
    training, inference = build_crnn(**architecture)
    rng = np.random.default_rng(3)
    for layer in training.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.2, 3.0, n)])
    x = rng.random((3, architecture["height"], architecture["width"], 1), dtype=np.float32)
    expected = np.asarray(inference.predict_on_batch(x))
    training.save_weights(tmp_path / "ctc.weights.h5")
    reader = CtcReader.from_weights(tmp_path / "ctc.weights.h5", charset=DIGITS, architecture=dict(architecture))
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in reader.model.layers)
    assert reader.model.get_layer("conv1").kernel.shape[:2] == (2, 2)
    np.testing.assert_allclose(reader.predict_probs(x), expected, rtol=1e-4, atol=1e-5)


def _write_bundle(folder: Path, entry: dict[str, object]) -> None:
    manifest = {"charset": DIGITS, "lengths": [3], "image_height": 16, "readers": {"ctc": entry}}
    (folder / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")


def test_reader_from_bundle_verifies_hash(tmp_path: Path) -> None:
    training, _ = build_crnn(**TINY)
    training.save_weights(tmp_path / "ctc.weights.h5")
    from pipeline.bundle import sha256_file

    entry = {
        "weights": "ctc.weights.h5",
        "sha256": sha256_file(tmp_path / "ctc.weights.h5"),
        "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
        "blank_index": 10,
        "charset": DIGITS,
    }
    _write_bundle(tmp_path, entry)
    reader = CtcReader.from_bundle(load_bundle(tmp_path))
    assert reader.lengths == (3,)  # the bundle's: readings are kept to them
    results = reader.read([_render("123"), _render("45", width=40)], batch_size=1)
    assert len(results) == 2 and all(isinstance(text, str) for text, _ in results)
    assert all(conf.shape == (len(text),) for text, conf in results)
    # Inputs made elsewhere (the workers) read the same, with or without the channel axis.
    x = prepare_batch([_render("123"), _render("45", width=40)], height=16, width=48)
    for inputs in (x, x[..., 0]):
        again = reader.read_inputs(inputs)
        assert [t for t, _ in again] == [t for t, _ in results]
        assert all(np.allclose(a, b) for (_, a), (_, b) in zip(again, results, strict=True))
    with pytest.raises(ValueError, match="expected inputs of shape"):
        reader.read_inputs(np.zeros((1, 16, 40), np.float32))

    _write_bundle(tmp_path, {**entry, "sha256": "0" * 64})
    with pytest.raises(BundleError, match="does not match"):
        CtcReader.from_bundle(load_bundle(tmp_path))


# ------------------------------------------------------------------------------- decoding

B = 3  # blank index of a 3-character charset "abc"


@pytest.mark.parametrize(
    ("frames", "text"),
    [
        ([0, 1, 2], "abc"),  # one frame per character
        ([0, 0, 0, 1, 1], "ab"),  # repeats within a run merge
        ([0, 0, B, 0], "aa"),  # a blank separates a true double letter
        ([B, B, 2, B, B], "c"),  # leading and trailing blanks
        ([B, B, B, B], ""),  # all blank -> empty text
        ([0, 1, 0, 1], "abab"),  # alternation needs no blank
        ([B, 1, B, 1, 1, B, 1], "bbb"),
    ],
)
def test_decode_exact_texts(frames: list[int], text: str) -> None:
    [(got, conf)] = decode(_probs(frames, 4)[None], "abc")
    assert got == text
    assert conf.dtype == np.float32 and conf.shape == (len(text),)


def test_decode_confidence_is_run_maximum() -> None:
    # "a" over frames 0-2 peaking at 0.8, blank, "a" at 0.6, "c" at 0.7 then 0.95.
    frames = [(0, 0.5), (0, 0.8), (0, 0.7), (B, 0.9), (0, 0.6), (2, 0.7), (2, 0.95)]
    [(text, conf)] = decode(_probs(frames, 4)[None], "abc")
    assert text == "aac"
    np.testing.assert_allclose(conf, [0.8, 0.6, 0.95], rtol=1e-6)


def test_decode_variable_lengths_in_one_batch() -> None:
    batch = np.stack(
        [
            _probs([0, B, 1, B, 2, B], 4),
            _probs([B, B, B, B, B, B], 4),
            _probs([2, 2, B, 2, 1, 0], 4),
        ]
    )
    assert [text for text, _ in decode(batch, "abc")] == ["abc", "", "ccba"]


def test_decode_rejects_wrong_class_count() -> None:
    with pytest.raises(ValueError, match="charset"):
        decode(np.zeros((1, 5, 4), dtype=np.float32), "abcd")  # needs 5 outputs with the blank
    assert decode(np.zeros((0, 5, 4), dtype=np.float32), "abc") == []


def test_numpy_best_path_agrees_with_keras_ctc_decode() -> None:
    """The confidences' numpy best path emits exactly what keras.ops.ctc_decode emits."""
    rng = np.random.default_rng(0)
    # Peaky random distributions with many blanks, as a trained CTC model produces.
    logits = rng.normal(size=(64, 20, 6)) * 3.0
    logits[..., -1] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    decoded, _ = keras.ops.ctc_decode(probs.astype(np.float32), np.full(64, 20), strategy="greedy", mask_index=5)
    keras_paths = keras.ops.convert_to_numpy(decoded)[0]
    for b, classes, conf in _best_path_runs(probs, blank=5):
        np.testing.assert_array_equal(classes, keras_paths[b][keras_paths[b] >= 0])
        assert len(conf) == len(classes)


@pytest.mark.parametrize(
    ("frames", "lengths", "text"),
    [
        # "aab" read "ab": the blank between the a's lost to a second "a" frame; the best
        # three-letter path puts the blank back where it is likeliest.
        ([(0, 0.9), (0, 0.5), (0, 0.9), (1, 0.9)], (3,), "aab"),
        # One letter too many: the weakest run of a letter gives way to the blank.
        ([(0, 0.9), B, (1, 0.4), B, (2, 0.9)], (2,), "ac"),
        # A letter lost to the blank comes back: its frame's runner-up.
        ([(0, 0.9), (B, 0.5), (2, 0.9)], (3,), "a?c"),
        # An allowed length is left as it is, whatever else is allowed.
        ([0, B, 1], (2, 3), "ab"),
        # Of several allowed lengths, the likelier path wins: dropping the weak "b" costs less
        # than a fourth letter in the closing blank frame.
        ([(0, 0.9), (1, 0.3), (2, 0.9), B], (2, 4), "ac"),
        # No path of T frames spells more than T letters: the greedy reading stays.
        ([0, 1], (3,), "ab"),
    ],
)
def test_decode_keeps_readings_to_the_schemes_lengths(frames: list, lengths: tuple[int, ...], text: str) -> None:
    probs = _probs(frames, 4)
    if "?" in text:  # the lost letter: whichever class is the blank frame's runner-up
        probs[1, :B] = [0.1, 0.3, 0.1]
        probs[1] /= probs[1].sum()
        text = text.replace("?", "b")
    [(got, conf)] = decode(probs[None], "abc", lengths)
    assert got == text
    assert conf.dtype == np.float32 and conf.shape == (len(text),)
    # Without lengths, the greedy reading.
    [(greedy, _)] = decode(probs[None], "abc")
    assert (got == greedy) == (len(greedy) in lengths or len(frames) < min(lengths))


def test_best_path_of_length_is_the_best_path_of_that_length() -> None:
    """Against every path of a few frames: the Viterbi's path spells n letters and no path that
    spells n letters is more probable."""

    def spelled(path: tuple[int, ...], blank: int) -> int:
        return sum(1 for t, c in enumerate(path) if c != blank and (t == 0 or path[t - 1] != c))

    rng = np.random.default_rng(0)
    for _ in range(60):
        frames, classes = int(rng.integers(1, 6)), int(rng.integers(2, 4))
        blank = classes - 1
        logp = np.log(rng.dirichlet(np.ones(classes), size=frames))
        paths = list(itertools.product(range(classes), repeat=frames))
        for n in range(frames + 2):
            scores = [sum(logp[t, c] for t, c in enumerate(p)) for p in paths if spelled(p, blank) == n]
            found = best_path_of_length(logp, n, blank=blank)
            if not scores:
                assert found is None
                continue
            assert found is not None
            total, path = found
            assert spelled(tuple(path.tolist()), blank) == n
            assert total == pytest.approx(max(scores))
            assert total == pytest.approx(float(logp[np.arange(frames), path].sum()))


# ---------------------------------------------------------------------------------- labels / loss


def test_encode_labels_pads_and_checks() -> None:
    np.testing.assert_array_equal(encode_labels(["ab", "c"], "abc"), [[0, 1], [2, PAD_LABEL]])
    assert encode_labels(["ab"], "abc", max_length=4).shape == (1, 4)
    with pytest.raises(ValueError, match="outside the charset"):
        encode_labels(["abz"], "abc")
    with pytest.raises(ValueError, match="max_length"):
        encode_labels(["abcabc"], "abc", max_length=4)


def test_ctc_loss_padded_batch_equals_separate_losses() -> None:
    """A 4- and a 6-character label in one padded batch each get their own, unpadded loss."""
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 16, 11)).astype(np.float32)
    labels = encode_labels(["1234", "567890"], DIGITS)
    loss = CtcLoss(blank_index=10, reduction=None)
    together = keras.ops.convert_to_numpy(loss(labels, logits))
    alone = [keras.ops.convert_to_numpy(loss(encode_labels([t], DIGITS), logits[i : i + 1]))[0]
             for i, t in enumerate(["1234", "567890"])]
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    assert np.all(np.isfinite(together)) and np.all(together > 0)


# ---------------------------------------------------------------------------------- pre-processing


def test_prepare_batch_shapes_range_and_sizes() -> None:
    grays = [_render("12"), _render("3456", height=50, width=200), _render("7", height=12, width=20)]
    x = prepare_batch(grays, height=32, width=128)
    assert x.shape == (3, 32, 128, 1) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # Ink is dark, background (including the right padding) is 1.
    for img in x[..., 0]:
        assert img.min() < 0.3
        np.testing.assert_allclose(img[:, -2:], 1.0, atol=1e-3)
    # The 80x24 image scales to 107 columns; the rest is padding of exactly the background.
    assert np.all(x[0, :, 108:, 0] == 1.0)


def test_prepare_batch_dark_background_matches_light() -> None:
    light = _render("2468")
    dark = _render("2468", ink=230, paper=20)
    x = prepare_batch([light, dark], height=32, width=128)
    # After polarity and contrast normalisation, both come out dark-on-light and nearly equal.
    assert np.abs(x[0] - x[1]).mean() < 0.02


def test_prepare_batch_squeezes_too_wide_images() -> None:
    wide = np.full((24, 400), 255, dtype=np.uint8)
    wide[4:20, 385:392] = 0  # a mark near the right edge, as the last character of a long text
    x = prepare_batch([wide], height=16, width=48)
    # Squeezed, not clipped: the mark is still in the frame, near its right edge.
    assert x[0, :, 42:, 0].min() < 0.5


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), dtype=np.float32),  # not uint8
        np.zeros((10, 10, 3), dtype=np.uint8),  # colour, not grey
        np.zeros((0, 10), dtype=np.uint8),  # empty
    ],
)
def test_prepare_batch_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        prepare_batch([bad], height=16, width=48)


def test_augment_image_keeps_contract() -> None:
    from pipeline.train_ctc import AUGMENTATION

    img = prepare_batch([_render("123")], height=32, width=128)[0, :, :, 0]
    rng = np.random.default_rng(0)
    out = augment_image(img, rng, **AUGMENTATION)
    assert out.shape == img.shape and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert not np.array_equal(out, img)
    assert img.min() < 0.3  # the input is untouched


# ---------------------------------------------------------------------------------- training


def _synthetic(n: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Rendered digit strings of lengths 3 and 5 mixed."""
    rng = np.random.default_rng(seed)
    labels = ["".join(rng.choice(list(DIGITS), size=3 if i % 2 else 5)) for i in range(n)]
    return [_render(t) for t in labels], labels


def test_training_steps_reduce_ctc_loss_on_mixed_lengths() -> None:
    keras.utils.set_random_seed(0)
    grays, labels = _synthetic(16, seed=0)
    training, _ = build_crnn(**{**TINY, "height": 24, "width": 80, "dropout": 0.0})
    training.compile(optimizer=keras.optimizers.Adam(3e-3), loss=CtcLoss(blank_index=10))
    x = prepare_batch(grays, height=24, width=80)
    y = encode_labels(labels, DIGITS)
    assert set((y >= 0).sum(axis=1)) == {3, 5}
    losses = [float(training.train_on_batch(x, y)) for _ in range(25)]
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


def test_train_ctc_reader_writes_weights_and_entry(tmp_path: Path) -> None:
    train_grays, train_labels = _synthetic(24, seed=1)
    val_grays, val_labels = _synthetic(6, seed=2)
    entry = train_ctc_reader(
        train_grays, train_labels, val_grays, val_labels,
        charset=DIGITS, out_dir=tmp_path, max_epochs=2, batch_size=12, patience=5, height=16,
        architecture={"conv_filters": (4, 8), "rnn_units": (8,), "dense_units": 8}, verbose=0,
    )
    from pipeline.bundle import sha256_file

    assert entry["sha256"] == sha256_file(tmp_path / entry["weights"])
    assert entry["blank_index"] == len(DIGITS) == entry["architecture"]["n_classes"]
    assert entry["architecture"]["height"] == 16 and entry["architecture"]["width"] % 4 == 0
    # Defaults are written out too, so the entry does not depend on build_crnn's defaults.
    assert {"dropout", "rnn_cell", "conv_filters"} <= entry["architecture"].keys()
    assert entry["validation"]["images"] == 6
    assert 0.0 <= entry["validation"]["accuracy"] <= 1.0
    assert entry["training"]["epochs"] == 2
    json.dumps(entry)  # the entry goes into a JSON manifest as is
    reader = CtcReader.from_weights(tmp_path / entry["weights"], charset=DIGITS, architecture=entry["architecture"])
    assert len(reader.read(val_grays)) == 6


# best epoch (0-based, over all cycles), accuracy, seconds so far, this cycle's, cycles run -> another?
# The ended cycle ran epochs 10-19 (planned 10), under a 100 s budget, at most 3 cycles.
CYCLE_CASES = [
    (19, 0.8, 40.0, 20.0, 2, True),  # best at the last epoch, time for one more
    (18, 0.8, 40.0, 20.0, 2, True),  # in the last quarter (17.5 and later)
    (17, 0.8, 40.0, 20.0, 2, False),  # just before it
    (15, 0.8, 40.0, 20.0, 2, False),  # improved early in the cycle, then not: done
    (19, 1.0, 40.0, 20.0, 2, False),  # every selection image right: nothing to gain
    (19, 0.8, 85.0, 20.0, 2, False),  # the next cycle would end past the budget
    (19, 0.8, 80.0, 20.0, 2, True),  # ... and exactly at it
    (19, 0.8, 40.0, 20.0, 3, False),  # the most cycles have run
]


@pytest.mark.parametrize(("best_epoch", "accuracy", "elapsed", "cycle_s", "cycles", "expected"), CYCLE_CASES)
def test_another_cycle(best_epoch: int, accuracy: float, elapsed: float, cycle_s: float, cycles: int,
                       expected: bool) -> None:
    assert another_cycle(best_epoch=best_epoch, cycle_first=10, cycle_epochs=10, best_accuracy=accuracy,
                         elapsed_s=elapsed, cycle_s=cycle_s, budget_s=100.0, cycles=cycles,
                         max_cycles=3) is expected


@pytest.mark.parametrize(
    ("cycle_first", "cycle_epochs", "first", "expected"),
    [
        (0, 21, True, 0),  # a first cycle: patience counts from its start
        (21, 42, False, 42),  # a later one: from its midpoint
        (21, 43, False, 42),  # (rounded down)
        (63, 84, False, 105),
        (5, 1, False, 5),  # a one-epoch cycle has no earlier midpoint
    ],
)
def test_patience_counts_from_a_later_cycles_midpoint(cycle_first: int, cycle_epochs: int, first: bool,
                                                      expected: int) -> None:
    assert patience_from(cycle_first, cycle_epochs, first=first) == expected


@pytest.mark.parametrize(("next_length", "next_peak"), [(2.0, 1.0), (1.0, 0.5)])
def test_train_ctc_reader_cycles_follow_the_rule(tmp_path: Path, next_length: float, next_peak: float) -> None:
    """Cycles as recorded in the entry: each after the first follows a cycle that
    :func:`another_cycle` said to extend, ``next_length`` times as long at ``next_peak`` times its
    peak (by default twice as long, at the same peak; before session 27 as long, at half), and the
    epochs add up."""
    train_grays, train_labels = _synthetic(24, seed=1)
    val_grays, val_labels = _synthetic(6, seed=2)
    entry = train_ctc_reader(
        train_grays, train_labels, val_grays, val_labels,
        charset=DIGITS, out_dir=tmp_path, max_epochs=2, batch_size=12, patience=5, height=16, max_cycles=3,
        cycle_budget_s=1e6, architecture={"conv_filters": (4, 8), "rnn_units": (8,), "dense_units": 8}, verbose=0,
        **({} if next_length == 2.0 else {"next_length": next_length, "next_peak": next_peak}),
    )
    training = entry["training"]
    cycles = training["cycles"]
    assert 1 <= len(cycles) <= 3 and training["max_cycles"] == 3
    assert (training["next_length"], training["next_peak"]) == (next_length, next_peak)
    assert sum(c["epochs"] for c in cycles) == training["epochs"]
    assert [c["peak_learning_rate"] for c in cycles] == [3e-3 * next_peak**i for i in range(len(cycles))]
    assert [c["planned_epochs"] for c in cycles] == [round(2 * next_length**i) for i in range(len(cycles))]
    # A later cycle's patience (5) counts from its midpoint: none of these short cycles can stop early.
    assert all(c["epochs"] == c["planned_epochs"] for c in cycles[1:])
    # Tiny data never reads every selection image right here, and a 2- or 4-epoch cycle ends
    # "late" exactly when its last epoch is the best so far: a cycle stops the run only without that.
    assert all(c["best_accuracy"] < 1.0 for c in cycles)
    if len(cycles) < 3:
        assert training["best_epoch"] <= training["epochs"] - 1


def test_patience_must_be_an_epoch_or_more(tmp_path: Path) -> None:
    grays, labels = _synthetic(2, seed=1)
    with pytest.raises(ValueError, match="patience must be at least 1 epoch, got 0"):
        train_ctc_reader(grays, labels, grays, labels, charset=DIGITS, out_dir=tmp_path, patience=0, verbose=0)


@pytest.mark.parametrize(("next_length", "next_peak"), [(0.5, 1.0), (9.0, 1.0), (2.0, 0.0), (2.0, 1.5)])
def test_further_cycles_must_not_shrink_or_rise(tmp_path: Path, next_length: float, next_peak: float) -> None:
    grays, labels = _synthetic(2, seed=1)
    with pytest.raises(ValueError, match="a further cycle needs"):
        train_ctc_reader(grays, labels, grays, labels, charset=DIGITS, out_dir=tmp_path, next_length=next_length,
                         next_peak=next_peak, verbose=0)


def test_exact_and_cer() -> None:
    assert exact_and_cer(["abc", "abd", ""], ["abc", "abc", "ab"]) == (pytest.approx(1 / 3), pytest.approx(3 / 8))


@pytest.mark.parametrize(("heights", "expected"), [
    ([50, 50, 50], 32),  # captcha_v2: larger images are shrunk to 32
    ([24, 24], 24),  # wp_rsc: a multiple of 8 stays
    ([30, 30, 31], 32),  # a small scheme is rounded up, never shrunk (24 before session 30)
    ([20], 24),
    ([12, 12], 16),  # the least
    ([60, 30, 30], 32),  # the median decides
    ([400], 32),
])
def test_the_crnn_input_height_rounds_small_schemes_up(heights: list[int], expected: int):
    from pipeline.train_ctc import input_height

    assert input_height(heights) == expected
