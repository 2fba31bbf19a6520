"""The stage-wise evaluation report: an accumulator over a run (``update`` per image, ``summary``).

It keeps counts, not images: its memory does not grow with the run, but for the glyph label
codes (two bytes per glyph, for scikit-learn's metrics) and a bounded gallery of the worst failures.
``summary()`` returns a JSON-ready dict: :data:`SCHEMA` below names every key. The same object
serves ``pipeline.run`` (report.json / report.html) and ``bench/``.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from pipeline.recognize import UNSURE, Reading, Trace, reachable

SCHEMA_VERSION = 1
ROUTES = ("segment", "ctc", "auto")
#: Confidence bins of the calibration table: [0, .1), [.1, .2) ... [.9, 1].
BINS = np.linspace(0.0, 1.0, 11)
_BIN_EDGES = BINS.tolist()

SCHEMA = {
    "schema_version": "int: version of this layout",
    "images": "int: files in the run; errors: files that could not be read; labelled: files with a known label",
    "segmentation": "components (classic count right / too few / too many), failures {reason: count}, "
    "rejected_box {images, right}: segment readings of N glyphs whose path holds a box the CNN "
    "rejects (reason 'found N-1 glyphs, expected N'; scored by their text in routes.segment), "
    "reachable (right reading reachable from the candidate boxes: a perfect judge's ceiling)",
    "glyphs": "where the segment reading has the label's length: accuracy, per_character "
    "{char: precision, recall, support}, confusion {labels, matrix}, most_confused [[true, predicted, count]]",
    "routes": "segment / ctc / auto: images, right, accuracy, char_accuracy, cer, mean_confidence_right/wrong",
    "comparison": "both_right, only_segment_right, only_ctc_right, both_wrong; auto_choices {route: {chosen, right}}; "
    "auto_gain_over {segment, ctc}",
    "calibration": "per route: bins [{low, high, images, accuracy}]",
    "timing": "ms_per_image {stage: mean ms}; images_per_second",
}


@dataclass(order=True)
class GalleryEntry:
    """One failure kept for the HTML gallery (the heap orders by ``priority``, worst last out)."""

    priority: float
    file: str = field(compare=False)
    label: str = field(compare=False)
    prediction: str = field(compare=False)
    route: str = field(compare=False)
    reason: str = field(compare=False)
    segment: tuple[str, float] | None = field(compare=False)
    ctc: tuple[str, float] | None = field(compare=False)
    trace: Trace | None = field(compare=False, default=None)  # its stages, drawn only if it is kept


class RouteStats:
    def __init__(self) -> None:
        self.images = self.right = self.chars = self.char_right = self.edits = self.label_chars = 0
        self.conf: dict[bool, list[float]] = {True: [0.0, 0], False: [0.0, 0]}  # right -> [sum, count]
        self.bins = np.zeros((len(BINS) - 1, 2), np.int64)  # per bin: images, right

    def update(self, reading: Reading, label: str) -> bool:
        ok = reading.text == label
        self.images += 1
        self.right += ok
        self.label_chars += len(label)
        self.edits += edit_distance(reading.text, label)
        self.char_right += sum(a == b for a, b in zip(reading.text, label, strict=False))
        total = self.conf[ok]
        total[0] += reading.confidence
        total[1] += 1
        b = min(bisect.bisect_right(_BIN_EDGES, reading.confidence) - 1, len(BINS) - 2)  # np.searchsorted's, per image
        self.bins[max(b, 0)] += (1, int(ok))
        return ok

    def summary(self) -> dict[str, Any]:
        n = max(self.images, 1)
        return {
            "images": self.images,
            "right": self.right,
            "accuracy": self.right / n,
            "char_accuracy": self.char_right / max(self.label_chars, 1),
            "cer": self.edits / max(self.label_chars, 1),
            "mean_confidence_right": _mean(self.conf[True]),
            "mean_confidence_wrong": _mean(self.conf[False]),
        }

    def calibration(self) -> list[dict[str, Any]]:
        return [
            {"low": round(float(BINS[i]), 2), "high": round(float(BINS[i + 1]), 2), "images": int(count),
             "accuracy": (int(right) / int(count)) if count else None}
            for i, (count, right) in enumerate(self.bins)
        ]


class Report:
    """Accumulates per-image outcomes of a run and summarises them stage by stage."""

    def __init__(self, charset: str, *, gallery_size: int = 24) -> None:
        self.charset = charset
        self.index = {c: i for i, c in enumerate(charset)}
        self.gallery_size = gallery_size
        self.images = self.errors = self.labelled = 0
        self.components: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.rejected_box: Counter[str] = Counter()
        self.reachable = self.reachable_known = 0
        self.glyph_true, self.glyph_pred = array("h"), array("h")
        self.routes = {r: RouteStats() for r in ROUTES}
        self.both: Counter[str] = Counter()
        self.auto_choice: dict[str, Counter[str]] = defaultdict(Counter)
        self.stage_ms: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
        self.gallery: list[GalleryEntry] = []

    def update(self, file: str, trace: Trace | None, label: str | None, *, error: str | None = None) -> None:
        """Count one image; ``error``: why the file could not be read (``trace`` is then None).

        A failure that enters the gallery keeps its trace (arrays of a few kB); its pictures are
        drawn from it when the page is rendered, so only the kept ones cost drawing time."""
        self.images += 1
        if trace is None:
            self.errors += 1
            if error:
                self.failures[f"unreadable: {error.split(' (')[0]}"] += 1
            return
        for stage, ms in trace.ms.items():
            total = self.stage_ms[stage]
            total[0] += ms
            total[1] += 1
        if not label:
            return
        self.labelled += 1
        seg, ctc = trace.segment, trace.ctc
        lattice = trace.prepared.lattice
        n = len(label)
        self.components["right_count" if lattice.n_components == n else
                        "too_few" if lattice.n_components < n else "too_many"] += 1
        if seg is not None:
            if seg.failure:
                self.failures[_generic(seg.failure)] += 1
                if seg.rejected_box:
                    self.rejected_box["images"] += 1
                    self.rejected_box["right"] += seg.text == label
            if trace.lattice_probs is not None:
                self.reachable_known += 1
                # A right reading is its own witness (its path reads the label); only the others
                # need the search.
                self.reachable += seg.text == label or reachable(lattice, trace.lattice_probs, label, self.charset)
            if len(seg.text) == n:
                for t, p in zip(label, seg.text, strict=True):
                    self.glyph_true.append(self.index.get(t, -1))
                    self.glyph_pred.append(self.index.get(p, -1))
            seg_ok = self.routes["segment"].update(seg, label)
        if ctc is not None:
            ctc_ok = self.routes["ctc"].update(ctc, label)
        if seg is not None and ctc is not None:
            self.both[{(True, True): "both_right", (True, False): "only_segment_right",
                       (False, True): "only_ctc_right", (False, False): "both_wrong"}[(seg_ok, ctc_ok)]] += 1
        chosen = trace.chosen
        if chosen is not None:
            auto_ok = self.routes["auto"].update(chosen, label)
            choice = self.auto_choice[trace.route]
            choice["chosen"] += 1
            choice["right"] += auto_ok
            if not auto_ok or trace.confidence < UNSURE:
                self._keep(file, trace, label)

    def _keep(self, file: str, trace: Trace, label: str) -> None:
        """Keep the worst ``gallery_size`` failures: wrong before unsure, then by confidence."""
        priority = _badness(trace, label)  # min-heap: the least bad failure kept is on top
        seg, ctc = trace.segment, trace.ctc
        entry = GalleryEntry(
            priority, file, label, trace.text, trace.route, trace.reason,
            (seg.text, seg.confidence) if seg else None, (ctc.text, ctc.confidence) if ctc else None, trace,
        )
        if len(self.gallery) < self.gallery_size:
            heapq.heappush(self.gallery, entry)
        elif entry.priority > self.gallery[0].priority:
            heapq.heapreplace(self.gallery, entry)

    def summary(self, *, seconds: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "images": self.images,
            "errors": self.errors,
            "labelled": self.labelled,
            "segmentation": {
                "images": sum(self.components.values()),
                "components": {k: self.components.get(k, 0) for k in ("right_count", "too_few", "too_many")},
                "failures": dict(self.failures.most_common()),
                "rejected_box": {k: self.rejected_box.get(k, 0) for k in ("images", "right")},
                "reachable": self.reachable / self.reachable_known if self.reachable_known else None,
                "reachable_images": self.reachable,
            },
            "glyphs": self._glyphs(),
            "routes": {r: s.summary() for r, s in self.routes.items() if s.images},
            "comparison": self._comparison(),
            "calibration": {r: s.calibration() for r, s in self.routes.items() if s.images},
            "timing": {
                "ms_per_image": {k: round(v[0] / v[1], 3) for k, v in self.stage_ms.items() if v[1]},
                "images_per_second": (self.images / seconds) if seconds else None,
            },
        }
        return out

    def _glyphs(self) -> dict[str, Any]:
        true = np.frombuffer(self.glyph_true, dtype=np.int16)
        pred = np.frombuffer(self.glyph_pred, dtype=np.int16)
        known = true >= 0
        true, pred = true[known], pred[known]
        if not len(true):
            return {"glyphs": 0}
        labels = list(range(len(self.charset)))
        matrix = confusion_matrix(true, pred, labels=labels)
        precision, recall, _, support = precision_recall_fscore_support(
            true, pred, labels=labels, zero_division=0
        )
        off = matrix.copy()
        np.fill_diagonal(off, 0)
        pairs = [(int(i), int(j)) for i, j in zip(*np.unravel_index(np.argsort(-off, axis=None), off.shape),
                                                  strict=True) if off[i, j] > 0][:10]
        return {
            "glyphs": int(len(true)),
            "accuracy": float((true == pred).mean()),
            "per_character": {
                c: {"precision": float(precision[i]), "recall": float(recall[i]), "support": int(support[i])}
                for i, c in enumerate(self.charset) if support[i]
            },
            "confusion": {"labels": list(self.charset), "matrix": matrix.tolist()},
            "most_confused": [[self.charset[i], self.charset[j], int(off[i, j])] for i, j in pairs],
        }

    def _comparison(self) -> dict[str, Any]:
        auto = self.routes["auto"]
        out: dict[str, Any] = {k: self.both.get(k, 0) for k in
                               ("both_right", "only_segment_right", "only_ctc_right", "both_wrong")}
        out["auto_choices"] = {r: dict(c) for r, c in self.auto_choice.items()}
        out["auto_gain_over"] = {
            r: (auto.right - self.routes[r].right) / auto.images
            for r in ("segment", "ctc") if self.routes[r].images == auto.images and auto.images
        }
        return out


def _badness(trace: Trace, label: str) -> float:
    """Wrong readings rank above right-but-unsure ones; within each, lower confidence is worse."""
    return (2.0 if trace.text != label else 1.0) + (1.0 - trace.confidence)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    if a == b:
        return 0
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _mean(total: list[float]) -> float | None:
    return total[0] / total[1] if total[1] else None


def _generic(reason: str) -> str:
    """Group failure reasons: 'text span 3 px is too narrow for 5 glyphs' -> '... N px ...'."""
    return " ".join("N" if w.isdigit() else w for w in reason.split()) if "span" in reason else reason
