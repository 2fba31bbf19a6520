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

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from pipeline.binarize import binarize
from pipeline.clean import clean_counted
from pipeline.config import GlyphParams, StageParams
from pipeline.glyphs import lattice_crops, lattice_plan, shade
from pipeline.line_input import prepare_line
from pipeline.load import fit_height
from pipeline.paths import LatticeBatch
from pipeline.segment import Lattice, Path, best_path, propose, substantial

MODES = ("auto", "segment", "ctc", "both")
#: A routed reading with a lower confidence counts as unsure: ``--debug-failures`` draws its
#: stages and the report's gallery may keep it.
UNSURE = 0.5
#: Rounds of step 2 of ``read_segments``. Each classifies fewer segments than the one before and
#: costs one more CNN call per batch: on captcha_v2's training images the bundle shipped at
#: commit 19e08dc (label smoothing 0.1, softer probabilities) has 10.3 of the 23.5 candidate
#: segments an image classified with 1 round, 8.7 with 2, 8.3 with 3 (the bundle before: 8.7,
#: 7.3, 7.1; counted with ``read_segments`` as ``bench/lazy.py`` does, the same readings each
#: way); the one shipped now (two alignment rounds) 8.7 with 2 (``bench/lazy.py``). A crop costs
#: about 80 microseconds of CPU (cutting it and the CNN); a round, its path search (14 a image
#: over a batch of 128) and one more cutting call per image, about 25; so 2 (ad-hoc timings on
#: the 2-core machine). Whole runs cannot tell these apart there, its speed drifts more than
#: that, but once both cores are busy a run's speed is the CPU it needs.
OPTIMISTIC_ROUNDS = 2


class GlyphModel(Protocol):
    charset: str

    def predict(self, crops: np.ndarray) -> np.ndarray: ...


class LineModel(Protocol):
    def read(self, grays: Sequence[np.ndarray]) -> list[tuple[str, np.ndarray]]: ...

    def read_inputs(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]: ...


@dataclass
class Prepared:
    """One image after the classic stages (no model involved yet).

    Its glyph crops are cut when asked for (:meth:`crops_of`): the segment route classifies only
    some of the candidate segments (``read_segments``), so cutting every crop in the workers was
    mostly wasted (about 0.5 ms an image on captcha_v2, a seventh of the whole reading work, in an
    ad-hoc timing).
    """

    #: uint8 (H, W), scaled to the model's image height; with ``binary`` (bool (H, W)) and
    #: ``cleaned`` (bool (H, W)) None when the image came from a worker that left them out
    #: (:meth:`without_planes`): then :meth:`planes` makes them again.
    gray: np.ndarray | None
    binary: np.ndarray | None
    cleaned: np.ndarray | None
    lattice: Lattice
    glyph: GlyphParams = field(default_factory=GlyphParams)  # how crops are cut
    #: uint8 (2, H, W), the mask (255) and the grey levels (``glyphs.shade``) that crops are cut
    #: from when ``glyph.shade``; None: crops are cut from ``cleaned`` alone
    source: np.ndarray | None = None
    ms: dict[str, float] = field(default_factory=dict)  # milliseconds per stage
    line_input: np.ndarray | None = None  # float32 (h, w), the CRNN's input, when asked for
    #: every segment's crop once :attr:`crops` has cut them (or as given, e.g. by a test)
    all_crops: np.ndarray | None = field(default=None, repr=False)
    #: every segment's ``glyphs.lattice_plan`` (where its crop comes from and goes), made with
    #: the other stages so that the main process only cuts; None: planned when cut
    plan: np.ndarray | None = field(default=None, repr=False)
    #: makes this image's stages again from its file (set where the planes were left out)
    remake: Callable[[], Prepared | str] | None = field(default=None, repr=False, compare=False)

    def without_planes(self) -> Prepared:
        """This image without the grey, binary and cleaned planes, which only the debug images
        need, where the crops can be cut without them (their planes and plan made): what a worker
        sends, at half the bytes (captcha_v2: 53 against 23 kB an image)."""
        if self.source is None or self.plan is None:
            return self
        return replace(self, gray=None, binary=None, cleaned=None)

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gray, binary, cleaned); made again (:attr:`remake`) where they were left out, and
        checked to be the arrays this image was read from (the same lattice and crop planes).

        Raises:
            ValueError: they cannot be made again, or come out different.
        """
        if self.gray is None or self.binary is None or self.cleaned is None:
            again = self.remake() if self.remake is not None else "no way to make them again"
            if isinstance(again, str) or again.gray is None or again.binary is None or again.cleaned is None:
                raise ValueError(f"the stage images cannot be made again: {again}")
            same = np.array_equal(again.lattice.cuts, self.lattice.cuts) and (
                self.source is None or again.source is not None and np.array_equal(again.source, self.source))
            if not same:
                raise ValueError("the stage images made again differ from the ones this image was read from")
            self.gray, self.binary, self.cleaned = again.gray, again.binary, again.cleaned
        return self.gray, self.binary, self.cleaned

    def crops_of(self, ids: np.ndarray) -> np.ndarray:
        """The crops of lattice segments ``ids``: uint8 (N, size, size) of ink 255, or
        (N, size, size, channels) with the grey levels and / or the first-glyph mark after the mask
        (``GlyphParams.channels``). Their cutting time is added to ``ms["glyphs"]``."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.all_crops is not None:
            return self.all_crops[ids]
        started = time.perf_counter()
        crops = lattice_crops(self.cleaned, self.lattice, ids, params=self.glyph, source=self.source, plan=self.plan)
        self.ms["glyphs"] = self.ms.get("glyphs", 0.0) + (time.perf_counter() - started) * 1000.0
        return crops

    @property
    def crops(self) -> np.ndarray:
        """Every lattice segment's crop (:meth:`crops_of`), cut once."""
        if self.all_crops is None:
            self.all_crops = self.crops_of(np.arange(len(self.lattice.segments)))
        return self.all_crops


@dataclass
class Reading:
    """One reader's answer for one image."""

    text: str
    char_conf: np.ndarray  # float (len(text),), per-character confidence
    failure: str | None = None  # segmentation failure reason, or None

    @property
    def rejected_box(self) -> bool:
        """A reading of N glyphs whose path holds a box the CNN rejects ("found 4 glyphs, expected
        5"): a failure reason, but a whole text (a failure with no text had no path at all)."""
        return self.failure is not None and bool(self.text)

    @functools.cached_property
    def confidence(self) -> float:
        """Probability-like confidence of the whole text: the product of its characters' (worked
        out once: the route, the row, the report and the debug choice each ask for it)."""
        if not self.text:
            return 0.0
        if self.char_conf.dtype != np.float64:  # the CRNN's float32: multiplied in float32, as ever
            return float(np.prod(self.char_conf))
        return math.prod(self.char_conf.tolist())  # left to right, as np.prod on a few, at a third of its cost


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
    """Run fit-height, binarize, clean and propose on one grey uint8 (H, W) image, and make the
    planes its glyph crops are cut from (:meth:`Prepared.crops_of`); with
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
    cleaned, kept = clean_counted(binary, **vars(params.clean))
    lap("clean")
    lattice = propose(cleaned, lengths=lengths, n_components=substantial(kept), **vars(params.segment))
    lap("segment")
    # The planes crops are cut from; the crops themselves are cut when the classifier asks.
    source = np.stack([cleaned.astype(np.uint8) * 255, shade(scaled, binary)]) if params.glyph.shade else None
    plan = lattice_plan(cleaned, lattice, params.glyph)
    lap("glyphs")
    line_input = None
    if line_size is not None:
        line_input = prepare_line(scaled, height=line_size[0], width=line_size[1])
        lap("line_input")
    return Prepared(scaled, binary, cleaned, lattice, params.glyph, source, ms, line_input, plan=plan)


def read_segments(
    batch: Sequence[Prepared], classifier: GlyphModel, lengths: tuple[int, ...], *, every: bool = False
) -> list[tuple[Reading, Path | None, np.ndarray | None, np.ndarray]]:
    """Segment-route readings of a batch, with the glyph CNN asked about as few candidate
    segments as the exact answer needs: a few CNN calls per batch, never one per image.

    A path's score is the sum of its segments' priors and log-probabilities, and a
    log-probability is at most 0. So, for the whole batch at once:

    1. classify the segments of each image's best path under the priors alone;
    2. classify the unclassified segments of the best path when those count as 0 (the most they
       can be), ``OPTIMISTIC_ROUNDS`` times;
    3. take each image's best path through classified segments only (a lower bound of its best
       score) and classify every segment that lies on some path whose bound (0 for the
       unclassified) reaches it.

    After 3, no path through an unclassified segment can beat the best path through classified
    ones, so the reading is the one that classifying every segment would give: the same path,
    the same probabilities (up to the last bits the CNN's batching moves; ``bench/lazy.py``
    counts the readings that differ). On captcha_v2 this classifies about 9 of 23 candidate
    segments an image. ``every`` classifies all of them in one call (training does, so that the figures it logs and
    records and the routing threshold it chooses stay as they were).

    Returns per image: the reading, the chosen path, the chosen crops' class probabilities, and
    the class probabilities of every lattice segment (float (S, C + 1), NaN rows for the segments
    not classified; :func:`classify_rest` fills them).
    """
    lattices = LatticeBatch([p.lattice for p in batch])
    n_segments = int(lattices.offsets[-1])
    n_classes = len(classifier.charset) + 1
    probs = np.full((n_segments, n_classes), np.nan, dtype=np.float32)
    scores = np.zeros(n_segments)  # log-probability of each segment's best character; 0 until classified
    known = np.zeros(n_segments, dtype=bool)

    def classify(wanted: np.ndarray) -> None:
        ids = np.flatnonzero(wanted & ~known)
        if len(ids):
            # ids ascend, so each image's share is one run: cut its crops in one call.
            bounds = np.searchsorted(ids, lattices.offsets)
            crops = [batch[b].crops_of(ids[lo:hi] - lattices.offsets[b])
                     for b, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if hi > lo]
            probs[ids] = classifier.predict(np.concatenate(crops).astype(np.float32) / 255.0)
            known[ids] = True
            scores[ids] = _log_best(probs[ids])

    if every:
        classify(np.ones(n_segments, dtype=bool))
    else:
        # 1 and 2: unclassified segments score 0, so the first round is the priors alone.
        for _ in range(1 + OPTIMISTIC_ROUNDS):
            wanted = np.zeros(n_segments, dtype=bool)
            for n in lengths:
                score, ids = lattices.best(scores, n)
                wanted[ids[np.isfinite(score)].ravel()] = True
            classify(wanted)
        bound, _ = _best_of_lengths(lattices, np.where(known, scores, -np.inf), lengths)
        reaches = np.zeros(n_segments, dtype=bool)
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
    crops = np.concatenate([tr.prepared.crops_of(ids) for tr, ids in todo])
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
    text = "".join([charset[c] for c in best_char.tolist()])
    n = len(ids)
    rejected = int(np.count_nonzero(chosen.argmax(axis=1) == reject))
    failure = f"found {n - rejected} glyphs, expected {n}" if rejected else None
    path = Path(segment_ids=ids, boxes=lattice.boxes(ids), score=score)
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
        cut_before = sum(p.ms.get("glyphs", 0.0) for p in batch)
        for trace, result in zip(traces, read_segments(batch, classifier, lengths), strict=True):
            trace.segment, trace.path, trace.glyph_probs, trace.lattice_probs = result
        if labels is not None:
            wrong = [tr for tr, label in zip(traces, labels, strict=True)
                     if label is not None and tr.segment is not None and tr.segment.text != label]
            classify_rest(wrong, classifier)
        # Cutting the crops the classifier asked for counts as the glyphs stage, not as classify.
        cut_ms = sum(p.ms.get("glyphs", 0.0) for p in batch) - cut_before
        per_image = ((time.perf_counter() - t) * 1000.0 - cut_ms) / len(traces)
        for trace in traces:
            trace.ms["classify"] = per_image
            if "glyphs" in trace.prepared.ms:
                trace.ms["glyphs"] = trace.prepared.ms["glyphs"]
    for trace in traces:
        trace.route, trace.reason = route(trace.segment, mode, threshold, line_reader is not None)
    need_ctc = [tr for tr in traces if line_reader is not None and (mode == "both" or tr.route == "ctc")]
    if need_ctc and line_reader is not None:
        t = time.perf_counter()
        inputs = [x for tr in need_ctc if (x := tr.prepared.line_input) is not None]
        if len(inputs) == len(need_ctc):  # made beside the classic stages (in the workers)
            read = line_reader.read_inputs(np.stack(inputs))
        else:
            read = line_reader.read([tr.prepared.planes()[0] for tr in need_ctc])
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
    if segment.failure and not segment.rejected_box:  # no reading at all: no segmentation into N glyphs
        return "ctc", segment.failure
    # A path with a segment the CNN rejects ("found 4 glyphs, expected 5") still reads N glyphs,
    # each with its confidence; like any other reading it goes to the CRNN when a glyph is under
    # the threshold (where the CRNN is the weaker reader, the threshold chosen at training can
    # be low enough to keep such readings).
    if len(segment.char_conf) and segment.char_conf.min() < threshold:
        i = int(segment.char_conf.argmin())
        unsure = f"glyph {i + 1} {segment.text[i]!r} confidence {segment.char_conf[i]:.2f} < {threshold:.2f}"
        return "ctc", f"{segment.failure}; {unsure}" if segment.failure else unsure
    if segment.rejected_box:
        return "segment", f"{segment.failure}, but each glyph's confidence >= {threshold:.2f}"
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
