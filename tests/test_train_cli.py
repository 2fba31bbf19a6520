"""End to end: ``pipeline.train`` on a tiny labelled slice writes a usable, verifiable bundle.

Few images and epochs: this checks the machinery (bundle contents, manifest, reuse by run), not
accuracy; the shipped bundles' figures come from bench/accuracy.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from pipeline.bundle import load_bundle, sha256_file
from pipeline.run import main as run_main
from pipeline.train import main as train_main
from pipeline.train_glyph import READING_ONLY

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
                       "--ctc-epochs", "1", "--seed", "3", "--glyph-size", "16", "--glyph-members", "2",
                       "--glyph-label-smoothing", "0.1", "--glyph-strike", "0.5", "--glyph-filters", "8", "12", "16",
                       "--glyph-weight-decay", "0.05", "--glyph-rejects", "1", "--glyph-reject-purity", "0.85",
                       "--ctc-patience", "4", "--param", "clean.speck_ratio=0.02"])
    assert code == 0
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    assert bundle.lengths == (4,) and set(bundle.charset) <= set("23456789ABCDEFGHJKLMNPQRSTUVWXYZ")
    assert manifest["image_height"] == 24
    assert manifest["data"]["split"]["seed"] == 3 and len(manifest["data"]["validation_files"]) == 9
    # Three disjoint parts: nothing (best epoch, routing threshold) is chosen on the validation images.
    split, selection = manifest["data"]["split"], manifest["data"]["selection_files"]
    assert split["train"] + split["selection"] + split["validation"] == 60 and len(selection) == split["selection"] == 5
    assert not set(selection) & set(manifest["data"]["validation_files"])
    assert "--seed 3" in manifest["command"] and len(manifest["data"]["fingerprint_sha256"]) == 64
    for name in ("glyph", "ctc"):
        entry = manifest["readers"][name]
        assert entry["sha256"] == sha256_file(bundle_dir / entry["weights"])
        assert 0.0 <= entry["validation"]["accuracy"] <= 1.0 and entry["validation"]["images"] == 9
        assert entry["selection"]["images"] == 5
    assert manifest["readers"]["glyph"]["architecture"]["n_classes"] == len(bundle.charset)
    assert manifest["readers"]["glyph"]["architecture"]["size"] == manifest["params"]["glyph"]["size"] == 16
    assert manifest["readers"]["glyph"]["architecture"]["members"] == 2  # two networks, averaged by one model
    assert manifest["readers"]["glyph"]["architecture"]["filters"] == [8, 12, 16]  # and rebuilt so by run below
    assert [len(m["history"]) for m in manifest["readers"]["glyph"]["training"]["members"]] == [2, 2]  # each one's log
    assert manifest["readers"]["glyph"]["training"]["label_smoothing"] == 0.1
    assert manifest["readers"]["glyph"]["training"]["strike"] == 0.5
    assert manifest["readers"]["glyph"]["training"]["weight_decay"] == 0.05
    assert manifest["readers"]["ctc"]["training"]["patience"] == 4  # the trainer's own is max(3, epochs // 3)
    # One reject crop per glyph crop: 4 characters an image, so at most 4 rejects an image (1.5: 6).
    training = manifest["readers"]["glyph"]["training"]
    assert training["rejects_per_glyph"] == 1.0 and training["reject_crops"] <= 4 * training["images_used"]
    assert training["reject_purity"] == 0.85
    # The mask, its grey levels and the first-glyph mark: three input channels.
    assert manifest["params"]["glyph"]["shade"] is True and manifest["params"]["glyph"]["first_mark"] is True
    assert manifest["readers"]["glyph"]["architecture"]["channels"] == 3
    assert manifest["params"]["clean"]["speck_ratio"] == 0.02  # --param, recorded with its command
    assert "--param clean.speck_ratio=0.02" in manifest["command"]
    # How a network is read (its reading form) is not part of which network it is.
    assert not READING_ONLY & set(manifest["readers"]["glyph"]["architecture"])
    assert 0.0 <= manifest["routing"]["threshold"] <= 1.0 and manifest["routing"]["selection_images"] == 5
    # The threshold the search found is recorded beside the one kept (the stronger reader's end
    # where a sign test does not back it).
    assert 0.0 <= manifest["routing"]["searched_threshold"] <= 1.0
    json.dumps(manifest)

    out = tmp_path / "out"
    assert run_main([str(folder), "--out", str(out), "--model", str(bundle_dir), "--mode", "both", "-q"]) == 0
    assert (out / "predictions.csv").read_text(encoding="utf-8").count("\n") == 61
    assert json.loads((out / "report.json").read_text(encoding="utf-8"))["labelled"] == 60


def test_train_refuses_a_folder_without_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    assert train_main([str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 3
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-size", "4"]) == 3
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-members", "0"]) == 3
    assert "--glyph-members must be at least 1" in caplog.text
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-label-smoothing", "1"]) == 3
    assert "--glyph-label-smoothing must be at least 0 and below 1" in caplog.text
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--select-fraction", "1.5"]) == 3
    assert "--select-fraction must be between 0 and 1" in caplog.text
    for flag, value, message in (("--ctc-epochs", "0", "--ctc-epochs must be at least 1"),
                                 ("--ctc-cycles", "0", "--ctc-cycles must be at least 1"),
                                 ("--ctc-patience", "0", "--ctc-patience must be at least 1"),
                                 ("--glyph-strike", "1.5", "--glyph-strike must be between 0 and 1"),
                                 ("--glyph-strike", "nan", "--glyph-strike must be between 0 and 1"),
                                 ("--glyph-weight-decay", "-0.1", "--glyph-weight-decay must be at least 0"),
                                 ("--glyph-weight-decay", "nan", "--glyph-weight-decay must be at least 0"),
                                 ("--glyph-rejects", "-1", "--glyph-rejects must be at least 0"),
                                 ("--glyph-rejects", "nan", "--glyph-rejects must be at least 0"),
                                 ("--glyph-rejects", "inf", "--glyph-rejects must be at least 0 and finite"),
                                 ("--glyph-reject-purity", "0", "--glyph-reject-purity must be above 0"),
                                 ("--glyph-reject-purity", "0.95", "at most 0.9"),
                                 ("--glyph-reject-purity", "nan", "--glyph-reject-purity must be above 0"),
                                 ("--ctc-next-length", "0.5", "--ctc-next-length must be 1 to 8"),
                                 ("--ctc-next-peak", "0", "--ctc-next-peak must be above 0"),
                                 ("--ctc-next-peak", "nan", "--ctc-next-peak must be above 0"),
                                 ("--ctc-budget", "nan", "--ctc-budget must be a number of seconds"),
                                 ("--ctc-height", "30", "--ctc-height must be a multiple of 8"),
                                 ("--ctc-height", "0", "--ctc-height must be a multiple of 8 from 8"),
                                 ("--ctc-augment-probability", "1.5", "--ctc-augment-probability must be from 0"),
                                 ("--ctc-augment-probability", "nan", "--ctc-augment-probability must be from 0")):
        assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), flag, value]) == 3
        assert message in caplog.text
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-filters", "16", "0", "32"]) == 3
    assert "--glyph-filters needs positive channel counts, got 16 0 32" in caplog.text
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--glyph-filters", "16"]) == 2  # argparse: three
    assert train_main([str(tmp_path), "--out", str(tmp_path / "b"), "--param", "clean.thin=0.4"]) == 3
    assert "clean has no 'thin'" in caplog.text
    (tmp_path / "few").mkdir()
    assert train_main([str(tmp_path / "few"), "--out", str(tmp_path / "b")]) == 3


def _synthetic_scheme(folder: Path, count: int, seed: int = 0) -> None:
    """Blue text of 3-5 characters on a transparent background: a scheme of another size, length
    set, character set and colour mode than the shipped ones."""
    rng = np.random.default_rng(seed)
    charset = "ACEHKMRTX347"
    folder.mkdir()
    for i in range(count):
        text = "".join(rng.choice(list(charset), size=int(rng.integers(3, 6))))
        alpha = np.zeros((40, 150), np.uint8)
        cv2.putText(alpha, text, (6 + int(rng.integers(0, 8)), 30), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2,
                    cv2.LINE_AA)
        rgba = np.zeros((40, 150, 4), np.uint8)
        rgba[..., 2] = 200  # blue ink where opaque, nothing elsewhere
        rgba[..., 3] = alpha
        Image.fromarray(rgba, "RGBA").save(folder / f"{i:03d}_{text}.png")
    with (folder / "labels.csv").open("w", encoding="utf-8") as fh:
        fh.write("file,label\n")
        for path in sorted(folder.glob("*.png")):
            fh.write(f"{path.name},{path.stem.split('_')[1]}\n")


@pytest.mark.slow
def test_train_and_run_a_variable_length_transparent_scheme(tmp_path: Path):
    folder = tmp_path / "scheme"
    _synthetic_scheme(folder, 48)
    bundle_dir = tmp_path / "bundle"
    assert train_main([str(folder), "--out", str(bundle_dir), "--glyph-epochs", "2", "--align-rounds", "1",
                       "--ctc-epochs", "1", "--seed", "1", "--no-glyph-shade", "--no-glyph-first-mark"]) == 0
    bundle = load_bundle(bundle_dir)
    assert set(bundle.lengths) == {3, 4, 5}
    # Mask-only crops, as every bundle before grey levels: one input channel.
    assert bundle.manifest["params"]["glyph"]["shade"] is False
    assert bundle.manifest["params"]["glyph"]["first_mark"] is False
    assert bundle.manifest["readers"]["glyph"]["architecture"]["channels"] == 1
    assert bundle.manifest["image_height"] == 40
    # Reading prunes the lattice to complete paths; the bundle records that reading setting.
    assert bundle.manifest["params"]["segment"]["complete_paths_only"] is True
    out = tmp_path / "out"
    assert run_main([str(folder), "--out", str(out), "--model", str(bundle_dir), "--mode", "both", "-q"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open(encoding="utf-8")))
    assert len(rows) == 48 and all(r["route"] in ("segment", "ctc") for r in rows)
    # Every image gets a segment reading of one of the scheme's lengths, and not only one length.
    lengths = {len(r["segment_prediction"]) for r in rows}
    assert lengths <= {3, 4, 5} and len(lengths) >= 2
