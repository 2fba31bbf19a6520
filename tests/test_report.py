"""The report accumulator on constructed traces (exact counts), and the HTML's escaping."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from pipeline.recognize import Prepared, Reading, Trace
from pipeline.report import BINS, Report, RouteStats, edit_distance
from pipeline.report_html import find_chromium, render, screenshot
from pipeline.segment import propose

CHARSET = "abc"


def trace(seg: str, ctc: str, route: str, *, n_components: int = 3, conf: float = 0.9) -> Trace:
    mask = np.zeros((10, 40), bool)
    for k in range(n_components):
        mask[2:8, 2 + 12 * k : 8 + 12 * k] = True
    prepared = Prepared(np.zeros((10, 40), np.uint8), mask, mask, propose(mask, lengths=(3,)),
                        ms={"binarize": 1.0, "clean": 3.0})
    t = Trace(prepared=prepared, segment=Reading(seg, np.full(len(seg), conf)),
              ctc=Reading(ctc, np.full(len(ctc), conf)), route=route, reason="test", ms=dict(prepared.ms))
    t.text = seg if route == "segment" else ctc
    return t


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("", "", 0), ("abc", "abc", 0), ("abc", "abd", 1), ("abc", "ab", 1), ("", "abc", 3), ("kitten", "sitting", 3)],
)
def test_edit_distance(a: str, b: str, distance: int):
    assert edit_distance(a, b) == distance


def test_counts_and_comparison():
    report = Report(CHARSET)
    report.update("1.png", trace("abc", "abc", "segment"), "abc")  # both right, auto right
    report.update("2.png", trace("abb", "abc", "ctc", n_components=2), "abc")  # only ctc right
    report.update("3.png", trace("abc", "aac", "segment", n_components=4), "abc")  # only segment right
    report.update("4.png", trace("cca", "bbb", "ctc"), "abc")  # both wrong
    report.update("5.png", None, "abc", error="empty file")
    report.update("6.png", trace("abc", "abc", "segment"), None)  # unlabelled: timing only
    s = report.summary(seconds=2.0)
    assert (s["images"], s["errors"], s["labelled"]) == (6, 1, 4)
    assert s["comparison"]["both_right"] == 1 and s["comparison"]["only_ctc_right"] == 1
    assert s["comparison"]["only_segment_right"] == 1 and s["comparison"]["both_wrong"] == 1
    assert s["routes"]["segment"]["accuracy"] == 0.5 and s["routes"]["ctc"]["accuracy"] == 0.5
    assert s["routes"]["auto"]["accuracy"] == 0.75
    assert [s["routes"][r]["right"] for r in ("segment", "ctc", "auto")] == [2, 2, 3]
    assert s["comparison"]["auto_choices"] == {"segment": {"chosen": 2, "right": 2}, "ctc": {"chosen": 2, "right": 1}}
    assert s["comparison"]["auto_gain_over"] == {"segment": 0.25, "ctc": 0.25}
    # CER of ctc: 0 + 0 + 1 ("aac") + 2 ("bbb") edits over 12 label characters.
    assert s["routes"]["ctc"]["cer"] == pytest.approx(3 / 12)
    assert s["segmentation"]["components"] == {"right_count": 2, "too_few": 1, "too_many": 1}
    g = s["glyphs"]
    assert g["glyphs"] == 12 and g["accuracy"] == pytest.approx(8 / 12)
    assert g["per_character"]["a"]["recall"] == pytest.approx(3 / 4)
    assert ["c", "b", 1] in g["most_confused"] or ["b", "c", 1] in g["most_confused"]
    assert s["timing"]["ms_per_image"] == {"binarize": 1.0, "clean": 3.0}
    assert s["timing"]["images_per_second"] == 3.0
    assert sum(b["images"] for b in s["calibration"]["auto"]) == 4


def test_readings_with_a_rejected_box_are_counted_apart():
    report = Report(CHARSET)
    for seg, failure in (("abc", "found 2 glyphs, expected 3"), ("abb", "found 2 glyphs, expected 3"),
                         ("", "no segmentation into 3 glyphs"), ("abc", None)):
        t = trace(seg, "abc", "segment")
        t.segment = Reading(seg, np.full(len(seg), 0.4), failure)
        report.update(f"{seg}.png", t, "abc")
    s = report.summary(seconds=1.0)["segmentation"]
    # Two readings of three glyphs with a rejected box, one right; the empty one is a plain failure.
    assert s["rejected_box"] == {"images": 2, "right": 1}
    assert s["failures"] == {"found 2 glyphs, expected 3": 2, "no segmentation into 3 glyphs": 1}
    assert Report(CHARSET).summary(seconds=1.0)["segmentation"]["rejected_box"] == {"images": 0, "right": 0}


def test_gallery_keeps_the_worst_n():
    report = Report(CHARSET, gallery_size=2)
    for k, conf in enumerate([0.9, 0.2, 0.6, 0.1]):
        report.update(f"{k}.png", trace("abb", "abb", "segment", conf=conf), "abc")
    report.update("right.png", trace("abc", "abc", "segment"), "abc")
    kept = sorted(e.file for e in report.gallery)
    assert kept == ["1.png", "3.png"]  # the two least confident wrong readings


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_html_escapes_hostile_names_and_is_self_contained():
    report = Report(CHARSET)
    hostile = "<img src=x onerror=alert(1)>.png"
    report.update(hostile, trace("abb", "<b>", "segment", conf=0.3), "abc")
    page = render(report.summary(seconds=1.0), report.gallery)
    assert hostile not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page
    parser = Collector()
    parser.feed(page)
    assert "script" not in parser.tags
    sources = [v for k, v in parser.attrs if k in ("src", "href")]
    assert sources and all(v and v.startswith("data:image/png;base64,") for v in sources)
    assert not any(k.startswith("on") for k, _ in parser.attrs)


@pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (.ci/run installs Debian's)")
def test_page_renders_in_headless_chromium(tmp_path):
    report = Report(CHARSET)
    for k in range(6):
        report.update(f"{k}.png", trace("abb" if k % 2 else "abc", "abc", "segment", conf=0.3 + 0.1 * k), "abc")
    page = tmp_path / "report.html"
    page.write_text(render(report.summary(seconds=1.0), report.gallery), encoding="utf-8")
    png = tmp_path / "shot.png"
    screenshot(page, png, width=800, height=900)
    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    assert pixels.shape == (900, 800)
    assert pixels.std() > 10 and (pixels < 100).mean() > 0.005  # text drawn, not a blank page


def test_a_right_segment_reading_is_always_reachable():
    """reachable() is the ceiling of the segment route: every right reading must count as reachable,
    even when the reject class outweighs a glyph's best character."""
    from pipeline.recognize import reachable, read_segments
    from tests.test_paths import TableGlyphs, coded

    mask = np.zeros((20, 60), bool)
    for k in range(3):
        mask[3:17, 3 + 20 * k : 13 + 20 * k] = True
    lattice = propose(mask, lengths=(3,))
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(4), len(lattice.segments))
    probs[:, 3] += 2.0  # reject dominates every segment
    probs /= probs.sum(axis=1, keepdims=True)
    reader = TableGlyphs(probs, charset=CHARSET)
    ((reading, _, _, lattice_probs),) = read_segments(coded([lattice]), reader, (3,), every=True)
    assert reading.text and reachable(lattice, lattice_probs, reading.text, CHARSET)


@pytest.mark.parametrize("confidence", [0.0, 0.05, 0.1, 0.2, 0.3, 0.30000000000000004, 0.7, 0.9999, 1.0])
def test_calibration_bins_are_searchsorted_bins(confidence: float):
    """A confidence lands in the bin np.searchsorted gives (edges are the float BINS), the top
    edge in the last bin."""
    stats = RouteStats()
    stats.update(Reading("ab", np.array([confidence, 1.0])), "ab")
    expected = min(int(np.searchsorted(BINS, np.prod([confidence, 1.0]), side="right")) - 1, len(BINS) - 2)
    assert stats.bins[:, 0].tolist() == [int(i == max(expected, 0)) for i in range(len(BINS) - 1)]
