"""The glyph CNN builder and its loading from a bundle, old manifests included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline import glyph_cnn, lite
from pipeline.batches import prepare_file
from pipeline.bundle import DEFAULT_MODEL, Bundle, load_bundle, sha256_file
from pipeline.config import StageParams
from pipeline.glyph_cnn import (
    GlyphClassifier,
    build_glyph_cnn,
    cpu_has_bf16,
    for_reading,
    resolve_engine,
    resolve_precision,
)
from pipeline.recognize import read_segments
from pipeline.train_glyph import ensemble_of
from tests.conftest import ROOT


def _bundle(folder: Path, model, architecture: dict) -> Bundle:
    weights = folder / "glyph.weights.h5"
    model.save_weights(str(weights))
    entry = {"weights": weights.name, "sha256": sha256_file(weights), "architecture": architecture}
    return Bundle(path=folder, manifest={"charset": "ab", "lengths": [2], "image_height": 20,
                                         "readers": {"glyph": entry}})


def _trained_looking(model, seed: int):
    """Batch-normalisation statistics away from their initial values, so that folding has something
    to get wrong."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.2, 3.0, n)])
    return model


def test_default_network_shapes_and_probabilities():
    model = build_glyph_cnn(size=20, n_classes=3)
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [layer.name for layer in convs] == ["conv1", "conv2", "conv3a", "conv3b"]  # two in the last block
    probs = np.asarray(model.predict_on_batch(np.random.default_rng(0).random((4, 20, 20, 1), dtype=np.float32)))
    assert probs.shape == (4, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(("convs", "names"), [
    (1, ["conv1", "conv2", "conv3"]),
    ([1, 2, 2], ["conv1", "conv2a", "conv2b", "conv3a", "conv3b"]),
    ((2, 1, 1), ["conv1a", "conv1b", "conv2", "conv3"]),
])
def test_convolutions_per_block(convs, names):
    model = build_glyph_cnn(size=16, n_classes=2, convs=convs)
    assert [layer.name for layer in model.layers if layer.__class__.__name__ == "Conv2D"] == names


def test_one_count_per_block_or_a_clear_error():
    with pytest.raises(ValueError, match="2 counts for 3 blocks"):
        build_glyph_cnn(size=16, n_classes=2, convs=(1, 2))


def test_a_manifest_from_before_batch_norm_rebuilds_its_own_network(tmp_path: Path):
    """Bundles written before ``convs`` / ``batch_norm`` existed list neither: they must load into
    the one-convolution, no-normalisation network their weights came from, and read the same."""
    old = build_glyph_cnn(size=16, n_classes=2, convs=1, batch_norm=False)
    architecture = {"size": 16, "n_classes": 2, "filters": [16, 32, 64], "dense": 128, "dropout": 0.3}
    classifier = GlyphClassifier.from_bundle(_bundle(tmp_path, old, architecture))
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in classifier.model.layers)
    crops = np.random.default_rng(1).random((5, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(classifier.predict(crops), np.asarray(old.predict_on_batch(crops[..., None])),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("convs", [2, [1, 2, 2]])  # as JSON manifests hold them
def test_a_current_manifest_round_trips_and_reads_with_normalisation_folded(tmp_path: Path, convs):
    model = _trained_looking(build_glyph_cnn(size=16, n_classes=2, convs=convs), 3)
    architecture = {"size": 16, "n_classes": 2, "filters": [16, 32, 64], "convs": convs, "batch_norm": True,
                    "dense": 128, "dropout": 0.3}
    classifier = GlyphClassifier.from_bundle(_bundle(tmp_path, model, architecture))
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in classifier.model.layers)
    crops = np.random.default_rng(2).random((5, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(classifier.predict(crops), np.asarray(model.predict_on_batch(crops[..., None])),
                               rtol=1e-5, atol=1e-6)


def test_members_average_their_networks_and_fold_like_one(tmp_path: Path):
    """An ensemble is one model: member k's layers carry an ``m<k>_`` prefix and hold network k's
    weights; its output is the mean of the members' probabilities, also after folding."""
    architecture = {"size": 16, "n_classes": 2, "filters": [16, 32, 64], "convs": [1, 1, 2], "batch_norm": True,
                    "dense": 128, "dropout": 0.3, "members": 2}
    singles = [_trained_looking(build_glyph_cnn(**{**architecture, "members": 1}), seed) for seed in (4, 5)]
    model = ensemble_of(singles, architecture)
    names = [layer.name for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert sorted(names) == [f"m{k}_{c}" for k in (1, 2) for c in ("conv1", "conv2", "conv3a", "conv3b")]
    crops = np.random.default_rng(6).random((5, 16, 16), dtype=np.float32)
    each = [np.asarray(m.predict_on_batch(crops[..., None])) for m in singles]
    assert np.abs(each[0] - each[1]).max() > 1e-3  # two different networks
    mean = (each[0] + each[1]) / 2
    np.testing.assert_allclose(np.asarray(model.predict_on_batch(crops[..., None])), mean, rtol=1e-5, atol=1e-6)
    classifier = GlyphClassifier.from_bundle(_bundle(tmp_path, model, architecture))
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in classifier.model.layers)
    np.testing.assert_allclose(classifier.predict(crops), mean, rtol=1e-5, atol=1e-6)
    half = GlyphClassifier.from_bundle(_bundle(tmp_path, model, architecture), precision="bfloat16")
    assert all(layer.compute_dtype == "float32" for layer in half.model.layers if layer.name.endswith("probs"))
    np.testing.assert_allclose(half.predict(crops), mean, atol=0.05)


def test_a_two_channel_network_reads_two_channel_crops(tmp_path: Path):
    architecture = {"size": 16, "n_classes": 2, "filters": [16, 32, 64], "convs": [1, 1, 2], "batch_norm": True,
                    "dense": 128, "dropout": 0.3, "channels": 2}
    model = _trained_looking(build_glyph_cnn(**architecture), 7)
    classifier = GlyphClassifier.from_bundle(_bundle(tmp_path, model, architecture))
    classifier.warm_up()
    crops = np.random.default_rng(8).random((5, 16, 16, 2), dtype=np.float32)
    np.testing.assert_allclose(classifier.predict(crops), np.asarray(model.predict_on_batch(crops)),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("size", "convs"), [
    (20, [1, 1, 2]),  # the shipped shape: 20 -> 10 -> 5, the last block's 5x5 maps trimmed to 4x4
    (28, [1, 1, 2]),  # 7x7 in the last block
    (21, [2, 1, 1]),  # an odd crop: cells padded differently; two convolutions before the cells
    (16, 1),  # nothing to trim
])
@pytest.mark.parametrize("cells", [True, False])
def test_the_reading_form_is_the_same_function(size: int, convs, cells: bool):
    """``for_reading``: normalisation folded, the last block trimmed to what its pooling reads, and
    (with ``cells``) the first block on 2x2 cells; the same outputs as the trained network."""
    arch = {"size": size, "n_classes": 3, "filters": [16, 32, 64], "convs": convs, "batch_norm": True,
            "dense": 128, "dropout": 0.3, "members": 1, "channels": 3}
    full = _trained_looking(build_glyph_cnn(**arch), 9)
    fast = for_reading(full, arch, cells=cells)
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in fast.layers)
    side = size // 4  # the last block's maps
    last = "conv3" if convs == 1 or convs[-1] == 1 else "conv3b"
    assert fast.get_layer(last).output.shape[1:3] == ((side - 1,) * 2 if side % 2 else (side, side))
    first = "conv1" if convs == 1 or convs[0] == 1 else "conv1b"
    assert fast.get_layer(first).kernel.shape[:2] == ((2, 2) if cells else (3, 3))  # on cells, or not
    crops = np.random.default_rng(10).random((6, size, size, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(fast.predict_on_batch(crops)),
                               np.asarray(full.predict_on_batch(crops)), rtol=1e-5, atol=1e-6)


def test_members_must_be_at_least_one():
    with pytest.raises(ValueError, match="members must be at least 1"):
        build_glyph_cnn(size=16, n_classes=2, members=0)


@pytest.mark.parametrize(("text", "expected"), [
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_bf16 amx_tile\n", True),
    ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n", False),
    ("processor\t: 0\nmodel name\t: avx512_bf16 in a name is not a flag\n", False),
    ("", False),
])
def test_native_bfloat16_comes_from_the_cpu_flags(tmp_path: Path, text: str, expected: bool):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text, encoding="ascii")
    assert cpu_has_bf16(cpuinfo) is expected


def test_no_cpuinfo_means_float32(tmp_path: Path):
    assert cpu_has_bf16(tmp_path / "absent") is False
    assert resolve_precision("float32") == "float32"
    assert resolve_precision("bfloat16") == "bfloat16"
    assert resolve_precision("auto") in ("float32", "bfloat16")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half")


@pytest.mark.parametrize(("native", "has_lite", "engine", "expected"), [
    (True, True, "auto", "float32"),  # Lite in float32 beats Keras in bfloat16 in a run
    (True, True, "lite", "float32"),
    (True, True, "keras", "bfloat16"),
    (True, False, "auto", "bfloat16"),
    (True, False, "lite", "float32"),  # asked for Lite: float32, and loading says Lite is missing
    (False, True, "auto", "float32"),
    (False, True, "keras", "float32"),
    (False, False, "auto", "float32"),
])
def test_auto_precision_follows_the_engine_then_the_cpu(monkeypatch: pytest.MonkeyPatch, native: bool,
                                                        has_lite: bool, engine: str, expected: str):
    monkeypatch.setattr(glyph_cnn, "cpu_has_bf16", lambda: native)
    monkeypatch.setattr(lite, "available", lambda: has_lite)
    assert resolve_precision("auto", engine) == expected
    assert resolve_precision("float32", engine) == "float32"
    assert resolve_precision("bfloat16", engine) == "bfloat16"


def test_the_shipped_bundle_reads_the_samples_alike_in_bfloat16():
    """bfloat16 keeps about three significant digits. Every sample image must read the same; over
    all the lattice's candidate crops (not only the chosen ones) a class may flip where two were
    nearly tied, but hardly ever, and the probabilities stay within a few hundredths; the softmax
    itself computes in float32."""
    bundle = load_bundle(DEFAULT_MODEL)
    params = StageParams.from_dict(bundle.manifest.get("params"))
    files = sorted((ROOT / "data" / "samples").glob("*.png"))
    prepared = [prepare_file(f, params=params, lengths=bundle.lengths, height=bundle.image_height) for f in files]
    prepared = [p for p in prepared if not isinstance(p, str)]
    full = GlyphClassifier.from_bundle(bundle, precision="float32")
    half = GlyphClassifier.from_bundle(bundle, precision="bfloat16")
    assert half.precision == "bfloat16"
    assert half.model.get_layer("probs").compute_dtype == "float32"
    assert all(layer.compute_dtype == "bfloat16" for layer in half.model.layers
               if layer.__class__.__name__ == "Conv2D")
    texts = [[reading.text for reading, *_ in read_segments(prepared, c, bundle.lengths)] for c in (full, half)]
    assert texts[0] == texts[1]
    crops = np.concatenate([p.crops for p in prepared]).astype(np.float32) / 255.0
    a, b = full.predict(crops), half.predict(crops)
    assert len(crops) > 500
    assert (a.argmax(axis=1) == b.argmax(axis=1)).mean() >= 0.99
    np.testing.assert_allclose(a, b, atol=0.08)


needs_lite = pytest.mark.skipif(not lite.available(), reason="this TensorFlow install has no tf.lite")


def test_engines_resolve_or_explain():
    assert resolve_engine("keras", "float32") == "keras"
    assert resolve_engine("keras", "bfloat16") == "keras"
    assert resolve_engine("auto", "bfloat16") == "keras"  # Keras' mixed precision: not for TensorFlow Lite
    assert resolve_engine("auto", "float32") == ("lite" if lite.available() else "keras")
    assert resolve_engine("lite", "float32") == "lite"
    with pytest.raises(ValueError, match="computes in float32"):
        resolve_engine("lite", "bfloat16")
    with pytest.raises(ValueError, match="engine must be one of"):
        resolve_engine("onnx", "float32")


@needs_lite
@pytest.mark.parametrize("cells", [False, True])  # False: the form from_bundle converts
def test_the_lite_form_is_the_same_function_at_any_batch_size(cells: bool):
    """Batch sizes that change from call to call (each call re-plans the interpreter)."""
    model = for_reading(_trained_looking(build_glyph_cnn(size=20, n_classes=3, channels=2), seed=3),
                        {"size": 20, "n_classes": 3, "channels": 2}, cells=cells)
    runner = lite.LiteNetwork(model, threads=2)
    assert runner.input_shape == (None, 20, 20, 2)
    x = np.random.default_rng(1).random((40, 20, 20, 2), dtype=np.float32)
    for a, b in ((0, 7), (7, 8), (8, 40), (0, 40), (3, 5)):
        np.testing.assert_allclose(runner.predict_on_batch(x[a:b]), np.asarray(model.predict_on_batch(x[a:b])),
                                   atol=1e-6)


@needs_lite
def test_the_shipped_bundle_reads_the_samples_alike_with_either_engine():
    bundle = load_bundle(DEFAULT_MODEL)
    params = StageParams.from_dict(bundle.manifest.get("params"))
    files = sorted((ROOT / "data" / "samples").glob("*.png"))
    prepared = [prepare_file(f, params=params, lengths=bundle.lengths, height=bundle.image_height) for f in files]
    prepared = [p for p in prepared if not isinstance(p, str)]
    forms = [GlyphClassifier.from_bundle(bundle, precision="float32", engine=e) for e in ("keras", "lite")]
    assert [f.engine for f in forms] == ["keras", "lite"]
    # Each engine runs the reading form its kernels are fastest on: the first block on cells or not.
    assert [f.model.get_layer("conv1").kernel.shape[0] for f in forms] == [2, 3]
    texts = [[reading.text for reading, *_ in read_segments(prepared, f, bundle.lengths)] for f in forms]
    assert texts[0] == texts[1]
    crops = np.concatenate([p.crops for p in prepared]).astype(np.float32) / 255.0
    forms[1].batch_size = 100  # uneven last batch: the interpreter re-plans
    a, b = (f.predict(crops) for f in forms)
    assert (a.argmax(axis=1) == b.argmax(axis=1)).all()
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_failed_conversion_falls_back_to_keras_unless_lite_was_asked_for(monkeypatch: pytest.MonkeyPatch):
    def broken(*args, **kwargs):
        raise RuntimeError("TensorFlow Lite conversion failed: test")

    monkeypatch.setattr(lite, "LiteNetwork", broken)
    monkeypatch.setattr(lite, "available", lambda: True)
    bundle = load_bundle(DEFAULT_MODEL)
    fallback = GlyphClassifier.from_bundle(bundle, precision="float32", engine="auto")
    assert fallback.engine == "keras"
    assert fallback.model.get_layer("conv1").kernel.shape[0] == 2  # Keras' own reading form
    with pytest.raises(RuntimeError, match="conversion failed"):
        GlyphClassifier.from_bundle(bundle, precision="float32", engine="lite")
