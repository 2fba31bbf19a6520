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
from pipeline.paths import LatticeBatch
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
    batch: Sequence[Prepared], classifier: GlyphModel, lengths: tuple[int, ...], *, every: bool = False
) -> list[tuple[Reading, Path | None, np.ndarray | None, np.ndarray]]:
    """Segment-route readings of a batch, with the glyph CNN asked about as few candidate
    segments as the exact answer needs: a few CNN calls per batch, never one per image.

    A path's score is the sum of its segments' priors and log-probabilities, and a
    log-probability is at most 0. So, for the whole batch at once:

    1. classify the segments of each image's best path under the priors alone;
    2. classify the unclassified segments of the best path when those count as 0 (the most they
       can be);
    3. take each image's best path through classified segments only (a lower bound of its best
       score) and classify every segment that lies on some path whose bound (0 for the
       unclassified) reaches it.

    After 3, no path through an unclassified segment can beat the best path through classified
    ones, so the reading is the one that classifying every segment would give: the same path,
    the same probabilities (up to the last bits the CNN's batching moves; ``bench/lazy.py``
    counts the readings that differ). On captcha_v2 this classifies about 9 of 23 candidate
    segments an image. ``every`` classifies all of them in one call (training does, so that its
    selection of epochs stays as it was).

    Returns per image: the reading, the chosen path, the chosen crops' class probabilities, and
    the class probabilities of every lattice segment (float (S, C + 1), NaN rows for the segments
    not classified; :func:`classify_rest` fills them).
    """
    lattices = LatticeBatch([p.lattice for p in batch])
    crops = [p.crops for p in batch if len(p.crops)]
    stacked = np.concatenate(crops) if crops else np.zeros((0, 1, 1), np.uint8)
    if len(stacked) != lattices.offsets[-1]:
        raise ValueError("every prepared image needs one crop per lattice segment")
    n_classes = len(classifier.charset) + 1
    probs = np.full((len(stacked), n_classes), np.nan, dtype=np.float32)
    scores = np.zeros(len(stacked))  # log-probability of each segment's best character; 0 until classified
    known = np.zeros(len(stacked), dtype=bool)

    def classify(wanted: np.ndarray) -> None:
        ids = np.flatnonzero(wanted & ~known)
        if len(ids):
            probs[ids] = classifier.predict(stacked[ids].astype(np.float32) / 255.0)
            known[ids] = True
            scores[ids] = _log_best(probs[ids])

    if every:
        classify(np.ones(len(stacked), dtype=bool))
    else:
        for round_scores in (np.zeros(len(stacked)), None):  # 1. priors alone; 2. unclassified as 0
            wanted = np.zeros(len(stacked), dtype=bool)
            for n in lengths:
                score, ids = lattices.best(scores if round_scores is None else round_scores, n)
                wanted[ids[np.isfinite(score)].ravel()] = True
            classify(wanted)
        bound, _ = _best_of_lengths(lattices, np.where(known, scores, -np.inf), lengths)
        reaches = np.zeros(len(stacked), dtype=bool)
        for n in lengths:  # 3. (a small tolerance: the pass sums in another order than the DP)
            through = lattices.through(scores, n)
            reaches |= np.isfinite(through) & (through >= bound[lattices.image] - 1e-9)
        classify(reaches)
    total, paths = _best_of_lengths(lattices, np.where(known, scores, -np.inf), lengths)
    reject = n_classes - 1
    results = []
    for b, prep in enumerate(batch):
        lo, hi = lattices.offsets[b], lattices.offsets[b + 1]
        p = probs[lo:hi]
        results.append((*_reading(prep.lattice, p, paths[b], lo, float(total[b]), lengths, classifier.charset,
                                  reject), p))
    return results


def classify_rest(traces: Sequence[Trace], classifier: GlyphModel) -> None:
    """Classify, in one call, the lattice segments that :func:`read_segments` left out, filling
    ``Trace.lattice_probs`` (for :func:`reachable`, which needs every segment)."""
    todo = [(tr, np.flatnonzero(np.isnan(tr.lattice_probs[:, 0]))) for tr in traces if tr.lattice_probs is not None]
    todo = [(tr, ids) for tr, ids in todo if len(ids)]
    if not todo:
        return
    crops = np.concatenate([tr.prepared.crops[ids] for tr, ids in todo])
    probs = classifier.predict(crops.astype(np.float32) / 255.0)
    offset = 0
    for tr, ids in todo:
        assert tr.lattice_probs is not None
        tr.lattice_probs[ids] = probs[offset : offset + len(ids)]
        offset += len(ids)


def _log_best(probs: np.ndarray) -> np.ndarray:
    """A segment's score: log-probability of its best character (reject mass counts against it)."""
    char_p = probs[:, :-1].max(axis=1)
    return np.log(np.maximum(char_p, 1e-6)).astype(np.float64)


def _best_of_lengths(
    lattices: LatticeBatch, scores: np.ndarray, lengths: tuple[int, ...]
) -> tuple[np.ndarray, list[np.ndarray | None]]:
    """Each image's best path over the allowed lengths (the first length wins a tie): its score
    (``-inf``: none) and its flat segment ids (None: none)."""
    best = np.full(len(lattices), -np.inf)
    paths: list[np.ndarray | None] = [None] * len(lattices)
    for n in lengths:
        score, ids = lattices.best(scores, n)
        for b in np.flatnonzero(np.isfinite(score) & (score > best)):
            best[b], paths[b] = score[b], ids[b]
    return best, paths


def _reading(
    lattice: Lattice, probs: np.ndarray, flat_ids: np.ndarray | None, offset: int, score: float,
    lengths: tuple[int, ...], charset: str, reject: int,
) -> tuple[Reading, Path | None, np.ndarray | None]:
    """The reading of one image's chosen path (flat segment ids, from ``offset``), or its failure."""
    if lattice.failure:
        return Reading("", np.zeros(0), lattice.failure), None, None
    if flat_ids is None:
        return Reading("", np.zeros(0), f"no segmentation into {_lengths_text(lengths)} glyphs"), None, None
    ids = flat_ids - offset
    chosen = probs[ids]
    best_char = chosen[:, :reject].argmax(axis=1)
    char_p = chosen[np.arange(len(ids)), best_char]
    text = "".join(charset[c] for c in best_char)
    n = len(ids)
    rejected = int((chosen.argmax(axis=1) == reject).sum())
    failure = f"found {n - rejected} glyphs, expected {n}" if rejected else None
    seg_from, seg_to = lattice.segments[ids, 0], lattice.segments[ids, 1]
    boxes = np.stack([lattice.cuts[seg_from], lattice.rows[ids, 0], lattice.cuts[seg_to], lattice.rows[ids, 1]], axis=1)
    path = Path(segment_ids=ids, boxes=boxes, score=score)
    return Reading(text, char_p.astype(np.float64), failure), path, chosen


def recognize(
    batch: Sequence[Prepared],
    *,
    mode: str,
    lengths: tuple[int, ...],
    classifier: GlyphModel | None,
    line_reader: LineModel | None,
    threshold: float,
    labels: Sequence[str | None] | None = None,
) -> list[Trace]:
    """Read a batch of prepared images and route each to the segment or the CTC reading.

    Args:
        mode: ``auto`` (segment when it is sure, else CTC), ``segment``, ``ctc``, ``both``
            (both readers on every image; routed as auto).
        threshold: the least per-glyph confidence at which ``auto`` trusts the segment reading.
        labels: the images' labels where known (None: unknown). An image whose segment reading
            is not its label gets every lattice segment classified (:func:`classify_rest`), so
            that the report can tell whether the right reading was reachable.
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
        if labels is not None:
            wrong = [tr for tr, label in zip(traces, labels, strict=True)
                     if label is not None and tr.segment is not None and tr.segment.text != label]
            classify_rest(wrong, classifier)
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
    if np.isnan(lattice_probs).any():
        raise ValueError("reachable() needs every lattice segment classified (recognize.classify_rest)")
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
