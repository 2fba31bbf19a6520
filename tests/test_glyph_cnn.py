"""The glyph CNN builder and its loading from a bundle, old manifests included."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.bundle import Bundle, sha256_file
from pipeline.glyph_cnn import GlyphClassifier, build_glyph_cnn


def _bundle(folder: Path, model, architecture: dict) -> Bundle:
    weights = folder / "glyph.weights.h5"
    model.save_weights(str(weights))
    entry = {"weights": weights.name, "sha256": sha256_file(weights), "architecture": architecture}
    return Bundle(path=folder, manifest={"charset": "ab", "lengths": [2], "image_height": 20,
                                         "readers": {"glyph": entry}})


def test_default_network_shapes_and_probabilities():
    model = build_glyph_cnn(size=20, n_classes=3)
    assert any(layer.__class__.__name__ == "BatchNormalization" for layer in model.layers)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 6  # two per block, three blocks
    probs = np.asarray(model.predict_on_batch(np.random.default_rng(0).random((4, 20, 20, 1), dtype=np.float32)))
    assert probs.shape == (4, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


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


def test_a_current_manifest_round_trips_and_reads_with_normalisation_folded(tmp_path: Path):
    model = build_glyph_cnn(size=16, n_classes=2)
    # Trained-looking normalisation statistics, so that folding them has something to get wrong.
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.2, 3.0, n)])
    architecture = {"size": 16, "n_classes": 2, "filters": [16, 32, 64], "convs": 2, "batch_norm": True,
                    "dense": 128, "dropout": 0.3}
    classifier = GlyphClassifier.from_bundle(_bundle(tmp_path, model, architecture))
    assert not any(layer.__class__.__name__ == "BatchNormalization" for layer in classifier.model.layers)
    crops = np.random.default_rng(2).random((5, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(classifier.predict(crops), np.asarray(model.predict_on_batch(crops[..., None])),
                               rtol=1e-5, atol=1e-6)
