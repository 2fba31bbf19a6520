"""Throughput of ``python -m pipeline.run`` over 2,000 images, start-up measured apart.

    python bench/speed.py [--model captcha_v2] [--images 2000] [--repeats 3] [--modes segment auto both ctc]
                          [--precision auto|float32|bfloat16] [--against OTHER_CHECKOUT | --against-model BUNDLE]
                          [--unlabelled] [--tag NAME]

Builds a temporary folder of N images (symbolic links cycling over the data set's files, so nothing
is copied) with a labels.csv, runs the real CLI as a subprocess per mode and repeat (``--no-debug``:
stage images are for people, not throughput; the report is still accumulated), and takes from its
output the images/s of the reading loop (decode to CSV) and the start-up time (imports, model
load). Writes medians to ``bench/results/speed_<model>.json`` (``speed_<model>_<precision>.json``
for a precision other than the default ``auto``), with the glyph CNN's precision that ran.
``--against`` runs another checkout's CLI (an older commit's worktree) in turn with this one's, on
the same folder and bundle, and writes ``speed_<model>_against.json`` with both and their ratio:
on a machine whose speed drifts, only runs that take turns compare two versions fairly.
``--against-model`` does the same for two bundles read by this checkout (a retrained bundle against
the one before it).
``--unlabelled`` leaves the labels out (names no model takes for labels, no labels.csv): the run
then only reads and writes predictions.csv, with no report to accumulate and no extra
classification for it (every candidate segment of a wrongly read image, for the report's
reachability figure); results go to ``speed_<model>[_<precision>][_against]_unlabelled.json``.
``--tag NAME`` appends ``_NAME`` to the file name (a second run of the same command, kept apart).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent


def build_folder(source: Path, n: int, folder: Path, *, labels: bool = True) -> None:
    """N links to the data set's PNG files; with ``labels``, a labels.csv beside them (the run then
    also builds its report), else names that no model takes for labels (predictions only)."""
    files = sorted(p for p in source.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise SystemExit(f"no PNG files in {source}")
    for i in range(n):
        src = files[i % len(files)]
        # Numbered names keep every link unique; labels.csv carries the labels.
        (folder / (f"{i:05d}" if labels else f"unlabelled-{i:05d}")).with_suffix(src.suffix).symlink_to(src.resolve())
    if not labels:
        return
    with (folder / "labels.csv").open("w", encoding="utf-8") as fh:
        fh.write("file,label\n")
        for i in range(n):
            fh.write(f"{i:05d}.png,{files[i % len(files)].stem}\n")


def run_once(folder: Path, out: Path, model: str, mode: str, precision: str,
             checkout: Path = ROOT) -> tuple[float, float, float, str]:
    """(images/s, start-up s, wall s, glyph CNN precision or "") of one CLI run of ``checkout``."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.run", str(folder), "--out", str(out), "--model", model, "--mode", mode,
         "--no-debug", "--precision", precision],
        capture_output=True, text=True, cwd=checkout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"pipeline.run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    rate = float(re.search(r"([\d.]+) images/s", proc.stdout).group(1))  # type: ignore[union-attr]
    startup = float(re.search(r"start-up ([\d.]+) s", proc.stderr).group(1))  # type: ignore[union-attr]
    used = re.search(r"glyph CNN in (\w+)", proc.stderr)
    return rate, startup, wall, used.group(1) if used else ""


def _figures(runs: list[tuple[float, float, float, str]]) -> dict[str, object]:
    rates, startups, walls, used = zip(*runs, strict=True)
    return {"images_per_second_median": statistics.median(rates), "images_per_second_runs": rates,
            "startup_seconds_median": statistics.median(startups), "wall_seconds_median": statistics.median(walls),
            "glyph_cnn_precision": used[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="captcha_v2")
    parser.add_argument("--data", type=Path, default=None, help="default: the bundle's training folder")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["segment", "auto", "both", "ctc"])
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--unlabelled", action="store_true",
                        help="a folder without labels: the run writes predictions only, no report "
                        "(results go to speed_<model>[...]_unlabelled.json)")
    compare = parser.add_mutually_exclusive_group()  # one comparison at a time
    compare.add_argument("--against", type=Path, default=None,
                        help="another checkout of the project (e.g. a git worktree of an older commit): its CLI "
                        "runs in turn with this one's, run for run, and the JSON gets both and their ratio")
    compare.add_argument("--against-model", default=None, metavar="NAME_OR_DIR",
                        help="another bundle, read by this checkout in turn with --model, run for run (e.g. an "
                        "older commit's bundle, from git show): the JSON gets both and their ratio")
    parser.add_argument("--tag", default="",
                        help="added to the results file's name (speed_<model>[...]_<tag>.json), so that a second "
                        "run of the same command does not overwrite the first")
    args = parser.parse_args()
    if args.tag and not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
        parser.error(f"--tag {args.tag!r}: letters, digits, '_' and '-' only (it becomes part of a file name)")
    sys.path.insert(0, str(ROOT))
    from pipeline.bundle import load_bundle

    bundle = load_bundle(args.model)
    model_dir = bundle.path  # by path, so that another checkout reads the same bundle
    source = args.data or (ROOT / bundle.manifest["data"]["folder"])
    results: dict[str, object] = {"model": bundle.name, "precision": args.precision, "images": args.images,
                                  "labelled": not args.unlabelled,
                                  "repeats": args.repeats,
                                  "cpus": os.cpu_count(), "load_average_before": os.getloadavg()[0], "modes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        build_folder(Path(source), args.images, folder, labels=not args.unlabelled)
        # What runs, as (checkout, bundle): this one, and the one it is compared with, if any.
        sides = {"this": (ROOT, model_dir)}
        if args.against is not None:
            sides["against"] = (args.against.resolve(), model_dir)
        elif args.against_model is not None:
            sides["against"] = (ROOT, load_bundle(args.against_model).path)
        compared = args.against if args.against is not None else args.against_model
        for mode in args.modes:
            runs: dict[str, list[tuple[float, float, float, str]]] = {name: [] for name in sides}
            for r in range(args.repeats):  # taking turns: this machine's speed drifts over minutes
                for name, (checkout, model) in sides.items():
                    runs[name].append(run_once(folder, Path(tmp) / f"out_{mode}_{name}_{r}", str(model), mode,
                                               args.precision, checkout))
            entry = {name: _figures(one) for name, one in runs.items()}
            results["modes"][mode] = entry["this"] if compared is None else {  # type: ignore[index]
                **entry, "ratio_this_over_against": round(entry["this"]["images_per_second_median"]
                                                          / entry["against"]["images_per_second_median"], 2)}
            line = f"{bundle.name} --mode {mode}: {entry['this']['images_per_second_median']:.0f} images/s " \
                   f"(median of {args.repeats}), start-up {entry['this']['startup_seconds_median']:.1f} s"
            if compared is not None:
                line += f"; {compared}: {entry['against']['images_per_second_median']:.0f} images/s"
            print(line, flush=True)
    RESULTS.mkdir(exist_ok=True)
    if compared is not None:
        results["against" if args.against is not None else "against_model"] = str(compared)
    suffix = ("" if args.precision == "auto" else f"_{args.precision}") + ("" if compared is None else "_against") \
        + ("_unlabelled" if args.unlabelled else "") + (f"_{args.tag}" if args.tag else "")
    results["command"] = "python bench/speed.py " + " ".join(sys.argv[1:])
    (RESULTS / f"speed_{bundle.name}{suffix}.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
