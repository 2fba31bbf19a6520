"""report.html: the stage-wise report for people, one self-contained file.

Everything is inline: CSS in a <style>, pictures (confusion matrix, calibration plot, each failure's
stage images) as ``data:image/png;base64`` URIs. There is no script and no external asset. Every
string that comes from a file name, a label or a reading goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.debug import encode_png, stage_images
from pipeline.report import GalleryEntry

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 12px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.big{font-size:28px;font-weight:600}
.cards{display:flex;gap:16px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;padding:10px 14px}
.fail{border:1px solid #e0c0c0;border-radius:6px;padding:8px;margin:10px 0}
.fail img{image-rendering:pixelated;max-width:100%}.muted{color:#777}code{background:#f4f4f4;padding:0 3px}
"""


def render(summary: dict[str, Any], gallery: Sequence[GalleryEntry]) -> str:
    """The whole HTML page for a report summary and its kept failures."""
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        "<title>CAPTCHA pipeline report</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>CAPTCHA pipeline report</h1>",
        _run_line(summary),
        _headline(summary),
        _routes(summary),
        _comparison(summary),
        _segmentation(summary),
        _glyphs(summary),
        _calibration(summary),
        _timing(summary),
        _gallery(gallery),
        "</body></html>",
    ]
    return "\n".join(parts)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _run_line(s: dict[str, Any]) -> str:
    run = s.get("run", {})
    return (f"<p class='muted'>folder <code>{_e(run.get('folder', ''))}</code>, model <code>{_e(run.get('model', ''))}"
            f"</code>, mode <code>{_e(run.get('mode', ''))}</code>: {s['images']} images, {s['errors']} unreadable, "
            f"{s['labelled']} labelled.</p>")


def _headline(s: dict[str, Any]) -> str:
    cards = []
    for route, r in s.get("routes", {}).items():
        cards.append(f"<div class='card'><div class='muted'>{_e(route)} route</div><div class='big'>"
                     f"{_pct(r['accuracy'])}</div><div class='muted'>whole-CAPTCHA accuracy, "
                     f"{r['images']} images</div></div>")
    seg = s.get("segmentation", {})
    if seg.get("reachable") is not None:
        cards.append(f"<div class='card'><div class='muted'>right reading reachable</div><div class='big'>"
                     f"{_pct(seg['reachable'])}</div><div class='muted'>from the segmenter's candidate boxes"
                     f"</div></div>")
    return "<div class='cards'>" + "".join(cards) + "</div>"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th class='l'>{_e(h)}</th>" if i == 0 else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td class='l'>{_e(c)}</td>" if i == 0 else f"<td>{_e(c)}</td>" for i, c in enumerate(row))
        + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _routes(s: dict[str, Any]) -> str:
    rows = [[route, r["images"], _pct(r["accuracy"]), _pct(r["char_accuracy"]), f"{r['cer']:.4f}",
             _conf(r["mean_confidence_right"]), _conf(r["mean_confidence_wrong"])]
            for route, r in s.get("routes", {}).items()]
    return "<h2>Readers on the same images</h2>" + _table(
        ["route", "images", "accuracy", "char accuracy", "CER", "mean conf. right", "mean conf. wrong"], rows)


def _conf(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.3f}"


def _comparison(s: dict[str, Any]) -> str:
    c = s.get("comparison", {})
    if not c.get("auto_choices"):
        return ""
    rows = [[k.replace("_", " "), c.get(k, 0)] for k in ("both_right", "only_segment_right", "only_ctc_right",
                                                          "both_wrong")]
    choices = [[route, v.get("chosen", 0), v.get("right", 0)] for route, v in c["auto_choices"].items()]
    gains = ", ".join(f"{_e(k)} {100 * v:+.2f} points" for k, v in c.get("auto_gain_over", {}).items())
    return ("<h2>Segment versus CTC</h2>" + _table(["outcome", "images"], rows)
            + "<p>auto chose:</p>" + _table(["route", "chosen", "right"], choices)
            + (f"<p>auto's gain over each reader alone: {gains}</p>" if gains else ""))


def _segmentation(s: dict[str, Any]) -> str:
    seg = s.get("segmentation", {})
    if not seg.get("images"):
        return ""
    comp = seg["components"]
    rows = [["classic component count right", comp["right_count"]], ["too few components", comp["too_few"]],
            ["too many components", comp["too_many"]],
            ["right reading reachable from candidate boxes", seg.get("reachable_images", 0)]]
    rows += [[f"failure: {reason}", n] for reason, n in seg.get("failures", {}).items()]
    rejected = seg.get("rejected_box", {})
    if rejected.get("images"):
        rows.append(["of those, N glyphs read with a box the CNN rejects (right / all)",
                     f"{rejected['right']} / {rejected['images']}"])
    return "<h2>Segmentation</h2>" + _table(["outcome", "images"], rows)


def _glyphs(s: dict[str, Any]) -> str:
    g = s.get("glyphs", {})
    if not g.get("glyphs"):
        return ""
    rows = [[c, f"{v['precision']:.3f}", f"{v['recall']:.3f}", v["support"]] for c, v in g["per_character"].items()]
    pairs = ", ".join(f"{_e(t)}&rarr;{_e(p)} ({n})" for t, p, n in g["most_confused"]) or "none"
    return (f"<h2>Glyph classification</h2><p>{_pct(g['accuracy'])} of {g['glyphs']} glyphs right where the "
            f"segment reading had the label's length. Most confused (true&rarr;read): {pairs}.</p>"
            + _img(confusion_png(g["confusion"]["labels"], g["confusion"]["matrix"]), "confusion matrix")
            + _table(["character", "precision", "recall", "support"], rows))


def _calibration(s: dict[str, Any]) -> str:
    cal = s.get("calibration", {})
    if not cal:
        return ""
    rows = []
    for route, bins in cal.items():
        for b in bins:
            if b["images"]:
                rows.append([route, f"{b['low']:.1f}-{b['high']:.1f}", b["images"], _pct(b["accuracy"])])
    return ("<h2>Calibration</h2><p>Accuracy of readings by their confidence: choose a reject threshold where "
            "the accuracy is what you need.</p>" + _img(calibration_png(cal), "calibration plot")
            + _table(["route", "confidence", "images", "accuracy"], rows))


def _timing(s: dict[str, Any]) -> str:
    t = s.get("timing", {})
    rows = [[stage, f"{ms:.3f}"] for stage, ms in t.get("ms_per_image", {}).items()]
    rate = t.get("images_per_second")
    return ("<h2>Time</h2>" + _table(["stage", "ms per image"], rows)
            + (f"<p>{rate:.1f} images/s for the run.</p>" if rate else ""))


def _gallery(gallery: Sequence[GalleryEntry]) -> str:
    if not gallery:
        return "<h2>Failures</h2><p>None kept: every labelled reading was right and confident.</p>"
    out = [f"<h2>Failures ({len(gallery)} worst kept)</h2>"]
    for entry in sorted(gallery, key=lambda e: -e.priority):
        readings = []
        if entry.segment:
            readings.append(f"segment <code>{_e(entry.segment[0])}</code> ({entry.segment[1]:.2f})")
        if entry.ctc:
            readings.append(f"ctc <code>{_e(entry.ctc[0])}</code> ({entry.ctc[1]:.2f})")
        try:
            stages = stage_images(entry.trace) if entry.trace is not None else []
            pictures = "".join(f"<div>{_e(stage)}<br>{_img(encode_png(image), stage)}</div>" for stage, image in stages)
        except ValueError as exc:  # its stage images could not be made again (the file changed or went)
            pictures = f"<div>no stage images: {_e(str(exc))}</div>"
        out.append(
            f"<div class='fail'><b>{_e(entry.file)}</b>: label <code>{_e(entry.label)}</code>, read "
            f"<code>{_e(entry.prediction)}</code> by {_e(entry.route)} ({_e(entry.reason)}); "
            + "; ".join(readings)
            + f"<div class='cards'>{pictures}</div></div>"
        )
    return "\n".join(out)


def confusion_png(labels: Sequence[str], matrix: Sequence[Sequence[int]], *, cell: int = 22) -> bytes:
    """A heat map of the confusion matrix (rows true, columns read), diagonal in blue."""
    m = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    margin = 24
    img = np.full((margin + n * cell + 4, margin + n * cell + 4, 3), 255, np.uint8)
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    for i in range(n):
        for j in range(n):
            v = share[i, j]
            if v <= 0:
                continue
            strength = int(255 * (1 - 0.7 * min(1.0, 0.15 + v)))  # light enough to read a number on
            colour = (255, strength, strength) if i == j else (strength, strength, 255)
            y, x = margin + i * cell, margin + j * cell
            cv2.rectangle(img, (x, y), (x + cell - 1, y + cell - 1), colour, -1)
            if m[i, j]:
                cv2.putText(img, str(int(m[i, j])), (x + 2, y + cell - 7), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 1)
    for k, label in enumerate(labels):
        text = label if 32 <= ord(label) < 127 else "?"
        cv2.putText(img, text, (6, margin + k * cell + cell - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        cv2.putText(img, text, (margin + k * cell + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return encode_png(img)


def calibration_png(calibration: dict[str, list[dict[str, Any]]], *, size: int = 300) -> bytes:
    """Accuracy against confidence per route, with the diagonal of perfect calibration."""
    pad = 36
    img = np.full((size + 2 * pad, size + 2 * pad, 3), 255, np.uint8)

    def xy(conf: float, acc: float) -> tuple[int, int]:
        return pad + int(conf * size), pad + int((1 - acc) * size)

    cv2.rectangle(img, xy(0, 1), xy(1, 0), (180, 180, 180), 1)
    cv2.line(img, xy(0, 0), xy(1, 1), (200, 200, 200), 1)
    colours = {"segment": (40, 140, 40), "ctc": (200, 90, 20), "auto": (30, 30, 200)}
    for n, (route, bins) in enumerate(calibration.items()):
        colour = colours.get(route, (0, 0, 0))
        points = [xy((b["low"] + b["high"]) / 2, b["accuracy"]) for b in bins if b["images"]]
        for a, b in zip(points[:-1], points[1:], strict=True):
            cv2.line(img, a, b, colour, 2)
        for p in points:
            cv2.circle(img, p, 3, colour, -1)
        cv2.putText(img, route, (pad + 6, pad + 16 + 16 * n), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1)
    cv2.putText(img, "confidence", (pad + size // 2 - 40, size + 2 * pad - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (0, 0, 0), 1)
    cv2.putText(img, "accuracy", (2, pad - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return encode_png(img)


#: Flags for a headless Chromium on a closed network: no GPU, no background fetches, no sandbox
#: (CI runs as root), a fresh profile.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def find_chromium() -> str | None:
    """Path of a Chromium / Chrome binary, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if found := shutil.which(name):
            return found
    return None


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 2600, timeout: float = 90.0) -> None:
    """Render an HTML file in headless Chromium and save a PNG of it.

    Raises:
        RuntimeError: no Chromium, or it failed to write the picture.
    """
    import subprocess
    import tempfile

    binary = find_chromium()
    if binary is None:
        raise RuntimeError("no chromium found (Debian: apt-get install chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
             f"--screenshot={png.resolve()}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout,
        )
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-500:]}")
