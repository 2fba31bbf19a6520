"""End to end: the real ``pipeline.run`` CLI on real and hostile folders; exit codes; CSV contents.

Accuracy floors are measured quantities with margin, not exact outputs; the figures the README
quotes come from bench/.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.bundle import load_bundle
from pipeline.config import StageParams
from pipeline.run import COLUMNS, ExitCode, main

from .conftest import ROOT, dataset

SAMPLES = ROOT / "data" / "samples"


def read_rows(out: Path) -> list[dict[str, str]]:
    with (out / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def accuracy(rows: list[dict[str, str]]) -> float:
    return sum(r["correct"] == "1" for r in rows) / len(rows)


def validation_folder(tmp_path: Path, name: str, count: int) -> Path:
    """Links to the first ``count`` validation files of a shipped bundle (never trained on)."""
    source = dataset(name)
    files = load_bundle(name).manifest["data"]["validation_files"][:count]
    folder = tmp_path / f"{name}_val"
    folder.mkdir()
    for rel in files:
        (folder / rel).symlink_to((source / rel).resolve())
    return folder


def test_samples_with_default_model(tmp_path: Path):
    out = tmp_path / "out"
    assert main([str(SAMPLES), "--out", str(out), "-q"]) == ExitCode.OK
    rows = read_rows(out)
    assert len(rows) == 40 and tuple(rows[0].keys()) == COLUMNS
    names = {r["file"] for r in rows}
    assert {"with space.png", "quote's \"double\".png", "ünïcødé ✓.png"} <= names
    assert all(r["label"] and r["route"] in ("segment", "ctc") for r in rows)
    assert accuracy(rows) >= 0.9  # samples re-encode validation images in 10 formats / colour modes


@pytest.mark.parametrize(
    ("name", "mode", "floor"),
    [
        # Floors sit a few points under bench/accuracy.py's figures on the full validation split.
        ("captcha_v2", "segment", 0.88),  # the segment route alone on the hardest scheme (bench: 94.4 %)
        ("captcha_v2", "ctc", 0.96),
        ("captcha_v2", "auto", 0.96),
        ("wp_rsc", "segment", 0.96),  # bench: 99.7 %
        ("wp_rsc", "ctc", 0.98),
        ("wp_rsc", "auto", 0.98),
    ],
)
def test_accuracy_floors_on_validation_images(tmp_path: Path, name: str, mode: str, floor: float):
    folder = validation_folder(tmp_path, name, 100)
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--model", name, "--mode", mode, "-q"]) == ExitCode.OK
    rows = read_rows(out)
    assert len(rows) == 100
    assert accuracy(rows) >= floor
    if mode != "auto":
        assert {r["route"] for r in rows} == {mode}


@pytest.mark.parametrize(("precision", "engine"), [("bfloat16", "keras"), ("float32", "keras")])
def test_other_arithmetic_reads_what_the_default_reads(tmp_path: Path, precision: str, engine: str):
    """--precision and --engine change how the glyph CNN computes, not the readings (bench/speed.py
    measures what they save); the report records what ran."""
    folder = validation_folder(tmp_path, "captcha_v2", 100)
    rows = {}
    for name, options in (("default", []), ("other", ["--precision", precision, "--engine", engine])):
        out = tmp_path / name
        assert main([str(folder), "--out", str(out), "--mode", "segment", "-q", *options]) == 0
        rows[name] = read_rows(out)
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        if name == "other":
            assert (report["run"]["precision"], report["run"]["engine"]) == (precision, engine)
    assert [r["prediction"] for r in rows["default"]] == [r["prediction"] for r in rows["other"]]
    confidences = [(float(a["confidence"]), float(b["confidence"])) for a, b in zip(*rows.values(), strict=True)]
    assert max(abs(a - b) for a, b in confidences) < (0.1 if precision == "bfloat16" else 1e-3)


def test_mode_both_writes_both_readings(tmp_path: Path):
    folder = validation_folder(tmp_path, "captcha_v2", 20)
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--mode", "both", "-q"]) == ExitCode.OK
    for row in read_rows(out):
        assert row["segment_confidence"] and row["ctc_prediction"] and row["ctc_confidence"]
        routed = row["segment_prediction"] if row["route"] == "segment" else row["ctc_prediction"]
        assert row["prediction"] == routed and row["reason"]


def test_debug_images_for_every_stage(tmp_path: Path):
    folder = validation_folder(tmp_path, "captcha_v2", 3)
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--mode", "both", "--debug", "-q"]) == ExitCode.OK
    stems = {Path(r["file"]).stem for r in read_rows(out)}
    for stem in stems:
        written = sorted(p.name for p in (out / "debug" / stem).iterdir())
        for stage in ("01_gray", "02_binary", "03_cleaned", "04_components", "05_split", "06_glyphs"):
            assert f"{stage}.png" in written
        assert "strip.png" in written
        with Image.open(out / "debug" / stem / "01_gray.png") as image:
            assert image.size[1] == load_bundle("captcha_v2").image_height
        glyph = StageParams.from_dict(load_bundle("captcha_v2").manifest["params"]).glyph
        with Image.open(out / "debug" / stem / "06_glyphs.png") as image:  # each crop's channels, twice size
            assert image.size[1] == glyph.channels * 2 * glyph.size + 26


def test_outputs_inside_the_folder_are_not_read_again(tmp_path: Path):
    folder = validation_folder(tmp_path, "captcha_v2", 3)
    for out in (folder / "out", folder / "again", folder):  # the last: --out FOLDER itself
        assert main([str(folder), "--out", str(out), "--debug", "-q"]) == ExitCode.OK
        assert any((out / "debug").rglob("*.png"))
        assert sorted(r["file"] for r in read_rows(out)) == sorted(p.name for p in folder.glob("*.png"))


def test_drawn_failures_are_the_same_from_workers(tmp_path: Path):
    """Over a chunk's worth of files the workers send images without the planes only drawing
    needs, and the main process makes them again for the wrong or unsure readings it draws: the
    same debug images, byte for byte, as a run that keeps every plane in one process."""
    source = dataset("captcha_v2")
    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted(source.glob("*.png"))[:160]:
        (folder / path.name).symlink_to(path.resolve())
    outs = {}
    for jobs in ("2", "1"):
        outs[jobs] = tmp_path / f"jobs{jobs}"
        assert main([str(folder), "--out", str(outs[jobs]), "--mode", "segment", "--jobs", jobs, "-q"]) == 0
    drawn = sorted(p.relative_to(outs["2"]) for p in (outs["2"] / "debug").rglob("*.png"))
    assert drawn and drawn == sorted(p.relative_to(outs["1"]) for p in (outs["1"] / "debug").rglob("*.png"))
    for rel in drawn:
        assert (outs["2"] / rel).read_bytes() == (outs["1"] / rel).read_bytes(), rel
    assert read_rows(outs["2"]) == read_rows(outs["1"])


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_gets_error_rows_and_the_rest_goes_on(tmp_path: Path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = sorted(SAMPLES.glob("*.png"))[:2]
    for src in good:
        (folder / src.name).write_bytes(src.read_bytes())
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image", encoding="utf-8")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    buf = io.BytesIO()
    Image.new("L", (20_000, 20_000), 255).save(buf, format="PNG")  # a small file, 400 Mpixel
    (folder / "bomb.png").write_bytes(buf.getvalue())
    (folder / "blank.png").write_bytes(png_bytes(np.full((50, 200), 255, np.uint8)))  # no ink at all
    (folder / "tiny.png").write_bytes(png_bytes(np.zeros((1, 1), np.uint8)))
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")  # a broken link
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "-q"]) == ExitCode.OK
    rows = {r["file"]: r for r in read_rows(out)}
    assert len(rows) == 9
    assert rows["gone.png"]["route"] == "error" and "cannot read file" in rows["gone.png"]["reason"]
    assert "empty" in rows["empty.png"]["reason"] and rows["empty.png"]["route"] == "error"
    assert "not a recognised image" in rows["text.png"]["reason"]
    assert rows["truncated.png"]["route"] == "error"
    assert re.search("over the limit|decompression bomb", rows["bomb.png"]["reason"])
    for src in good:
        assert rows[src.name]["route"] in ("segment", "ctc") and rows[src.name]["prediction"]
    assert rows["blank.png"]["route"] in ("segment", "ctc")  # read (as nothing), not crashed


def test_exit_codes(tmp_path: Path):
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == ExitCode.INPUT_ERROR
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == ExitCode.INPUT_ERROR
    assert main([str(SAMPLES), "--out", str(tmp_path / "o"), "--model", str(tmp_path)]) == ExitCode.MODEL_ERROR
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main([str(SAMPLES), "--out", str(blocker / "sub")]) == ExitCode.OUTPUT_ERROR
    assert main([str(SAMPLES)]) == ExitCode.BAD_ARGS  # --out missing
    assert main([str(SAMPLES), "--out", str(tmp_path / "o"), "--mode", "nope"]) == ExitCode.BAD_ARGS


def test_real_command_line(tmp_path: Path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.run", str(SAMPLES), "--out", str(out), "--mode", "both", "--quiet"],
        capture_output=True, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"predictions: {out / 'predictions.csv'}" in proc.stdout
    assert "40 images, 0 errors, accuracy" in proc.stdout and "images/s" in proc.stdout
    # --quiet means warnings only: no TensorFlow start-up notices either (they go to fd 2 natively).
    assert proc.stderr.strip() == "", proc.stderr[-2000:]
    assert len(read_rows(out)) == 40


def test_manifests_record_their_making():
    for name in ("captcha_v2", "wp_rsc"):
        manifest = load_bundle(name).manifest
        assert manifest["command"].startswith("python -m pipeline.train")
        assert len(manifest["data"]["fingerprint_sha256"]) == 64
        assert set(manifest["readers"]) == {"glyph", "ctc"}
        assert 0.0 <= manifest["routing"]["threshold"] <= 1.0
        json.dumps(manifest)


def test_interrupted_run_keeps_finished_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Ctrl-C after the first chunk: exit 130, the first chunk's rows are in the CSV, complete."""
    import functools

    import pipeline.run as run_module
    from pipeline.batches import chunk_bounds, iter_prepared

    folder = validation_folder(tmp_path, "captcha_v2", 30)
    monkeypatch.setattr(run_module, "iter_prepared", functools.partial(iter_prepared, chunk=10))
    real = run_module.recognize
    calls = {"n": 0}

    def interrupt_on_second_chunk(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "recognize", interrupt_on_second_chunk)
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--mode", "segment", "-q"]) == ExitCode.INTERRUPTED
    rows = read_rows(out)
    first = chunk_bounds(30, 10)[0][1]
    assert 0 < first < 30
    assert len(rows) == first and all(r["prediction"] and r["route"] == "segment" for r in rows)
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["images"] == first  # the report covers what was done, too


def test_workers_that_fail_to_start_early_are_a_warning(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture):
    import pipeline.run as run_module

    def broken(n_jobs):
        raise OSError("no processes today")

    monkeypatch.setattr(run_module, "start_workers", broken)
    with caplog.at_level("WARNING", logger="pipeline.run"):
        run_module._start_workers_early(2)  # must not raise
    assert "did not start ahead of the run: no processes today" in caplog.text


@pytest.mark.parametrize(("drop", "mode", "code", "route"), [
    ("glyph", "auto", ExitCode.OK, "ctc"),  # the default mode reads with whichever reader there is
    ("ctc", "auto", ExitCode.OK, "segment"),
    ("glyph", "segment", ExitCode.MODEL_ERROR, None),
    ("ctc", "both", ExitCode.MODEL_ERROR, None),
])
def test_a_bundle_with_one_reader(tmp_path: Path, drop: str, mode: str, code: int, route: str | None):
    """A bundle trained with ``--reader ctc`` or ``--reader glyph``: the shipped one with a reader
    left out of its manifest."""
    folder = validation_folder(tmp_path, "captcha_v2", 6)
    bundle = tmp_path / "one_reader"
    shutil.copytree(ROOT / "models" / "captcha_v2", bundle)
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    (bundle / manifest["readers"].pop(drop)["weights"]).unlink()
    (bundle / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    out = tmp_path / "out"
    assert main([str(folder), "--out", str(out), "--model", str(bundle), "--mode", mode, "-q"]) == code
    if route is not None:
        rows = read_rows(out)
        assert len(rows) == 6 and {r["route"] for r in rows} == {route} and accuracy(rows) >= 0.5
        assert all(f"no {drop} reader in this bundle" in r["reason"] for r in rows)
