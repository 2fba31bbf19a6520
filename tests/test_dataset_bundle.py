"""dataset (labels, split, fingerprint) and bundle (manifest, sha256 check) on tiny folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.bundle import BundleError, load_bundle, sha256_file, write_manifest
from pipeline.dataset import (
    FolderError,
    charset_of,
    fingerprint,
    lengths_of,
    list_images,
    split_indices,
)


def touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(name.encode())


def test_labels_from_stems_and_csv(tmp_path: Path):
    touch(tmp_path, "ab12.png", "sub/CD34.jpg", "odd name.png", "notes.txt")
    (tmp_path / "labels.csv").write_text("file,label\nodd name.png,xyz\n", encoding="utf-8")
    items = list_images(tmp_path)
    assert [(i.rel, i.label) for i in items] == [
        ("ab12.png", "ab12"), ("odd name.png", "xyz"), ("sub/CD34.jpg", "CD34"),
    ]


def test_folder_errors(tmp_path: Path):
    with pytest.raises(FolderError, match="folder not found"):
        list_images(tmp_path / "missing")
    touch(tmp_path, "a.png")
    with pytest.raises(FolderError, match="not a folder"):
        list_images(tmp_path / "a.png")
    assert list_images(tmp_path / "..", recursive=False) == []


RUN_CSV = "file,prediction,route,reason\n"


@pytest.mark.parametrize(("files", "skip", "kept", "left"), [
    # An earlier run's output inside the folder: its stage images are not CAPTCHAs.
    ({"out/predictions.csv": RUN_CSV, "out/debug/ab/01_gray.png": ""}, (), ["ab12.png"], 1),
    # The folder is itself a run's output (--out FOLDER): its own debug/ only.
    ({"predictions.csv": RUN_CSV, "debug/ab/01_gray.png": "", "cd.png": ""}, (), ["ab12.png", "cd.png"], 1),
    # A "debug" folder or a predictions.csv that are not a run's: kept.
    ({"debug/cd.png": ""}, (), ["ab12.png", "debug/cd.png"], 0),
    ({"x/predictions.csv": "file,label\n", "x/debug/cd.png": ""}, (), ["ab12.png", "x/debug/cd.png"], 0),
    # The run's own OUT, listed before it has written anything; never the folder itself.
    ({"new/cd.png": "", "new/sub/ef.png": ""}, ("new",), ["ab12.png"], 2),
    ({"cd.png": ""}, (".",), ["ab12.png", "cd.png"], 0),
])
def test_run_outputs_are_left_out(tmp_path: Path, files: dict[str, str], skip: tuple[str, ...], kept: list[str],
                                  left: int, caplog: pytest.LogCaptureFixture):
    touch(tmp_path, "ab12.png")
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text or rel, encoding="utf-8")
    caplog.set_level("INFO")
    assert [i.rel for i in list_images(tmp_path, skip=[tmp_path / s for s in skip])] == kept
    assert (f"left out {left} images" in caplog.text) == (left > 0)


def test_charset_and_lengths_come_from_labels():
    assert charset_of(["ba", "cA"]) == "Aabc"
    assert lengths_of(["abcd", "abc", "abcd"]) == [4, 3]


def test_split_is_seeded_disjoint_and_complete():
    train, val = split_indices(100, val_fraction=0.2, seed=3)
    again = split_indices(100, val_fraction=0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert len(val) == 20 and not set(train) & set(val) and len(set(train) | set(val)) == 100
    assert not np.array_equal(val, split_indices(100, val_fraction=0.2, seed=4)[1])


def test_fingerprint_changes_with_content(tmp_path: Path):
    touch(tmp_path, "a.png")
    first = fingerprint(list_images(tmp_path))
    (tmp_path / "a.png").write_bytes(b"other")
    assert fingerprint(list_images(tmp_path)) != first


def make_bundle(folder: Path) -> Path:
    (folder / "glyph.weights.h5").write_bytes(b"weights")
    write_manifest(folder, {
        "charset": "ab", "lengths": [4], "image_height": 24,
        "readers": {"glyph": {"weights": "glyph.weights.h5", "sha256": sha256_file(folder / "glyph.weights.h5")}},
    })
    return folder


def test_bundle_loads_and_verifies(tmp_path: Path):
    bundle = load_bundle(make_bundle(tmp_path))
    assert bundle.charset == "ab" and bundle.lengths == (4,)
    assert bundle.weights_path("glyph").name == "glyph.weights.h5"
    with pytest.raises(BundleError, match="no 'ctc' reader"):
        bundle.weights_path("ctc")


def test_tampered_weights_are_refused(tmp_path: Path):
    bundle = load_bundle(make_bundle(tmp_path))
    (tmp_path / "glyph.weights.h5").write_bytes(b"evil")
    with pytest.raises(BundleError, match="does not match its manifest"):
        bundle.weights_path("glyph")


def test_bad_bundles(tmp_path: Path):
    with pytest.raises(BundleError, match="no model bundle"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="cannot read"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"charset": "a"}), encoding="utf-8")
    with pytest.raises(BundleError, match="lacks"):
        load_bundle(tmp_path)


def test_stem_labels_outside_the_charset_are_dropped(tmp_path: Path):
    from pipeline.dataset import plausible_labels

    touch(tmp_path, "ab.png", "img001.png", "zz.png")
    (tmp_path / "labels.csv").write_text("file,label\nzz.png,zz\n", encoding="utf-8")
    items, dropped = plausible_labels(list_images(tmp_path), "ab")
    assert dropped == 1
    assert {i.rel: i.label for i in items} == {"ab.png": "ab", "img001.png": None, "zz.png": "zz"}
