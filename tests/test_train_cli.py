"""End to end: ``pipeline.train`` on a tiny labelled slice writes a usable, verifiable bundle.

Few images and epochs: this checks the machinery (bundle contents, manifest, reuse by run), not
accuracy; the shipped bundles' figures come from bench/accuracy.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.bundle import load_bundle, sha256_file
from pipeline.run import main as run_main
from pipeline.train import main as train_main

from .conftest import dataset


@pytest.mark.slow
def test_train_tiny_bundle_then_run_it(tmp_path: Path):
    source = dataset("wp_rsc")
    folder = tmp_path / "labelled"
    folder.mkdir()
    for path in sorted(source.glob("*.png"))[:60]:
        (folder / path.name).symlink_to(path.resolve())
    bundle_dir = tmp_path / "bundle"
    code = train_main([str(folder), "--out", str(bundle_dir), "--glyph-epochs", "2", "--align-rounds", "1",
                       "--ctc-epochs", "1", "--seed", "3", "--glyph-size", "16"])
    assert code == 0
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert bundle.lengths == (4,) and set(bundle.charset) <= set("23456789ABCDEFGHJKLMNPQRSTUVWXYZ")
    assert manifest["image_height"] == 24
    assert manifest["data"]["split"]["seed"] == 3 and len(manifest["data"]["validation_files"]) == 9
    assert "--seed 3" in manifest["command"] and len(manifest["data"]["fingerprint_sha256"]) == 64
    for name in ("glyph", "ctc"):
        entry = manifest["readers"][name]
        assert entry["sha256"] == sha256_file(bundle_dir / entry["weights"])
        assert 0.0 <= entry["validation"]["accuracy"] <= 1.0
    assert manifest["readers"]["glyph"]["architecture"]["n_classes"] == len(bundle.charset)
    assert manifest["readers"]["glyph"]["architecture"]["size"] == manifest["params"]["glyph"]["size"] == 16
    assert 0.0 <= manifest["routing"]["threshold"] <= 1.0
    json.dumps(manifest)

    out = tmp_path / "out"
    assert run_main([str(folder), "--out", str(out), "--model", str(bundle_dir), "--mode", "both", "-q"]) == 0
    assert (out / "predictions.csv").read_text(encoding="utf-8").count("\n") == 61
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["labelled"] == 60


def test_train_refuses_a_folder_without_labels(tmp_path: Path):
    assert train_main([str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 3
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-size", "4"]) == 3
    (tmp_path / "few").mkdir()
    assert train_main([str(tmp_path / "few"), "--out", str(tmp_path / "b")]) == 3
