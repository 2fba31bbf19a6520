"""Does the glyph CNN read the same in bfloat16 as in float32, and how much faster is it?

    python bench/precision.py [--model captcha_v2 --model wp_rsc]

For each bundle, runs the classic stages on every image of its training folder (all of them: this
compares two arithmetics of one network, it measures no accuracy claim), then reads the segment
route with the glyph CNN in float32 and in bfloat16 (``GlyphClassifier.from_bundle(precision=...)``,
what ``pipeline.run --precision`` does), and counts the images whose reading differs, the
candidate crops whose top class differs, and the largest difference of a probability. The CNN's
time over all crops is the median of 3 passes per precision, in batches of 512 (the CNN alone, not
the run: for that, ``bench/speed.py --precision``); and, as a run calls it, the median of 3 passes
over the calls that ``read_segments`` makes on the images in chunks of ``batches.CHUNK`` (every
call's own batch size, a few to several hundred crops). Writes ``bench/results/precision.json``.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
from common import main_over_bundles, training_images

from pipeline.batches import CHUNK
from pipeline.bundle import quiet_tensorflow
from pipeline.glyph_cnn import GlyphClassifier, cpu_has_bf16
from pipeline.recognize import read_segments


class _Calls:
    """A glyph classifier that keeps the crops of every call ``read_segments`` makes of it."""

    def __init__(self, classifier: GlyphClassifier) -> None:
        self.charset = classifier.charset
        self._classifier = classifier
        self.calls: list[np.ndarray] = []

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.calls.append(crops)
        return self._classifier.predict(crops)


def measure(model: str) -> dict:
    bundle, folder, prepared = training_images(model)
    crops = np.concatenate([p.crops for p in prepared]).astype(np.float32) / 255.0
    texts, probs, seconds, in_run, engines = {}, {}, {}, {}, {}
    calls: list[np.ndarray] = []
    for precision in ("float32", "bfloat16"):
        with quiet_tensorflow():
            classifier = GlyphClassifier.from_bundle(bundle, precision=precision)
            classifier.warm_up()
        engines[precision] = classifier.engine
        texts[precision] = [reading.text for reading, *_ in read_segments(prepared, classifier, bundle.lengths)]
        times = []
        for _ in range(3):
            started = time.perf_counter()
            probs[precision] = classifier.predict(crops)
            times.append(time.perf_counter() - started)
        seconds[precision] = statistics.median(times)
        if not calls:  # the calls of a run, recorded once (float32's), replayed for both
            recorder = _Calls(classifier)
            for start in range(0, len(prepared), CHUNK):
                read_segments(prepared[start : start + CHUNK], recorder, bundle.lengths)
            calls = recorder.calls
        times = []
        for _ in range(3):
            started = time.perf_counter()
            for call in calls:
                classifier.predict(call)
            times.append(time.perf_counter() - started)
        in_run[precision] = statistics.median(times)
    a, b = probs["float32"], probs["bfloat16"]
    run_crops = sum(len(c) for c in calls)
    result = {
        "model": bundle.name, "folder": str(folder), "images": len(prepared), "crops": len(crops),
        "cpu_has_native_bfloat16": cpu_has_bf16(),
        "readings_differing": sum(x != y for x, y in zip(texts["float32"], texts["bfloat16"], strict=True)),
        "crops_top_class_differing": int((a.argmax(axis=1) != b.argmax(axis=1)).sum()),
        "max_probability_difference": float(np.abs(a - b).max()),
        "cnn_microseconds_per_crop": {k: round(v / len(crops) * 1e6, 2) for k, v in seconds.items()},
        "cnn_speed_ratio_bfloat16_over_float32": round(seconds["float32"] / seconds["bfloat16"], 2),
        "engines": engines,
        "run_calls": len(calls), "run_crops": run_crops,
        "cnn_microseconds_per_crop_in_run_calls": {k: round(v / run_crops * 1e6, 2) for k, v in in_run.items()},
        "cnn_speed_ratio_bfloat16_over_float32_in_run_calls": round(in_run["float32"] / in_run["bfloat16"], 2),
    }
    ratio = result["cnn_speed_ratio_bfloat16_over_float32"]
    print(f"{bundle.name}: {result['readings_differing']} of {len(prepared)} readings differ, "
          f"{result['crops_top_class_differing']} of {len(crops)} crops change top class, largest probability "
          f"difference {result['max_probability_difference']:.3f}; CNN {ratio}x the crops/s in bfloat16 "
          f"in batches of 512, {result['cnn_speed_ratio_bfloat16_over_float32_in_run_calls']}x in a run's "
          f"{len(calls)} calls (native bfloat16: {result['cpu_has_native_bfloat16']})", flush=True)
    return result


def main() -> int:
    return main_over_bundles(__doc__ or "", "precision", measure)


if __name__ == "__main__":
    sys.exit(main())
