"""``python -m pipeline.train FOLDER --out MODEL_DIR``: train a bundle from a labelled folder.

Everything about the scheme comes from the data: character set and case (the labels' characters),
text lengths, image height. Seeded splits make three parts: the validation images, which no
training step sees (the manifest's validation figures, and the benches, are measured on them);
a *selection* part of the rest, which picks the CRNN's best epoch and the routing threshold (the
glyph CNN keeps the last epoch of its schedule); and the images the readers learn from. The
manifest records the data's fingerprint, the command line, the stage parameters, each reader's
figures on both held-out parts and the routing threshold.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.batches import default_jobs, iter_prepared
from pipeline.binarize import binarize
from pipeline.bundle import FORMAT_VERSION, library_versions, quiet_tensorflow, write_manifest
from pipeline.clean import stroke_width
from pipeline.config import GlyphParams, StageParams
from pipeline.dataset import (
    FolderError,
    charset_of,
    fingerprint,
    labelled,
    lengths_of,
    list_images,
    split_indices,
)
from pipeline.load import LoadError, fit_height, load_gray
from pipeline.recognize import Prepared, Reading, read_segments, route
from pipeline.train_glyph import NEAR_PURITY, REJECT_PURITY, REJECTS_PER_GLYPH

log = logging.getLogger("pipeline.train")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.train",
                                     description="Train a model bundle from a labelled folder of CAPTCHAs.")
    parser.add_argument("folder", type=Path, help="labelled images (label = file stem, or labels.csv)")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    parser.add_argument("--reader", choices=("glyph", "ctc", "both"), default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of the images held out for the validation figures (default %(default)s)")
    parser.add_argument("--select-fraction", type=float, default=0.1,
                        help="share of the remaining images held out to pick the CRNN's best epoch and the "
                             "routing threshold, so that nothing is chosen on the validation images "
                             "(default %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N labelled images")
    parser.add_argument("--glyph-epochs", type=int, default=40, help="epochs of the final glyph round")
    parser.add_argument("--align-rounds", type=int, default=2,
                        help="glyph crop re-alignment rounds (default %(default)s)")
    parser.add_argument("--glyph-members", type=int, default=1,
                        help="glyph CNNs trained in the final round from different seeds and averaged "
                             "(default %(default)s)")
    parser.add_argument("--glyph-filters", type=int, nargs=3, default=None, metavar="N",
                        help="convolution channels of each of the glyph CNN's three blocks "
                             "(default: the builder's own, 16 32 64)")
    parser.add_argument("--ctc-epochs", type=int, default=None,
                        help="epochs of one CRNN learning-rate cycle (default: the CTC trainer's own, "
                             "about 3,000 updates, at most 60 epochs)")
    parser.add_argument("--ctc-cycles", type=int, default=None,
                        help="most CRNN cycles: a cycle still improving at its end is followed by another "
                             "from its best weights, by default twice as long at the same peak learning rate "
                             "(default: the CTC trainer's own, 3; 1: one cycle)")
    parser.add_argument("--ctc-budget", type=float, default=None, metavar="SECONDS",
                        help="a further CRNN cycle starts only if it is expected to end within this many "
                             "seconds of the CRNN's start (default: the CTC trainer's own, 900)")
    parser.add_argument("--ctc-next-length", type=float, default=None, metavar="TIMES",
                        help="a further CRNN cycle's length over the one before, 1 to 8 (default: the CTC "
                             "trainer's own, 2)")
    parser.add_argument("--ctc-next-peak", type=float, default=None, metavar="TIMES",
                        help="a further CRNN cycle's peak learning rate over the one before, above 0 to 1 "
                             "(default: the CTC trainer's own, 1)")
    parser.add_argument("--ctc-patience", type=int, default=None, metavar="EPOCHS",
                        help="epochs without a better CRNN selection score before a cycle stops, the same "
                             "for every cycle, counted in a later cycle from its midpoint at the earliest "
                             "(default: the CTC trainer's own, a third of the first cycle's epochs, at least 3)")
    parser.add_argument("--ctc-height", type=int, default=None, metavar="PIXELS",
                        help="the CRNN's input height, a multiple of 8 up to 256 (default: the training images' median "
                             "height, clipped to 16-32 and rounded up to a multiple of 8)")
    parser.add_argument("--ctc-augment-probability", type=float, default=None, metavar="P",
                        help="the share of CRNN training images augmented each time they are drawn, 0 to 1 "
                             "(default: the CTC trainer's own, 0.5)")
    parser.add_argument("--glyph-size", type=int, default=GlyphParams.size,
                        help="side of the glyph CNN's square input crops, pixels (default %(default)s)")
    parser.add_argument("--glyph-shade", action=argparse.BooleanOptionalAction, default=True,
                        help="give the glyph CNN the grey levels of each crop as a second channel "
                             "(default: on)")
    parser.add_argument("--glyph-first-mark", action=argparse.BooleanOptionalAction, default=True,
                        help="give the glyph CNN one more channel marking the crops that begin the text "
                             "(default: on)")
    parser.add_argument("--glyph-label-smoothing", type=float, default=0.0,
                        help="label smoothing of the glyph CNN's targets, 0 to below 1 (default %(default)s)")
    parser.add_argument("--glyph-strike", type=float, default=0.0, metavar="SHARE",
                        help="share of glyph training crops with a thin line drawn across, 0 to 1 "
                             "(default %(default)s)")
    parser.add_argument("--glyph-weight-decay", type=float, default=0.0, metavar="DECAY",
                        help="AdamW's decoupled weight decay for the glyph CNN, 0 to below 1 "
                             "(default %(default)s: plain Adam)")
    parser.add_argument("--glyph-rejects", type=float, default=REJECTS_PER_GLYPH, metavar="PER_GLYPH",
                        help="reject-class crops (not one whole glyph) sampled per glyph crop in every "
                             "glyph round (default %(default)s)")
    parser.add_argument("--glyph-reject-purity", type=float, default=REJECT_PURITY, metavar="SHARE",
                        help="a candidate segment with less than this share of its ink from one aligned "
                             f"glyph is a reject example, above 0 to {NEAR_PURITY:g} (default %(default)s)")
    parser.add_argument("--param", action="append", default=[], metavar="SECTION.NAME=VALUE",
                        help="set one stage parameter of pipeline/config.py, e.g. clean.thin_ratio=0.4 "
                             "(repeatable; applied after the scheme's own choices; recorded in the manifest)")
    parser.add_argument("--jobs", type=int, default=default_jobs())
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(words)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        manifest = train(args, command=" ".join(["python -m pipeline.train", *map(shlex.quote, words)]))
    except (FolderError, ValueError) as exc:
        log.error("%s", exc)
        return 3
    except OSError as exc:
        log.error("cannot write the bundle: %s", exc)
        return 5
    figures = {name: r["validation"] for name, r in manifest["readers"].items()}
    print(f"bundle: {args.out}")
    print(f"validation: {figures}; routing: {manifest.get('routing')}")
    return 0


def train(args: argparse.Namespace, *, command: str) -> dict[str, Any]:
    started = time.perf_counter()
    # The requested crop size (--glyph-size, or a --param glyph.size after it), and a mistyped
    # --param, fail before any work.
    size = StageParams(glyph=GlyphParams(size=args.glyph_size)).with_overrides(args.param).glyph.size
    if size < 8:
        raise ValueError(f"the glyph crops (--glyph-size, --param glyph.size) must be at least 8 pixels, got {size}")
    if args.glyph_members < 1:
        raise ValueError(f"--glyph-members must be at least 1, got {args.glyph_members}")
    if args.glyph_filters is not None and min(args.glyph_filters) < 1:
        counts = " ".join(map(str, args.glyph_filters))
        raise ValueError(f"--glyph-filters needs positive channel counts, got {counts}")
    if not 0.0 <= args.glyph_label_smoothing < 1.0:
        raise ValueError(f"--glyph-label-smoothing must be at least 0 and below 1, got {args.glyph_label_smoothing}")
    if not 0.0 <= args.glyph_strike <= 1.0:
        raise ValueError(f"--glyph-strike must be between 0 and 1, got {args.glyph_strike}")
    if not 0.0 <= args.glyph_weight_decay < 1.0:
        raise ValueError(f"--glyph-weight-decay must be at least 0 and below 1, got {args.glyph_weight_decay}")
    if not (math.isfinite(args.glyph_rejects) and args.glyph_rejects >= 0.0):
        raise ValueError(f"--glyph-rejects must be at least 0 and finite, got {args.glyph_rejects}")
    if not 0.0 < args.glyph_reject_purity <= NEAR_PURITY:
        raise ValueError(f"--glyph-reject-purity must be above 0 and at most {NEAR_PURITY:g}, "
                         f"got {args.glyph_reject_purity}")
    for flag, count in (("--ctc-epochs", args.ctc_epochs), ("--ctc-cycles", args.ctc_cycles),
                        ("--ctc-patience", args.ctc_patience)):
        if count is not None and count < 1:
            raise ValueError(f"{flag} must be at least 1, got {count}")
    if args.ctc_next_length is not None and not 1.0 <= args.ctc_next_length <= 8.0:
        raise ValueError(f"--ctc-next-length must be 1 to 8, got {args.ctc_next_length}")
    if args.ctc_next_peak is not None and not 0.0 < args.ctc_next_peak <= 1.0:
        raise ValueError(f"--ctc-next-peak must be above 0 and at most 1, got {args.ctc_next_peak}")
    if args.ctc_height is not None and (args.ctc_height % 8 or not 8 <= args.ctc_height <= 256):
        raise ValueError(f"--ctc-height must be a multiple of 8 from 8 to 256, got {args.ctc_height}")
    if args.ctc_augment_probability is not None and not 0.0 <= args.ctc_augment_probability <= 1.0:
        raise ValueError(f"--ctc-augment-probability must be from 0 to 1, got {args.ctc_augment_probability}")
    if args.ctc_budget is not None and not 0.0 <= args.ctc_budget < float("inf"):
        raise ValueError(f"--ctc-budget must be a number of seconds, at least 0, got {args.ctc_budget}")
    for flag, value in (("--val-fraction", args.val_fraction), ("--select-fraction", args.select_fraction)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{flag} must be between 0 and 1 (exclusive), got {value}")
    items = labelled(list_images(args.folder))
    if args.limit:
        items = items[: args.limit]
    if len(items) < 10:
        raise ValueError(f"{args.folder}: {len(items)} labelled images; training needs at least 10")
    labels = [it.label or "" for it in items]
    charset, lengths = charset_of(labels), tuple(lengths_of(labels))
    grays = []
    for it in items[:200]:
        try:
            grays.append(load_gray(it.path))
        except LoadError:
            continue
    if not grays:
        raise ValueError(f"{args.folder}: none of the first images can be read")
    height = int(np.median([g.shape[0] for g in grays]))
    params = scheme_params(grays, height, StageParams(glyph=GlyphParams(size=args.glyph_size, shade=args.glyph_shade,
                                                                       first_mark=args.glyph_first_mark)))
    params = params.with_overrides(args.param)
    log.info("%d labelled images; charset %r; lengths %s; height %d px; %s", len(items), charset, lengths, height,
             "bold scheme: smoothing and thin-line removal on" if params.clean.thin_ratio > 0
             else "thin strokes: no smoothing, no thin-line removal")

    # The readable images, with their items and labels; unreadable ones are reported and skipped.
    good: list[tuple[Any, str, Prepared]] = []
    # Training sees every plausible segment, dead ends included: as reject examples they made the
    # segment route 2.4 points better on average over five development splits (seeds 8-12).
    every_segment = replace(params, segment=replace(params.segment, complete_paths_only=False))
    chunks = iter_prepared([it.path for it in items], params=every_segment, lengths=lengths, height=height,
                           n_jobs=args.jobs)
    for it, label, p in zip(items, labels, (p for chunk in chunks for p in chunk), strict=True):
        if isinstance(p, str):
            log.warning("skipping %s: %s", it.rel, p)
        else:
            good.append((it, label, p))
    rest, va_idx = split_indices(len(good), val_fraction=args.val_fraction, seed=args.seed)
    fit, select = split_indices(len(rest), val_fraction=args.select_fraction, seed=args.seed)
    tr_idx, se_idx = rest[fit], rest[select]
    val_items, sel_items = [good[i][0] for i in va_idx], [good[i][0] for i in se_idx]
    train_set = ([good[i][2] for i in tr_idx], [good[i][1] for i in tr_idx])
    sel_set = ([good[i][2] for i in se_idx], [good[i][1] for i in se_idx])
    val_set = ([good[i][2] for i in va_idx], [good[i][1] for i in va_idx])
    log.info("%d images to learn from, %d to select epochs and the threshold, %d for validation",
             len(tr_idx), len(se_idx), len(va_idx))
    args.out.mkdir(parents=True, exist_ok=True)
    with quiet_tensorflow():
        import keras  # noqa: F401  (imported here, once the data is known good, with its notices held back)

    readers: dict[str, Any] = {}
    if args.reader in ("glyph", "both"):
        from pipeline.train_glyph import train_glyph_reader

        readers["glyph"] = train_glyph_reader(train_set, sel_set, charset=charset, lengths=lengths,
                                              out_dir=args.out, size=params.glyph.size, seed=args.seed,
                                              max_epochs=args.glyph_epochs, align_rounds=args.align_rounds,
                                              label_smoothing=args.glyph_label_smoothing,
                                              strike=args.glyph_strike,
                                              weight_decay=args.glyph_weight_decay,
                                              rejects_per_glyph=args.glyph_rejects,
                                              reject_purity=args.glyph_reject_purity,
                                              architecture={"members": args.glyph_members,
                                                            "channels": params.glyph.channels,
                                                            **({"filters": args.glyph_filters}
                                                               if args.glyph_filters else {})})
        # Offer only the glyph widths the aligned training glyphs span (with a margin): fewer
        # candidate segments to classify, none a real glyph needs.
        spread = readers["glyph"]["training"]["relative_widths"]
        params = replace(params, segment=replace(
            params.segment,
            min_width=round(max(params.segment.min_width, 0.8 * spread["p0.5"]), 3),
            max_width=round(min(params.segment.max_width, 1.25 * spread["p99.5"]), 3),
        ))
        val_set = (_prepare_again(val_set[0], val_items, params, lengths, height, args.jobs), val_set[1])
        sel_set = (_prepare_again(sel_set[0], sel_items, params, lengths, height, args.jobs), sel_set[1])
        readers["glyph"].update(_glyph_figures(args.out, readers["glyph"], charset, lengths,
                                               selection=sel_set, validation=val_set))
        log.info("glyph reader: validation %s; widths %.2f-%.2f", readers["glyph"]["validation"],
                 params.segment.min_width, params.segment.max_width)
    if args.reader in ("ctc", "both"):
        from pipeline.train_ctc import train_ctc_reader

        given = {"max_epochs": args.ctc_epochs, "max_cycles": args.ctc_cycles, "cycle_budget_s": args.ctc_budget,
                 "next_length": args.ctc_next_length, "next_peak": args.ctc_next_peak, "patience": args.ctc_patience,
                 "height": args.ctc_height, "augment_probability": args.ctc_augment_probability}
        extra = {name: value for name, value in given.items() if value is not None}
        readers["ctc"] = train_ctc_reader([p.planes()[0] for p in train_set[0]], train_set[1],
                                          [p.planes()[0] for p in sel_set[0]], sel_set[1],
                                          charset=charset, out_dir=args.out, seed=args.seed, verbose=2, **extra)
        readers["ctc"]["selection"] = readers["ctc"].pop("validation")
        readers["ctc"]["validation"] = _ctc_validation(args.out, readers["ctc"], charset, lengths, val_set)
        log.info("ctc reader: validation %s", readers["ctc"]["validation"])

    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "name": args.out.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "charset": charset,
        "lengths": list(lengths),
        "image_height": height,
        "params": params.to_dict(),
        "data": {
            "folder": str(args.folder),
            "images": len(items),
            "readable": len(good),
            "fingerprint_sha256": fingerprint(items),
            "split": {"seed": args.seed, "val_fraction": args.val_fraction, "select_fraction": args.select_fraction,
                      "train": len(tr_idx), "selection": len(se_idx), "validation": len(va_idx)},
            # The validation images by name, so benchmarks measure exactly what training never saw.
            "validation_files": sorted(it.rel for it in val_items),
            "selection_files": sorted(it.rel for it in sel_items),
        },
        "command": command,
        "library_versions": library_versions(),
        "readers": readers,
        "training_seconds": round(time.perf_counter() - started, 1),
    }
    if "glyph" in readers and "ctc" in readers:
        manifest["routing"] = choose_threshold(manifest, args.out, sel_set)
    write_manifest(args.out, manifest)
    return manifest


def _prepare_again(old: Sequence[Prepared], items: Sequence[Any], params: StageParams, lengths: tuple[int, ...],
                   height: int, jobs: int) -> list[Prepared]:
    """The validation images under new stage parameters (they were readable the first time)."""
    fresh: list[Prepared] = []
    for chunk in iter_prepared([it.path for it in items], params=params, lengths=lengths, height=height,
                               n_jobs=jobs):
        fresh.extend(p for p in chunk if not isinstance(p, str))
    if len(fresh) != len(old):
        raise ValueError("validation images changed while training")
    return fresh


def _glyph_figures(folder: Path, entry: dict[str, Any], charset: str, lengths: tuple[int, ...],
                   **parts: tuple[Sequence[Prepared], Sequence[str]]) -> dict[str, dict[str, Any]]:
    """Figures of the saved glyph reader on each held-out part (name -> images, labels), under the
    bundle's final stage parameters; the weights are loaded once."""
    from pipeline.glyph_cnn import build_glyph_cnn
    from pipeline.train_glyph import segment_accuracy

    model = build_glyph_cnn(**entry["architecture"])
    model.load_weights(str(folder / entry["weights"]))
    figures = {}
    for name, (prepared, labels) in parts.items():
        whole, glyph = segment_accuracy(model, prepared, labels, charset, lengths)
        figures[name] = {"images": len(prepared), "accuracy": whole, "glyph_accuracy": glyph}
    return figures


def _ctc_validation(folder: Path, entry: dict[str, Any], charset: str, lengths: tuple[int, ...],
                    val_set: tuple[Sequence[Prepared], Sequence[str]]) -> dict[str, Any]:
    """Figures of the saved CRNN on held-out images, read as ``pipeline.run`` reads them (its
    readings kept to the scheme's ``lengths``)."""
    from pipeline.crnn import CtcReader
    from pipeline.train_ctc import exact_and_cer

    reader = CtcReader.from_weights(folder / entry["weights"], charset=charset, architecture=entry["architecture"],
                                    lengths=lengths)
    texts = [text for text, _ in reader.read([p.planes()[0] for p in val_set[0]])]
    accuracy, cer = exact_and_cer(texts, list(val_set[1]))
    return {"images": len(texts), "accuracy": accuracy, "char_error_rate": cer}


def scheme_params(grays: Sequence[np.ndarray], height: int, params: StageParams) -> StageParams:
    """Decide once per scheme, from its images (no labels), whether the bold-scheme treatment runs.

    Median smoothing (ragged noisy edges) and the opening that erases strike lines both assume
    strokes much wider than a line. Decided per image, they also fire on the odd bold font of a
    thin-stroked scheme and erase its hairlines (the arms of a serif "E", the bar of a "T").
    So the scheme's median stroke width decides: at least ``smooth_min_stroke`` keeps both (the
    per-image tests then still apply); below it, both are switched off.
    """
    strokes = [stroke_width(binarize(fit_height(g, height), **{**vars(params.binarize), "smooth": 1}))
               for g in grays]
    if float(np.median(strokes)) >= params.binarize.smooth_min_stroke:
        return params
    return replace(params, binarize=replace(params.binarize, smooth=1), clean=replace(params.clean, thin_ratio=0.0))


def choose_threshold(manifest: dict[str, Any], folder: Path, sel_set: tuple[Sequence[Prepared], Sequence[str]]
                     ) -> dict[str, Any]:
    """The per-glyph confidence threshold for auto, chosen on the selection images
    (:func:`routing_choice`), with the evidence for it."""
    from pipeline.bundle import Bundle
    from pipeline.crnn import CtcReader
    from pipeline.glyph_cnn import GlyphClassifier

    bundle = Bundle(path=folder, manifest=manifest)
    lengths = bundle.lengths
    prepared, labels = sel_set
    segment = [r for r, *_ in read_segments(prepared, GlyphClassifier.from_bundle(bundle), lengths, every=True)]
    ctc = [Reading(t, c) for t, c in CtcReader.from_bundle(bundle).read([p.planes()[0] for p in prepared])]
    return {**routing_choice(segment, ctc, labels), "selection_images": len(labels)}


#: The sign test's level under which auto's gain over the stronger reader alone, on the selection
#: images, is taken as real rather than what a search over 101 thresholds finds in noise.
ROUTING_ALPHA = 0.05


def routing_choice(segment: Sequence[Reading], ctc: Sequence[Reading], labels: Sequence[str]) -> dict[str, Any]:
    """The routing threshold and the evidence for it (``bench/HISTORY.md``, *Routing*, session 30).

    :func:`best_threshold` searches; where one reader reads more of ``labels`` right alone, auto at
    the threshold found is compared, image by image, with that reader's end of the range (1.0 for
    the CRNN, 0.0 for the glyph reader): ``wins`` images only auto reads right, ``losses`` only the
    end. The threshold found is kept when a one-sided sign test gives p < :data:`ROUTING_ALPHA`,
    else the stronger reader's end is used. With no stronger reader there is no end to fall back
    to, and the threshold found stays.
    """
    from scipy.stats import binomtest

    found, accuracy = best_threshold(segment, ctc, labels)
    choice: dict[str, Any] = {"threshold": found, "selection_accuracy": accuracy, "searched_threshold": found}
    seg_right, ctc_right = (int(right.sum()) for right in readers_right(segment, ctc, labels))
    if seg_right == ctc_right:
        choice["stronger_alone"] = None
        return choice
    end = 1.0 if ctc_right > seg_right else 0.0
    at_found, at_end = auto_right(segment, ctc, labels, found), auto_right(segment, ctc, labels, end)
    wins = int(np.sum(at_found & ~at_end))
    losses = int(np.sum(at_end & ~at_found))
    p = float(binomtest(wins, wins + losses, 0.5, alternative="greater").pvalue) if wins + losses else 1.0
    choice.update(stronger_alone="ctc" if end == 1.0 else "glyph", wins=wins, losses=losses, p=round(p, 4))
    if p >= ROUTING_ALPHA:
        choice.update(threshold=end, selection_accuracy=float(at_end.mean()))
    return choice


def readers_right(segment: Sequence[Reading], ctc: Sequence[Reading], labels: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``labels`` each reader alone reads right (segment, CRNN), as booleans."""
    return (np.array([s.text == label for s, label in zip(segment, labels, strict=True)], dtype=bool),
            np.array([c.text == label for c, label in zip(ctc, labels, strict=True)], dtype=bool))


def auto_right(segment: Sequence[Reading], ctc: Sequence[Reading], labels: Sequence[str], threshold: float
               ) -> np.ndarray:
    """Which of ``labels`` auto reads right at ``threshold`` (``recognize.route``), as booleans."""
    return np.array([(s.text if route(s, "auto", threshold, True)[0] == "segment" else c.text) == label
                     for s, c, label in zip(segment, ctc, labels, strict=True)], dtype=bool)


def best_threshold(segment: Sequence[Reading], ctc: Sequence[Reading], labels: Sequence[str]) -> tuple[float, float]:
    """(threshold, auto's accuracy) for the threshold in 0, 0.01, ..., 1 under which
    ``recognize.route`` makes auto read the most of ``labels`` right. 0 keeps every segment
    reading that has all N glyphs; 1 sends (nearly) every image to the CRNN.

    Ties go towards the reader that reads more of ``labels`` right on its own (the CRNN where
    the two read as many): the higher threshold where it is the CRNN, the lower where it is the
    glyph reader. A tie is no evidence that the weaker reader helps, so the images it leaves
    undecided go to the stronger one (``bench/HISTORY.md``, *Routing*, session 26).
    """
    seg_right, ctc_right = (int(right.sum()) for right in readers_right(segment, ctc, labels))
    towards = 1.0 if ctc_right >= seg_right else -1.0
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    for threshold in np.round(np.arange(0.0, 1.0001, 0.01), 2):
        right = int(auto_right(segment, ctc, labels, float(threshold)).sum())
        best = max(best, (right / max(1, len(labels)), towards * float(threshold), float(threshold)))
    return best[2], best[0]


if __name__ == "__main__":
    sys.exit(main())
