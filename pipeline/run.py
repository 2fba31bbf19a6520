"""``python -m pipeline.run FOLDER --out OUT``: read every image of a folder, write predictions.

Outputs (OUT is created):
  predictions.csv   one row per input file, written as it is made (an interrupted run keeps them)
  report.json       where labels are known: the stage-wise evaluation report (pipeline/report.py)
  report.html       the same for people: figures, comparison, confusion, calibration, failures
  debug/<stem>/     per-stage images: ``--debug`` every file; ``--debug-failures`` wrong or unsure
                    ones (the default where labels are known); ``--no-debug`` none

Exit codes (see :class:`ExitCode`): 0 done (rows with ``route=error`` are per-file problems, not a
failed run), 2 bad arguments, 3 input folder unusable, 4 model unusable, 5 OUT not writable,
130 interrupted (rows written so far are kept).
"""

from __future__ import annotations

import argparse
import csv
import enum
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pipeline.batches import default_jobs, iter_prepared, start_workers, uses_workers
from pipeline.bundle import DEFAULT_MODEL, BundleError, load_bundle, quiet_tensorflow
from pipeline.config import StageParams
from pipeline.dataset import DEBUG_DIR, RUN_OUTPUT_COLUMNS, FolderError, Item, list_images, plausible_labels
from pipeline.glyph_cnn import PRECISIONS
from pipeline.lite import ENGINES
from pipeline.recognize import MODES, UNSURE, Trace, recognize

log = logging.getLogger("pipeline.run")

COLUMNS = (
    *RUN_OUTPUT_COLUMNS, "reason", "confidence", "char_confidences", "label", "correct",
    "segment_prediction", "segment_confidence", "ctc_prediction", "ctc_confidence",
)


class ExitCode(enum.IntEnum):
    OK = 0
    BAD_ARGS = 2
    INPUT_ERROR = 3
    MODEL_ERROR = 4
    OUTPUT_ERROR = 5
    INTERRUPTED = 130


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run",
        description="Read every CAPTCHA image of FOLDER and write OUT/predictions.csv.",
        epilog="Exit codes: 0 done, 2 bad arguments, 3 input folder unusable, 4 model unusable, "
        "5 OUT not writable, 130 interrupted.",
    )
    parser.add_argument("folder", type=Path, help="folder of images (searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="auto: segment when sure, else CTC (default); segment / ctc: one reader; "
                        "both: both readers on every image")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"bundle name under models/ or path to a bundle folder (default {DEFAULT_MODEL})")
    debug = parser.add_mutually_exclusive_group()
    debug.add_argument("--debug", action="store_true", help="write per-stage images for every file")
    debug.add_argument("--debug-failures", action="store_true",
                       help="write per-stage images for wrong or unsure readings only "
                       "(the default where labels are known)")
    debug.add_argument("--no-debug", action="store_true", help="write no per-stage images")
    parser.add_argument("--threshold", type=float, default=None,
                        help="least per-glyph confidence for auto to keep the segment reading "
                        "(default: the bundle's, chosen on its validation split)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="glyph CNN arithmetic: auto (default) is float32 where TensorFlow Lite runs it, "
                        "else bfloat16 where the CPU has it natively (rarely a different reading, see "
                        "bench/results/precision.json), else float32")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="what runs the glyph CNN: auto (default) is TensorFlow Lite for float32 where "
                        "TensorFlow has it (faster, see bench/results/reading_forms.json), else Keras")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="worker processes for the image stages")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar, warnings only")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and bad arguments (2)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()

    try:
        items = list_images(args.folder, skip=(args.out,))
    except FolderError as exc:
        log.error("%s", exc)
        return ExitCode.INPUT_ERROR
    if not items:
        log.error("no images in %s (looked for .png .jpg .jpeg .bmp .gif .webp .tif)", args.folder)
        return ExitCode.INPUT_ERROR

    warming = None
    if uses_workers(len(items), args.jobs):
        # Part of start-up: the first images then need not wait for the workers. They start (and
        # import the stages) on the other core while this process imports TensorFlow.
        warming = threading.Thread(target=_start_workers_early, args=(args.jobs,), daemon=True)
        warming.start()
    try:
        bundle = load_bundle(args.model)
        with quiet_tensorflow():
            readers = load_readers(bundle, args.mode, args.precision, args.engine)
    except (BundleError, ValueError, OSError, RuntimeError) as exc:  # RuntimeError: --engine lite unavailable
        log.error("model %s: %s", args.model, exc)
        return ExitCode.MODEL_ERROR
    finally:
        if warming is not None:
            warming.join()

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        out_csv = (args.out / "predictions.csv").open("w", newline="", encoding="utf-8")
    except OSError as exc:
        log.error("cannot write to %s: %s", args.out, exc.strerror or exc)
        return ExitCode.OUTPUT_ERROR

    items, dropped = plausible_labels(items, bundle.charset)
    if dropped:
        log.info("%d file names hold characters this model does not know; taken as unlabelled", dropped)
    if not args.debug and not args.no_debug and any(it.label for it in items):
        args.debug_failures = True
    threshold = args.threshold if args.threshold is not None else routing_threshold(bundle)
    startup = time.perf_counter() - started
    # The report records what "auto" became (nothing where the glyph CNN does not run).
    args.precision = readers[0].precision if readers[0] is not None else None
    args.engine = readers[0].engine if readers[0] is not None else None
    precision = f", glyph CNN in {args.precision} by {args.engine}" if args.precision else ""
    log.info("%d images in %s; model %s (%s); mode %s%s; start-up %.1f s",
             len(items), args.folder, bundle.name, bundle.path, args.mode, precision, startup)
    with out_csv:
        status, summary = _run(items, args, bundle, readers, threshold, out_csv)
    print(f"predictions: {args.out / 'predictions.csv'}")
    print(summary)
    return status


def load_readers(bundle: Any, mode: str, precision: str = "auto", engine: str = "auto") -> tuple[Any, Any]:
    """(glyph classifier or None, CTC line reader or None) that ``mode`` needs from the bundle."""
    from pipeline.glyph_cnn import GlyphClassifier

    classifier = line_reader = None
    if mode != "ctc" and bundle.reader("glyph") is not None:
        classifier = GlyphClassifier.from_bundle(bundle, precision=precision, engine=engine)
    elif mode in ("segment", "both"):  # auto without a glyph CNN: the CRNN reads every image
        raise ValueError(f"--mode {mode} needs a glyph reader; bundle {bundle.name!r} has none")
    if mode != "segment" and bundle.reader("ctc") is not None:
        from pipeline.crnn import CtcReader

        line_reader = CtcReader.from_bundle(bundle)
    if (mode in ("ctc", "both") or classifier is None) and line_reader is None:
        raise ValueError(f"--mode {mode} needs a ctc reader; bundle {bundle.name!r} has none")
    for reader in (classifier, line_reader):
        if reader is not None:
            reader.warm_up()  # start-up work, not the first chunk's
    return classifier, line_reader


def _start_workers_early(n_jobs: int) -> None:
    """:func:`batches.start_workers` in a thread: a failure is a warning (the run starts its
    workers again when it needs them, or reports why it cannot), not a thread's traceback."""
    try:
        start_workers(n_jobs)
    except Exception as exc:  # whatever joblib raises, the run itself must still go on
        log.warning("worker processes did not start ahead of the run: %s", exc)


def routing_threshold(bundle: Any) -> float:
    return float(bundle.manifest.get("routing", {}).get("threshold", 0.9))


def _run(items: list[Item], args: argparse.Namespace, bundle: Any, readers: tuple[Any, Any], threshold: float,
         out_csv: IO[str]) -> tuple[int, str]:
    from tqdm import tqdm

    from pipeline.report import Report

    classifier, line_reader = readers
    report = Report(bundle.charset) if any(it.label for it in items) else None
    writer = csv.DictWriter(out_csv, fieldnames=COLUMNS)
    writer.writeheader()
    params = StageParams.from_dict(bundle.manifest.get("params"))
    done = errors = right = known = 0
    debug_dirs: set[str] = set()
    status = ExitCode.OK
    t0 = time.perf_counter()
    bar = tqdm(total=len(items), unit="img", disable=True if args.quiet else None, file=sys.stderr)
    try:
        # The CRNN's inputs are made in the workers too, when this mode may need them.
        line_size = (line_reader.height, line_reader.width) if line_reader is not None else None
        # Every image's stage planes come back only when every image is drawn; the few others
        # drawn (--debug-failures, the report's gallery) are made again from their files.
        chunks = iter_prepared([it.path for it in items], params=params, lengths=bundle.lengths,
                               height=bundle.image_height, n_jobs=args.jobs, line_size=line_size,
                               planes=args.debug)
        for chunk in chunks:
            chunk_items = items[done : done + len(chunk)]
            ok = [(it, p) for it, p in zip(chunk_items, chunk, strict=True) if not isinstance(p, str)]
            traces = recognize([p for _, p in ok], mode=args.mode, lengths=bundle.lengths, classifier=classifier,
                               line_reader=line_reader, threshold=threshold,
                               labels=[it.label or None for it, _ in ok] if report is not None else None)
            by_item = {id(it): tr for (it, _), tr in zip(ok, traces, strict=True)}
            for it, prepared in zip(chunk_items, chunk, strict=True):
                trace = by_item.get(id(it))
                row = _row(it, trace, prepared if isinstance(prepared, str) else None)
                writer.writerow(row)
                errors += row["route"] == "error"
                if row["correct"] != "":
                    known += 1
                    right += row["correct"] == "1"
                if trace is not None and _wants_debug(args, row, trace):
                    _write_debug(args.out, it, trace, debug_dirs)
                if report is not None:
                    report.update(it.rel, trace, it.label, error=row["reason"] if trace is None else None)
            out_csv.flush()
            done += len(chunk)
            bar.update(len(chunk))
    except KeyboardInterrupt:
        status = ExitCode.INTERRUPTED
        log.warning("interrupted: %d of %d images written", done, len(items))
    except OSError as exc:
        status = ExitCode.OUTPUT_ERROR
        log.error("writing results failed after %d images: %s", done, exc.strerror or exc)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if report is not None and done:
        _write_report(args.out, report, seconds, args)
    summary = f"{done} images, {errors} errors"
    if known:
        summary += f", accuracy {right / known:.2%} ({right}/{known} labelled)"
    summary += f", {done / max(seconds, 1e-9):.1f} images/s"
    return status, summary


def _row(item: Item, trace: Trace | None, error: str | None) -> dict[str, str]:
    row = dict.fromkeys(COLUMNS, "")
    row["file"] = item.rel
    row["label"] = item.label or ""
    if trace is None:
        row["route"], row["reason"] = "error", error or "not processed"
        if item.label:
            row["correct"] = "0"
        return row
    row["prediction"] = trace.text
    row["route"], row["reason"] = trace.route, trace.reason
    row["confidence"] = f"{trace.confidence:.4f}"
    if trace.chosen is not None:
        row["char_confidences"] = " ".join([f"{c:.3f}" for c in trace.chosen.char_conf.tolist()])
    if trace.segment is not None:
        row["segment_prediction"] = trace.segment.text
        row["segment_confidence"] = f"{trace.segment.confidence:.4f}"
    if trace.ctc is not None:
        row["ctc_prediction"] = trace.ctc.text
        row["ctc_confidence"] = f"{trace.ctc.confidence:.4f}"
    if item.label:
        row["correct"] = "1" if trace.text == item.label else "0"
    return row


def _write_report(out: Path, report: Any, seconds: float, args: argparse.Namespace) -> None:
    """report.json (and report.html) beside predictions.csv; a failure here costs no predictions."""
    import json

    summary = report.summary(seconds=seconds)
    summary["run"] = {"folder": str(args.folder), "model": str(args.model), "mode": args.mode,
                      "precision": args.precision, "engine": args.engine}
    try:
        tmp = out / "report.json.tmp"
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        tmp.replace(out / "report.json")
        from pipeline.report_html import render

        (out / "report.html").write_text(render(summary, report.gallery), encoding="utf-8")
    except (OSError, ValueError) as exc:
        log.error("report not written: %s", exc)


def _wants_debug(args: argparse.Namespace, row: dict[str, str], trace: Trace) -> bool:
    if args.debug:
        return True
    if not args.debug_failures:
        return False
    return row["correct"] == "0" or trace.confidence < UNSURE


def _write_debug(out: Path, item: Item, trace: Trace, used: set[str]) -> None:
    from pipeline.debug import write_trace

    name = item.path.stem or "_"
    if name in used:  # same stem in two sub-folders or with two extensions
        name = item.rel.replace("/", "__")
    used.add(name)
    try:
        write_trace(trace, out / DEBUG_DIR / name)
    except (OSError, ValueError) as exc:
        log.warning("debug images for %s not written: %s", item.rel, exc)


if __name__ == "__main__":
    sys.exit(main())
