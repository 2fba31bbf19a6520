"""Accuracy of a bundle on its own validation split (the files its manifest lists: never trained on).

    python bench/accuracy.py --model captcha_v2 [--data ../shared/datasets/captcha_v2/train]

Runs both readers on every validation image (``--mode both``: segment, ctc and auto on the same
images), feeds the stage-wise report, and writes ``bench/results/accuracy_<model>.json``; prints
the headline figures the README quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.batches import iter_prepared  # noqa: E402
from pipeline.bundle import load_bundle  # noqa: E402
from pipeline.config import StageParams  # noqa: E402
from pipeline.dataset import list_images  # noqa: E402
from pipeline.recognize import recognize  # noqa: E402
from pipeline.report import Report  # noqa: E402
from pipeline.run import load_readers, routing_threshold  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def measure(model: str, data: Path | None) -> dict:
    bundle = load_bundle(model)
    folder = data or Path(bundle.manifest["data"]["folder"])
    wanted = set(bundle.manifest["data"].get("validation_files", []))
    if not wanted:
        raise SystemExit(f"bundle {bundle.name} lists no validation files; retrain it with pipeline.train")
    items = [it for it in list_images(folder) if it.rel in wanted]
    if len(items) != len(wanted):
        raise SystemExit(f"{folder}: found {len(items)} of the {len(wanted)} validation files of {bundle.name}")
    readers = ("glyph" in bundle.manifest["readers"], "ctc" in bundle.manifest["readers"])
    mode = {(True, True): "both", (True, False): "segment", (False, True): "ctc"}[readers]
    classifier, line_reader = load_readers(bundle, mode)
    params = StageParams.from_dict(bundle.manifest.get("params"))
    report = Report(bundle.charset)
    started = time.perf_counter()
    done = 0
    for chunk in iter_prepared([it.path for it in items], params=params, lengths=bundle.lengths,
                               height=bundle.image_height):
        batch_items = items[done : done + len(chunk)]
        done += len(chunk)
        ok = [(it, p) for it, p in zip(batch_items, chunk, strict=True) if not isinstance(p, str)]
        traces = recognize([p for _, p in ok], mode=mode, lengths=bundle.lengths, classifier=classifier,
                           line_reader=line_reader, threshold=routing_threshold(bundle))
        for (it, _), trace in zip(ok, traces, strict=True):
            report.update(it.rel, trace, it.label)
        for it, p in zip(batch_items, chunk, strict=True):
            if isinstance(p, str):
                report.update(it.rel, None, it.label, error=p)
    summary = report.summary(seconds=time.perf_counter() - started)
    summary["bundle"] = {"name": bundle.name, "mode": mode, "threshold": routing_threshold(bundle),
                         "validation_files": len(items), "data": str(folder)}
    return summary


def headline(s: dict) -> list[str]:
    lines = [f"{s['bundle']['name']}: {s['bundle']['validation_files']} validation images (mode {s['bundle']['mode']})"]
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
    if s["comparison"].get("auto_choices"):
        lines.append(f"  comparison: {json.dumps({k: v for k, v in s['comparison'].items()})}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle name or path (repeatable); default: all shipped")
    parser.add_argument("--data", type=Path, default=None, help="the training folder (default: the manifest's)")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    for model in args.model or ["captcha_v2", "wp_rsc"]:
        summary = measure(model, args.data)
        (RESULTS / f"accuracy_{summary['bundle']['name']}.json").write_text(json.dumps(summary, indent=1) + "\n")
        print("\n".join(headline(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
