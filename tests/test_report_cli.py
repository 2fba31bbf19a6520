"""End to end: a labelled ``--mode both`` run's report.json agrees with its predictions.csv
(recomputed here, independently), and report.html escapes hostile file names."""

from __future__ import annotations

import csv
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.report import edit_distance
from pipeline.report_html import find_chromium, screenshot
from pipeline.run import ExitCode, main

from .conftest import ROOT
from .test_run_cli import read_rows, validation_folder

HOSTILE = "<img src=x onerror=alert(1)>.png"


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    folder = validation_folder(tmp, "captcha_v2", 60)
    sample = ROOT / "data" / "samples" / "with space.png"
    (folder / HOSTILE).write_bytes(sample.read_bytes())
    (folder / "labels.csv").write_text(f'file,label\n"{HOSTILE}",xxxxx\n', encoding="utf-8")  # surely wrong
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp / "out"
    assert main([str(folder), "--out", str(out), "--mode", "both", "-q"]) == ExitCode.OK
    return out


def test_report_agrees_with_predictions(labelled_run: Path):
    rows = read_rows(labelled_run)
    report = json.loads((labelled_run / "report.json").read_text(encoding="utf-8"))
    read = [r for r in rows if r["route"] != "error"]
    labelled = [r for r in read if r["label"]]
    assert report["images"] == len(rows) == 62
    assert report["errors"] == sum(r["route"] == "error" for r in rows) == 1
    assert report["labelled"] == len(labelled)
    for route, column in (("segment", "segment_prediction"), ("ctc", "ctc_prediction"), ("auto", "prediction")):
        right = sum(r[column] == r["label"] for r in labelled)
        assert report["routes"][route]["accuracy"] == pytest.approx(right / len(labelled))
        edits = sum(edit_distance(r[column], r["label"]) for r in labelled)
        assert report["routes"][route]["cer"] == pytest.approx(edits / sum(len(r["label"]) for r in labelled))
    seg_ok = [r["segment_prediction"] == r["label"] for r in labelled]
    ctc_ok = [r["ctc_prediction"] == r["label"] for r in labelled]
    comparison = report["comparison"]
    assert comparison["both_right"] == sum(s and c for s, c in zip(seg_ok, ctc_ok, strict=True))
    assert comparison["only_ctc_right"] == sum(c and not s for s, c in zip(seg_ok, ctc_ok, strict=True))
    assert comparison["only_segment_right"] == sum(s and not c for s, c in zip(seg_ok, ctc_ok, strict=True))
    for route in ("segment", "ctc"):
        chosen = [r for r in labelled if r["route"] == route]
        got = comparison["auto_choices"].get(route, {"chosen": 0, "right": 0})
        assert got["chosen"] == len(chosen) and got["right"] == sum(r["correct"] == "1" for r in chosen)
    assert sum(b["images"] for b in report["calibration"]["auto"]) == len(labelled)
    # The segmentation ceiling is at least what the segment route reached.
    assert report["segmentation"]["reachable_images"] >= sum(seg_ok) - 1  # the hostile image aside
    assert report["timing"]["images_per_second"] > 0 and "classify" in report["timing"]["ms_per_image"]


class Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []
        self.tags: list[str] = []
        self.void = {"meta", "img", "br", "link"}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in self.void:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_html_is_well_formed_and_escapes_names(labelled_run: Path):
    page = (labelled_run / "report.html").read_text(encoding="utf-8")
    parser = Parser()
    parser.feed(page)
    parser.close()
    assert parser.stack == []  # every element closed, properly nested
    assert "script" not in parser.tags and parser.tags.count("img") >= 3
    assert HOSTILE in "".join(parser.text)  # shown as text ...
    assert HOSTILE not in page  # ... because it was escaped
    assert "http://" not in page and "https://" not in page  # self-contained
    debug = labelled_run / "debug"
    assert any(debug.iterdir())  # --debug-failures is the default when labels are known
    with (labelled_run / "predictions.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["route"] != "error"]
    drawn = {p.name for p in debug.iterdir()}
    for row in rows:  # exactly the wrong or unsure readings get stage images
        unsure = row["correct"] == "0" or float(row["confidence"]) < 0.5
        assert (Path(row["file"]).stem in drawn) == unsure, row["file"]
        if unsure:
            assert (debug / Path(row["file"]).stem / "strip.png").is_file()


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (.ci/run installs Debian's)")
def test_run_report_renders(labelled_run: Path, tmp_path: Path):
    import numpy as np
    from PIL import Image

    png = tmp_path / "report.png"
    screenshot(labelled_run / "report.html", png, width=1000, height=1600)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.std() > 10
