"""Routing rules on a trained bundle: the threshold each chooses on the selection images, and what
the default mode reads with it on the validation files (never used for a choice).

    python bench/routing.py DIR [--images FOLDER] [--tag TAG]

DIR is what ``python bench/synthetic.py --keep DIR`` leaves (``DIR/bundle``, ``DIR/images``) or a
bundle (its manifest's data folder holds the images unless ``--images`` says where). Both parts are
read as training reads the selection images to choose (``train.choose_threshold``): every lattice
segment classified, the CRNN on every image. The rules:

- ``search``: the threshold under which auto reads the most selection images right, ties towards
  the reader stronger alone (``train.best_threshold``; the rule up to session 29);
- ``evidence``: the same, kept only where a sign test shows it beats the stronger reader alone
  (``train.routing_choice``; ``bench/HISTORY.md``, *Routing*, session 30).

Writes ``bench/results/routing_<tag>.json`` (tag: DIR's name unless given) and prints one line a rule.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.bundle import BundleError, load_bundle, quiet_tensorflow  # noqa: E402

with quiet_tensorflow():  # TensorFlow's native start-up notices
    from pipeline.batches import prepare_all
    from pipeline.config import StageParams
    from pipeline.crnn import CtcReader
    from pipeline.dataset import FolderError, list_images
    from pipeline.glyph_cnn import GlyphClassifier
    from pipeline.recognize import Reading, read_segments
    from pipeline.train import auto_right, best_threshold, readers_right, routing_choice

CURVE = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


def read_part(bundle, folder: Path, files: list[str], classifier, ctc_reader
              ) -> tuple[list[Reading], list[Reading], list[str]]:
    """Both readers' readings of ``files`` (in ``folder``) and their labels."""
    items = {it.rel: it for it in list_images(folder)}
    missing = [f for f in files if f not in items or items[f].label is None]
    if missing:
        raise SystemExit(f"{len(missing)} of the bundle's files are missing or unlabelled in {folder}, "
                         f"e.g. {missing[0]}")
    params = StageParams.from_dict(bundle.manifest.get("params"))
    prepared = prepare_all([items[f].path for f in files], params=params, lengths=bundle.lengths,
                           height=bundle.image_height)
    if len(prepared) != len(files):
        raise SystemExit(f"{len(files) - len(prepared)} of the files in {folder} did not load")
    segment = [r for r, *_ in read_segments(prepared, classifier, bundle.lengths, every=True)]
    ctc = [Reading(t, c) for t, c in ctc_reader.read([p.planes()[0] for p in prepared])]
    return segment, ctc, [str(items[f].label) for f in files]


def measure(where: Path, images: Path | None) -> dict:
    bundle = load_bundle(where / "bundle" if (where / "bundle" / "manifest.json").is_file() else where)
    folder = images or (where / "images" if (where / "images").is_dir() else ROOT / bundle.manifest["data"]["folder"])
    data = bundle.manifest["data"]
    with quiet_tensorflow():
        classifier, ctc_reader = GlyphClassifier.from_bundle(bundle), CtcReader.from_bundle(bundle)
        parts = {part: read_part(bundle, folder, data[f"{part}_files"], classifier, ctc_reader)
                 for part in ("selection", "validation")}
    searched, _ = best_threshold(*parts["selection"])
    evidence = routing_choice(*parts["selection"])
    out: dict = {"bundle": str(bundle.path), "images": str(folder), "bundle_command": bundle.manifest.get("command"),
                 "routing_in_manifest": bundle.manifest.get("routing"),
                 "rules": {"search": {"threshold": searched}, "evidence": evidence}, "parts": {}}
    for part, (segment, ctc, labels) in parts.items():
        n = len(labels)
        seg_alone, ctc_alone = readers_right(segment, ctc, labels)
        entry: dict = {
            "images": n,
            "segment_alone": int(seg_alone.sum()),
            "ctc_alone": int(ctc_alone.sum()),
            "auto_by_threshold": {str(t): int(auto_right(segment, ctc, labels, t).sum()) for t in CURVE},
        }
        for rule, chosen in out["rules"].items():
            right = auto_right(segment, ctc, labels, chosen["threshold"])
            entry[rule] = {"threshold": chosen["threshold"], "right": int(right.sum()), "accuracy": float(right.mean()),
                           "wins_over_ctc": int((right & ~ctc_alone).sum()),
                           "losses_to_ctc": int((ctc_alone & ~right).sum())}
        out["parts"][part] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("where", type=Path, help="a synthetic.py --keep folder, or a bundle")
    parser.add_argument("--images", type=Path, help="the folder holding the bundle's selection and validation files")
    parser.add_argument("--tag", help="results file tag (default: the folder's name)")
    args = parser.parse_args()
    try:
        result = measure(args.where, args.images)
    except (BundleError, FolderError) as exc:
        raise SystemExit(f"routing: {exc}") from None
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"routing_{args.tag or args.where.resolve().name}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for part, entry in result["parts"].items():
        print(f"{part}: {entry['images']} images, segment alone {entry['segment_alone']}, "
              f"ctc alone {entry['ctc_alone']}; "
              + "; ".join(f"{rule} rule (threshold {entry[rule]['threshold']:.2f}) {entry[rule]['right']} right"
                          for rule in result["rules"]))
    print(f"evidence: {json.dumps(result['rules']['evidence'])}\n{path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
