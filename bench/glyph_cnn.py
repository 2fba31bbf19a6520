"""Does the glyph CNN's reading form read the same as the network as trained, and how much faster?

    python bench/glyph_cnn.py [--model captcha_v2 --model wp_rsc] [--repeats 5]

``GlyphClassifier.from_bundle`` reads with ``glyph_cnn.for_reading``: batch normalisation folded,
the last block trimmed to what its pooling reads, the first block on 2x2 cells, 512 crops a call.
For each bundle this runs the classic stages on every image of its training folder (it compares
two forms of one network and measures no accuracy claim), reads the segment route with both forms
(the network as trained, normalisation layers and all, at 4,096 crops a call: the batch size
training scores with), and counts the readings and the candidate crops' top classes that differ, and the
largest difference of a probability. The CNN's time over all crops is the median of ``--repeats``
passes per form, the two forms taking turns (this machine's speed drifts over minutes). Writes
``bench/results/glyph_cnn.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.batches import iter_prepared  # noqa: E402
from pipeline.bundle import load_bundle, quiet_tensorflow  # noqa: E402
from pipeline.config import StageParams  # noqa: E402
from pipeline.dataset import list_images  # noqa: E402
from pipeline.glyph_cnn import GlyphClassifier, trained_network  # noqa: E402
from pipeline.recognize import Prepared, read_segments  # noqa: E402


def measure(model: str, repeats: int) -> dict:
    bundle = load_bundle(model)
    folder = ROOT / bundle.manifest["data"]["folder"]
    params = StageParams.from_dict(bundle.manifest.get("params"))
    paths = [item.path for item in list_images(folder)]
    prepared: list[Prepared] = [p for chunk in iter_prepared(paths, params=params, lengths=bundle.lengths,
                                                             height=bundle.image_height)
                                for p in chunk if not isinstance(p, str)]
    crops = np.concatenate([p.crops for p in prepared]).astype(np.float32) / 255.0
    with quiet_tensorflow():
        forms = {"trained": GlyphClassifier(trained_network(bundle)[0], bundle.charset, batch_size=4096),
                 "reading": GlyphClassifier.from_bundle(bundle, precision="float32")}
        for classifier in forms.values():
            classifier.warm_up()
    texts = {name: [r.text for r, *_ in read_segments(prepared, c, bundle.lengths)] for name, c in forms.items()}
    probs: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(repeats):
        for name, classifier in forms.items():
            started = time.perf_counter()
            probs[name] = classifier.predict(crops)
            times[name].append(time.perf_counter() - started)
    a, b = probs["trained"], probs["reading"]
    per_crop = {name: statistics.median(t) / len(crops) * 1e6 for name, t in times.items()}
    result = {
        "model": bundle.name, "folder": str(folder), "images": len(prepared), "crops": len(crops),
        "readings_differing": sum(x != y for x, y in zip(texts["trained"], texts["reading"], strict=True)),
        "crops_top_class_differing": int((a.argmax(axis=1) != b.argmax(axis=1)).sum()),
        "max_probability_difference": float(np.abs(a - b).max()),
        "cnn_microseconds_per_crop": {k: round(v, 2) for k, v in per_crop.items()},
        "cnn_microseconds_per_crop_runs": {k: [round(s / len(crops) * 1e6, 2) for s in t] for k, t in times.items()},
        "cnn_speed_ratio_reading_over_trained": round(per_crop["trained"] / per_crop["reading"], 2),
    }
    print(f"{bundle.name}: {result['readings_differing']} of {len(prepared)} readings differ, "
          f"{result['crops_top_class_differing']} of {len(crops)} crops change top class, largest probability "
          f"difference {result['max_probability_difference']:.1e}; the reading form "
          f"{result['cnn_speed_ratio_reading_over_trained']}x the crops/s ({per_crop['reading']:.1f} against "
          f"{per_crop['trained']:.1f} us a crop)", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle name or path (repeatable; default both shipped)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = [measure(m, args.repeats) for m in (args.model or ["captcha_v2", "wp_rsc"])]
    RESULTS.mkdir(exist_ok=True)
    command = "python bench/glyph_cnn.py " + " ".join(sys.argv[1:])
    (RESULTS / "glyph_cnn.json").write_text(json.dumps({"command": command.strip(), "cpus": os.cpu_count(),
                                                        "bundles": results}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
