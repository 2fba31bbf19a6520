"""Does the segment route read the same when the glyph CNN is asked about fewer segments, and how
much faster is it?

    python bench/lazy.py [--model captcha_v2 --model wp_rsc] [--repeats 3]

``recognize.read_segments`` classifies only the candidate segments the best path can need (a few
rounds per batch; see its docstring); ``every=True`` classifies all of them in one call, as the
segment route did before. For each bundle this runs the classic stages on every image of its
training folder (it compares two ways of reading and measures no accuracy claim), reads it both
ways in batches of ``batches.CHUNK`` images (as ``pipeline.run`` does), and counts the readings,
chosen paths and failures that differ, the largest difference of a chosen glyph's confidence,
and the share of segments classified. The time of a whole pass (CNN calls and path choice) is
the median of ``--repeats`` passes each way, the two taking turns (this machine's speed drifts
over minutes). Writes ``bench/results/lazy.json``.
"""

from __future__ import annotations

import statistics
import sys
from typing import Any

import numpy as np
from common import main_over_bundles, timed, training_images

from pipeline.batches import CHUNK
from pipeline.bundle import quiet_tensorflow
from pipeline.glyph_cnn import GlyphClassifier
from pipeline.recognize import read_segments


class Counting:
    """A glyph reader that counts the crops it is asked about."""

    def __init__(self, inner: GlyphClassifier) -> None:
        self.inner, self.charset, self.asked = inner, inner.charset, 0

    def predict(self, crops: np.ndarray) -> np.ndarray:
        self.asked += len(crops)
        return self.inner.predict(crops)


def measure(model: str, repeats: int) -> dict[str, Any]:
    bundle, folder, prepared = training_images(model)
    batches = [prepared[a : a + CHUNK] for a in range(0, len(prepared), CHUNK)]
    with quiet_tensorflow():
        classifier = Counting(GlyphClassifier.from_bundle(bundle, precision="float32"))
        classifier.inner.warm_up()

    def read(every: bool) -> list[Any]:
        return [r for batch in batches for r in read_segments(batch, classifier, bundle.lengths, every=every)]

    out, seconds = timed({"every": lambda: read(True), "lazy": lambda: read(False)}, repeats)
    classifier.asked = 0
    read(False)
    lazy_asked = classifier.asked
    segments = sum(len(p.crops) for p in prepared)
    pairs = list(zip(out["every"], out["lazy"], strict=True))
    conf = [np.abs(a[0].char_conf - b[0].char_conf).max() for a, b in pairs
            if len(a[0].char_conf) and len(a[0].char_conf) == len(b[0].char_conf)]
    per = {name: statistics.median(s) / len(prepared) * 1e3 for name, s in seconds.items()}
    result = {
        "model": bundle.name, "folder": str(folder), "images": len(prepared), "segments": segments,
        "segments_classified_lazy": lazy_asked, "share_classified": round(lazy_asked / max(1, segments), 4),
        "readings_differing": sum(a[0].text != b[0].text for a, b in pairs),
        "failures_differing": sum(a[0].failure != b[0].failure for a, b in pairs),
        "paths_differing": sum(_ids(a[1]) != _ids(b[1]) for a, b in pairs),
        "max_confidence_difference": float(max(conf, default=0.0)),
        "milliseconds_per_image": {k: round(v, 4) for k, v in per.items()},
        "milliseconds_per_image_runs": {k: [round(x / len(prepared) * 1e3, 4) for x in s] for k, s in seconds.items()},
        "speed_ratio_lazy_over_every": round(per["every"] / per["lazy"], 2),
    }
    print(f"{bundle.name}: {result['readings_differing']} of {len(prepared)} readings and {result['paths_differing']} "
          f"paths differ; {lazy_asked} of {segments} segments classified; "
          f"{per['every']:.3f} -> {per['lazy']:.3f} ms an image ({result['speed_ratio_lazy_over_every']}x)", flush=True)
    return result


def _ids(path: Any) -> tuple[int, ...] | None:
    return None if path is None else tuple(int(i) for i in path.segment_ids)


def main() -> int:
    return main_over_bundles(__doc__ or "", "lazy", measure, repeats=3)


if __name__ == "__main__":
    sys.exit(main())
