"""Accuracy of a bundle on its own validation split (the files its manifest lists: never trained on).

    python bench/accuracy.py [--model captcha_v2 --model wp_rsc] [--screenshot]

Links the bundle's validation files into a temporary folder (nothing copied), runs the real CLI,
``python -m pipeline.run --mode both`` (segment, ctc and auto on the same images), and keeps its
``report.json`` as ``bench/results/accuracy_<model>.json``; prints the headline figures the README
quotes. ``--screenshot`` also renders the run's report.html in headless Chromium to
``bench/results/report_<model>.png`` (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.bundle import load_bundle  # noqa: E402
from pipeline.report_html import screenshot  # noqa: E402
from pipeline.run import main as run  # noqa: E402


def measure(model: str, *, shot: bool) -> dict:
    bundle = load_bundle(model)
    source = ROOT / bundle.manifest["data"]["folder"]
    files = bundle.manifest["data"].get("validation_files")
    if not files:
        raise SystemExit(f"bundle {bundle.name} lists no validation files; retrain it with pipeline.train")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "validation"
        folder.mkdir()
        for rel in files:
            if not (source / rel).is_file():
                raise SystemExit(f"validation file {source / rel} of {bundle.name} is missing")
            (folder / rel).symlink_to((source / rel).resolve())
        out = Path(tmp) / "out"
        code = run([str(folder), "--out", str(out), "--model", bundle.name, "--mode", "both", "--no-debug", "-q"])
        if code != 0:
            raise SystemExit(f"pipeline.run exited with {code}")
        summary = json.loads((out / "report.json").read_text(encoding="utf-8"))
        if shot:
            png = RESULTS / f"report_{bundle.name}.png"
            try:  # the figures are measured either way; the picture is a bonus
                screenshot(out / "report.html", png)
                print(f"screenshot: {png}")
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                print(f"no screenshot of {bundle.name}'s report: {exc}", file=sys.stderr)
    summary["run"] = {"model": bundle.name, "mode": "both", "validation_files": len(files),
                      "data": bundle.manifest["data"]["folder"], "threshold": bundle.manifest.get("routing")}
    # The strict reading of "failures count as wrong": a reading whose path holds a box the CNN
    # rejects ("found 4 glyphs, expected 5") counted wrong even where its text is right.
    seg_route, rejected = summary["routes"].get("segment"), summary["segmentation"].get("rejected_box")
    if seg_route and rejected and seg_route["images"]:
        right = seg_route["right"] - rejected["right"]
        summary["segment_rejected_boxes_wrong"] = {"accuracy": right / seg_route["images"], "right": right,
                                                   "images": seg_route["images"]}
    return summary


def headline(s: dict) -> list[str]:
    lines = [f"{s['run']['model']}: {s['run']['validation_files']} validation images"]
    for route, r in s["routes"].items():
        lines.append(f"  {route:8s} whole-CAPTCHA accuracy {r['accuracy']:.2%}  char accuracy {r['char_accuracy']:.2%}"
                     f"  CER {r['cer']:.3f}")
    g, seg = s["glyphs"], s["segmentation"]
    if g.get("glyphs"):
        lines.append(f"  glyph accuracy {g['accuracy']:.2%} over {g['glyphs']} glyphs "
                     "(segment readings of the right length)")
        worst = sorted(g["per_character"].items(), key=lambda kv: kv[1]["recall"])[:5]
        lines.append("  hardest characters (recall): " + ", ".join(f"{c} {v['recall']:.2%}" for c, v in worst))
    if seg.get("reachable") is not None:
        comp = seg["components"]
        lines.append(f"  right reading reachable from the candidate boxes: {seg['reachable']:.2%}; "
                     f"classic component count right: {comp['right_count']}/{seg['images']}")
    strict = s.get("segment_rejected_boxes_wrong")
    if strict:
        lines.append(f"  segment route with every reading that holds a rejected box counted wrong: "
                     f"{strict['accuracy']:.2%} ({strict['right']}/{strict['images']})")
    lines.append(f"  comparison: {json.dumps(s['comparison'])}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle name or path (repeatable); default: both shipped")
    parser.add_argument("--screenshot", action="store_true", help="also render report.html to a PNG")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for model in args.model or ["captcha_v2", "wp_rsc"]:
        summary = measure(model, shot=args.screenshot)
        (RESULTS / f"accuracy_{summary['run']['model']}.json").write_text(json.dumps(summary, indent=1) + "\n")
        print("\n".join(headline(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
