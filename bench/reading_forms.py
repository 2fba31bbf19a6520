"""Do the networks' reading forms read the same as the networks as trained, and how much faster?

    python bench/reading_forms.py [--model captcha_v2 --model wp_rsc] [--repeats 5]

``pipeline.run`` reads with the forms of ``pipeline/reading_form.py``: batch normalisation folded,
the first block on 2x2 cells (for Keras: the glyph CNN's TensorFlow Lite form keeps the plain
convolution, which its kernels run faster), and for the glyph CNN the last block trimmed to what
its pooling reads and 512 crops a call. For each bundle this runs the classic stages on every image of its
training folder (it compares two forms of one network and measures no accuracy claim) and reads
it with both forms of each network: the glyph CNN (the network as trained, normalisation layers
and all, at 4,096 crops a call, the batch size training scores with, against
``GlyphClassifier.from_bundle`` run by Keras, ``reading_keras``, and by TensorFlow Lite,
``reading``, what ``pipeline.run`` uses by default where TensorFlow has it) and the CRNN (the
inference model of ``build_crnn`` against ``CtcReader.from_bundle``). It counts the readings and
the glyph crops' top classes that differ from the network as trained, and the largest difference
of a probability. Each network's time over all its inputs is the
median of ``--repeats`` passes per form, the two forms taking turns (this machine's speed
drifts over minutes). Writes ``bench/results/reading_forms.json``.
"""

from __future__ import annotations

import functools
import statistics
import sys
from typing import Any

import numpy as np
from common import main_over_bundles, timed, training_images

from pipeline.bundle import quiet_tensorflow
from pipeline.crnn import CtcReader, build_crnn, decode
from pipeline.glyph_cnn import GlyphClassifier, trained_network
from pipeline.line_input import prepare_batch
from pipeline.recognize import Prepared, read_segments


def _speed(seconds: dict[str, list[float]], n: int, unit: str) -> dict[str, Any]:
    per = {name: statistics.median(s) / n * 1e6 for name, s in seconds.items()}
    ratios = {f"speed_ratio_{name}_over_trained": round(per["trained"] / v, 2) for name, v in per.items()
              if name != "trained"}
    return {f"microseconds_per_{unit}": {k: round(v, 2) for k, v in per.items()},
            f"microseconds_per_{unit}_runs": {k: [round(x / n * 1e6, 2) for x in s] for k, s in seconds.items()},
            **ratios}


def _differences(texts: dict[str, list[str]], probs: dict[str, np.ndarray], form: str) -> dict[str, Any]:
    """How ``form`` differs from the network as trained: readings, crops' top classes, probabilities."""
    a, b = probs["trained"], probs[form]
    return {"readings_differing": sum(x != y for x, y in zip(texts["trained"], texts[form], strict=True)),
            "crops_top_class_differing": int((a.argmax(axis=1) != b.argmax(axis=1)).sum()),
            "max_probability_difference": float(np.abs(a - b).max())}


def glyph_cnn(bundle: Any, prepared: list[Prepared], repeats: int) -> dict[str, Any]:
    crops = np.concatenate([p.crops for p in prepared]).astype(np.float32) / 255.0
    with quiet_tensorflow():
        forms = {"trained": GlyphClassifier(trained_network(bundle)[0], bundle.charset, batch_size=4096),
                 "reading_keras": GlyphClassifier.from_bundle(bundle, precision="float32", engine="keras"),
                 "reading": GlyphClassifier.from_bundle(bundle, precision="float32")}
        for classifier in forms.values():
            classifier.warm_up()
    texts = {name: [r.text for r, *_ in read_segments(prepared, c, bundle.lengths)] for name, c in forms.items()}
    probs, seconds = timed({name: functools.partial(c.predict, crops) for name, c in forms.items()}, repeats)
    return {"crops": len(crops), "reading_engine": forms["reading"].engine, **_differences(texts, probs, "reading"),
            "reading_keras": _differences(texts, probs, "reading_keras"), **_speed(seconds, len(crops), "crop")}


def crnn(bundle: Any, prepared: list[Prepared], repeats: int) -> dict[str, Any]:
    entry = bundle.reader("ctc")
    with quiet_tensorflow():
        reading = CtcReader.from_bundle(bundle)
        training, inference = build_crnn(**entry["architecture"])
        training.load_weights(bundle.weights_path("ctc"))
        trained = CtcReader(inference, reading.charset, reading.height, reading.width)
    x = prepare_batch([p.planes()[0] for p in prepared], height=reading.height, width=reading.width)
    forms = {"trained": trained, "reading": reading}
    for reader in forms.values():
        reader.read_inputs(x[:2])  # trace the predict function before timing
    def run(reader: CtcReader) -> np.ndarray:  # 256 images a call, as CtcReader.read_inputs
        return np.concatenate([reader.predict_probs(x[i : i + 256]) for i in range(0, len(x), 256)])

    probs, seconds = timed({name: functools.partial(run, r) for name, r in forms.items()}, repeats)
    texts = {name: [t for t, _ in decode(p, reading.charset)] for name, p in probs.items()}
    return {"images": len(x),
            "readings_differing": sum(a != b for a, b in zip(texts["trained"], texts["reading"], strict=True)),
            "max_probability_difference": float(np.abs(probs["trained"] - probs["reading"]).max()),
            **_speed(seconds, len(x), "image")}


def measure(model: str, repeats: int) -> dict[str, Any]:
    bundle, folder, prepared = training_images(model)
    result: dict[str, Any] = {"model": bundle.name, "folder": str(folder), "images": len(prepared)}
    if bundle.reader("glyph") is not None:
        result["glyph_cnn"] = glyph_cnn(bundle, prepared, repeats)
    if bundle.reader("ctc") is not None:
        result["crnn"] = crnn(bundle, prepared, repeats)
    for network in ("glyph_cnn", "crnn"):
        if network in result:
            r = result[network]
            print(f"{bundle.name} {network}: {r['readings_differing']} of {len(prepared)} readings differ, "
                  f"largest probability difference {r['max_probability_difference']:.1e}; the reading form "
                  f"{r['speed_ratio_reading_over_trained']}x as fast"
                  + (f" (by Keras {r['speed_ratio_reading_keras_over_trained']}x)" if network == "glyph_cnn" else ""),
                  flush=True)
    return result


def main() -> int:
    return main_over_bundles(__doc__ or "", "reading_forms", measure, repeats=5)


if __name__ == "__main__":
    sys.exit(main())
