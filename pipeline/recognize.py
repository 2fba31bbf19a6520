"""The orchestrator: chains the stages and decides, image by image, which reader to trust.

Two steps, so the models always see whole batches:

* :func:`prepare` runs the classic stages on one grey image (fit height -> binarize -> clean ->
  propose segmentation lattice -> crop every candidate glyph). It is pure CPU work with no model,
  so callers may run it in parallel processes.
* :func:`recognize` takes a batch of prepared images, scores every candidate crop of the whole
  batch with one glyph-CNN call, picks each image's segmentation path, runs the CRNN on the images
  that need it (one call), and routes. It returns a :class:`Trace` per image: every intermediate
  array and decision, from which the debug images and the report are made.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pipeline.binarize import binarize
from pipeline.clean import clean
from pipeline.config import StageParams
from pipeline.glyphs import crop_glyphs, mark_plane, shade
from pipeline.line_input import prepare_line
from pipeline.load import fit_height
from pipeline.segment import Lattice, Path, best_path, propose

MODES = ("auto", "segment", "ctc", "both")
#: A routed reading with a lower confidence counts as unsure: ``--debug-failures`` draws its
#: stages and the report's gallery may keep it.
UNSURE = 0.5


class GlyphModel(Protocol):
    charset: str

    def predict(self, crops: np.ndarray) -> np.ndarray: ...


class LineModel(Protocol):
    def read(self, grays: Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]: ...

    def read_inputs(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]: ...


@dataclass
class Prepared:
    """One image after the classic stages (no model involved yet)."""

    gray: np.ndarray  # uint8 (H, W), scaled to the model's image height
    binary: np.ndarray  # bool (H, W)
    cleaned: np.ndarray  # bool (H, W)
    lattice: Lattice
    #: uint8 one per lattice segment: (S, size, size) of ink 255, or (S, size, size, channels) with
    #: the grey levels and / or the first-glyph mark (``GlyphParams``) after the mask
    crops: np.ndarray
    ms: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    line_input: np.ndarray | None = None  # float32 (h, w), the CRNN's input, when asked for


@dataclass
class Reading:
    """One reader's answer for one image."""

    text: str
    char_conf: np.ndarray  # float (len(text),), per-character confidence
    failure: str | None = None  # segmentation failure reason, or None

    @property
    def confidence(self) -> float:
        """Probability-like confidence of the whole text: the product of its characters'."""
        return float(np.prod(self.char_conf)) if self.text else 0.0


@dataclass
class Trace:
    """Everything one image went through: the source of the prediction, debug images and report."""

    prepared: Prepared
    segment: Reading | None = None
    path: Path | None = None  # chosen segmentation
    glyph_probs: np.ndarray | None = None  # float (N, C + 1), the chosen crops' class probabilities
    lattice_probs: np.ndarray | None = None  # float (S, C + 1), every candidate segment's
    ctc: Reading | None = None
    text: str = ""
    route: str = ""  # "segment" or "ctc"
    reason: str = ""
    ms: dict[str, float] = field(default_factory=dict)

    @property
    def chosen(self) -> Reading | None:
        """The reading the route answered with."""
        return self.segment if self.route == "segment" else self.ctc

    @property
    def confidence(self) -> float:
        return self.chosen.confidence if self.chosen else 0.0


def prepare(
    gray: np.ndarray,
    *,
    params: StageParams,
    lengths: tuple[int, ...],
    height: int,
    line_size: tuple[int, int] | None = None,
) -> Prepared:
    """Run fit-height, binarize, clean, propose and crop on one grey uint8 (H, W) image; with
    ``line_size`` (the CRNN's input height, width), also make the CRNN's input."""
    ms: dict[str, float] = {}
    t = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal t
        now = time.perf_counter()
        ms[stage] = (now - t) * 1000.0
        t = now

    scaled = fit_height(gray, height)
    binary = binarize(scaled, **vars(params.binarize))
    lap("binarize")
    cleaned = clean(binary, **vars(params.clean))
    lap("clean")
    lattice = propose(cleaned, lengths=lengths, **vars(params.segment))
    lap("segment")
    spans = lattice.cuts[lattice.segments] if len(lattice.segments) else np.zeros((0, 2), np.int64)
    size, margin = params.glyph.size, params.glyph.margin
    # The mask and the grey levels are cut in one pass over the segments (one resize each).
    source = np.dstack([cleaned.astype(np.uint8) * 255, shade(scaled, binary)]) if params.glyph.shade else None
    crops = crop_glyphs(cleaned, spans, size=size, margin=margin, rows=lattice.rows, source=source)
    if params.glyph.first_mark:
        planes = crops if crops.ndim == 4 else crops[..., None]
        crops = np.concatenate([planes, mark_plane(lattice.opening, size)[..., None]], axis=-1)
    lap("glyphs")
    line_input = None
    if line_size is not None:
        line_input = prepare_line(scaled, height=line_size[0], width=line_size[1])
        lap("line_input")
    return Prepared(scaled, binary, cleaned, lattice, crops, ms, line_input)


def read_segments(
    batch: Sequence[Prepared], classifier: GlyphModel, lengths: tuple[int, ...]
) -> list[tuple[Reading, Path | None, np.ndarray | None, np.ndarray]]:
    """Segment-route readings of a batch: one CNN call over every candidate crop of every image.

    Returns per image: the reading, the chosen path, the chosen crops' class probabilities, and the
    class probabilities of every lattice segment (float (S, C + 1)).
    """
    counts = [len(p.crops) for p in batch]
    crops = [p.crops for p in batch if len(p.crops)]
    shape = batch[0].crops.shape[1:] if batch else (0, 0)
    stacked = np.concatenate(crops) if crops else np.zeros((0, *shape), np.uint8)
    probs = classifier.predict(stacked.astype(np.float32) / 255.0)
    reject = probs.shape[1] - 1
    results = []
    offset = 0
    for prep, count in zip(batch, counts, strict=True):
        p = probs[offset : offset + count]
        offset += count
        results.append((*_choose_path(prep.lattice, p, lengths, classifier.charset, reject), p))
    return results


def _choose_path(
    lattice: Lattice, probs: np.ndarray, lengths: tuple[int, ...], charset: str, reject: int
) -> tuple[Reading, Path | None, np.ndarray | None]:
    """Pick the best path of each allowed length, and the best of those."""
    if lattice.failure:
        return Reading("", np.zeros(0), lattice.failure), None, None
    # A segment's score: log-probability of its best character (reject mass counts against it).
    best_char = probs[:, :reject].argmax(axis=1)
    char_p = probs[np.arange(len(probs)), best_char]
    scores = np.log(np.maximum(char_p, 1e-6))
    paths = [(p, n) for n in lengths if (p := best_path(lattice, scores, n)) is not None]
    if not paths:
        return Reading("", np.zeros(0), f"no segmentation into {_lengths_text(lengths)} glyphs"), None, None
    path, n = max(paths, key=lambda pn: pn[0].score)
    ids = path.segment_ids
    text = "".join(charset[c] for c in best_char[ids])
    chosen = probs[ids]
    rejected = int((chosen.argmax(axis=1) == reject).sum())
    failure = f"found {n - rejected} glyphs, expected {n}" if rejected else None
    return Reading(text, char_p[ids].astype(np.float64), failure), path, chosen


def recognize(
    batch: Sequence[Prepared],
    *,
    mode: str,
    lengths: tuple[int, ...],
    classifier: GlyphModel | None,
    line_reader: LineModel | None,
    threshold: float,
) -> list[Trace]:
    """Read a batch of prepared images and route each to the segment or the CTC reading.

    Args:
        mode: ``auto`` (segment when it is sure, else CTC), ``segment``, ``ctc``, ``both``
            (both readers on every image; routed as auto).
        threshold: the least per-glyph confidence at which ``auto`` trusts the segment reading.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    traces = [Trace(prepared=p, ms=dict(p.ms)) for p in batch]
    if not traces:
        return traces
    if mode != "ctc" and classifier is not None:
        t = time.perf_counter()
        for trace, result in zip(traces, read_segments(batch, classifier, lengths), strict=True):
            trace.segment, trace.path, trace.glyph_probs, trace.lattice_probs = result
        per_image = (time.perf_counter() - t) * 1000.0 / len(traces)
        for trace in traces:
            trace.ms["classify"] = per_image
    for trace in traces:
        trace.route, trace.reason = route(trace.segment, mode, threshold, line_reader is not None)
    need_ctc = [tr for tr in traces if line_reader is not None and (mode == "both" or tr.route == "ctc")]
    if need_ctc and line_reader is not None:
        t = time.perf_counter()
        inputs = [x for tr in need_ctc if (x := tr.prepared.line_input) is not None]
        if len(inputs) == len(need_ctc):  # made beside the classic stages (in the workers)
            read = line_reader.read_inputs(np.stack(inputs))
        else:
            read = line_reader.read([tr.prepared.gray for tr in need_ctc])
        for trace, (text, conf) in zip(need_ctc, read, strict=True):
            trace.ctc = Reading(text, conf)
        per_image = (time.perf_counter() - t) * 1000.0 / len(need_ctc)
        for trace in need_ctc:
            trace.ms["ctc"] = per_image
    for trace in traces:
        trace.text = trace.chosen.text if trace.chosen else ""
    return traces


def route(segment: Reading | None, mode: str, threshold: float, have_ctc: bool) -> tuple[str, str]:
    """(route, reason) for one image: the one visible fallback rule."""
    if mode == "segment":
        if segment is None:
            return "segment", "no glyph reader in this bundle"
        return "segment", segment.failure or "forced by --mode segment"
    if mode == "ctc":
        return "ctc", "forced by --mode ctc"
    if segment is None:
        return "ctc", "no glyph reader in this bundle"
    if not have_ctc:
        return "segment", (segment.failure or "segmented") + "; no ctc reader in this bundle"
    if segment.failure:
        return "ctc", segment.failure
    if len(segment.char_conf) and segment.char_conf.min() < threshold:
        i = int(segment.char_conf.argmin())
        return "ctc", (
            f"glyph {i + 1} {segment.text[i]!r} confidence {segment.char_conf[i]:.2f} < {threshold:.2f}"
        )
    return "segment", f"{len(segment.text)} glyphs, each confidence >= {threshold:.2f}"


def reachable(lattice: Lattice, lattice_probs: np.ndarray, label: str, charset: str) -> bool:
    """Whether the right reading is reachable from the segmenter's candidate boxes: some path of
    ``len(label)`` lattice segments whose crops the classifier reads as the label, glyph by glyph.

    This is what a perfect judge of candidate cuts could reach; it separates segmentation errors
    (unreachable) from choice and classification errors (reachable but not chosen).
    """
    index = {c: i for i, c in enumerate(charset)}
    if lattice.failure or not label or any(c not in index for c in label) or not len(lattice_probs):
        return False
    columns = [index[c] for c in label]
    # A segment may stand at position m only if the classifier's best character for it (the
    # reject class aside, as in a reading) is label[m].
    best_char = lattice_probs[:, : len(charset)].argmax(axis=1)
    fits = best_char[:, None] == np.array(columns)[None, :]  # (S, n)
    scores = np.where(fits, np.log(np.maximum(lattice_probs[:, columns], 1e-6)), -1e9)
    path = best_path(lattice, scores, len(label))
    return path is not None and path.score > -1e8


def _lengths_text(lengths: tuple[int, ...]) -> str:
    return " or ".join(str(n) for n in lengths)
