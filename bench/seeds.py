"""How much the segment route's figures move with the split and the training run.

    python bench/seeds.py [--data ../shared/datasets/captcha_v2/train] [--seeds 3 4 5 6 7] [-- TRAIN_ARGS]

One validation split of a small data set (captcha_v2: 125 images) gives a figure that moves by
several points with the split and the training run. This trains the glyph reader only
(``pipeline.train --reader glyph``) once per seed, each on its own seeded split, into a temporary
folder, and collects each bundle's validation figures (measured on the seed's validation split,
which training neither learns from nor chooses by). Seeds 0, 1 and 8-17 were used while
developing; the default seeds 3-7 were not. Writes ``bench/results/seeds_<data set>.json``.
``--keep DIR`` keeps each seed's bundle as ``DIR/seed<N>``. The file is rewritten after every
seed (``"complete": false`` until the last), so a run stopped part way keeps what it measured.
Arguments after ``--`` go to every ``pipeline.train`` call (``-- --glyph-members 2``); the results
then go to ``seeds_<data set>_<those arguments>.json``, and other seeds than the default to
``seeds_<data set>_seeds_<the seeds>[_<arguments>].json``. ``--tag NAME`` appends ``_NAME`` (a rerun
of a recipe on another machine, kept beside the first: training is deterministic on one machine,
not across machines).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import RESULTS, ROOT, file_tag, split_train_args

DEFAULT_SEEDS = [3, 4, 5, 6, 7]  # splits nobody tuned on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "captcha_v2" / "train")
    parser.add_argument("--seeds", type=int, nargs="+", default=DEFAULT_SEEDS)
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy each seed's bundle to KEEP/seed<N> (e.g. for bench/decoding.py); default: discard")
    parser.add_argument("--tag", default="", help="append _TAG to the results file's name")
    argv = sys.argv[1:]
    own, extra = split_train_args(argv)
    args = parser.parse_args(own)
    if not args.data.is_dir():
        raise SystemExit(f"no data folder {args.data}")
    name = args.data.parent.name if args.data.name == "train" else args.data.name
    # Other seeds (development splits) or training arguments go to their own file, so that they
    # never overwrite the untuned default seeds' figures that the README quotes.
    tag = file_tag(([] if args.seeds == DEFAULT_SEEDS else ["seeds", *map(str, args.seeds)]) + extra
                   + ([args.tag] if args.tag else []))
    results = RESULTS / f"seeds_{name}{'_' + tag if tag else ''}.json"
    RESULTS.mkdir(exist_ok=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            out = Path(tmp) / f"seed{seed}"
            started = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "pipeline.train", str(args.data), "--out", str(out), "--seed", str(seed),
                 "--reader", "glyph", *extra], capture_output=True, text=True, cwd=ROOT,
            )
            if proc.returncode != 0:
                raise SystemExit(f"training seed {seed} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
            manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
            if args.keep is not None:
                shutil.copytree(out, args.keep / f"seed{seed}", dirs_exist_ok=True)
            figures = manifest["readers"]["glyph"]["validation"]
            runs.append({"seed": seed, "seconds": round(time.perf_counter() - started, 1),
                         "glyph_training_seconds": manifest["readers"]["glyph"]["training"]["seconds"], **figures})
            print(f"seed {seed}: segment route {figures['accuracy']:.2%}, glyph accuracy "
                  f"{figures['glyph_accuracy']:.2%} on {figures['images']} validation images", flush=True)
            # After every seed: a run stopped part way (by hand, or a failed split) keeps the
            # splits it finished, marked as not complete.
            summary = _write(results, args, argv, extra, runs)
    print(f"{name}, {len(runs)} seeds: segment route mean {summary['accuracy']['mean']:.2%} "
          f"(range {summary['accuracy']['min']:.2%}-{summary['accuracy']['max']:.2%}), glyph accuracy mean "
          f"{summary['glyph_accuracy']['mean']:.2%}")
    return 0


def _write(results: Path, args: argparse.Namespace, argv: list[str], extra: list[str], runs: list[dict]) -> dict:
    summary = {}
    for key in ("accuracy", "glyph_accuracy"):
        values = [r[key] for r in runs]
        summary[key] = {"mean": statistics.mean(values), "min": min(values), "max": max(values),
                        "stdev": statistics.stdev(values) if len(values) > 1 else 0.0}
    results.write_text(
        json.dumps({"data": str(args.data), "command": "python bench/seeds.py " + " ".join(argv),
                    "train_args": extra, "complete": len(runs) == len(args.seeds), "runs": runs,
                    "summary": summary}, indent=1) + "\n", encoding="utf-8")
    return summary


if __name__ == "__main__":
    sys.exit(main())
