"""What the benches that compare two ways of reading a bundle's training folder share: the
prepared images, passes that take turns, and the command line that writes their JSON; and, for
the benches that train (``seeds.py``, ``synthetic.py``), the ``-- TRAIN_ARGS`` of their command line.

Those benches (``reading_forms.py``, ``lazy.py``, ``precision.py``) measure no accuracy claim: they
compare two ways of computing the same readings, so every image of the training folder serves.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pipeline.batches import prepare_all  # noqa: E402
from pipeline.bundle import Bundle, load_bundle  # noqa: E402
from pipeline.config import StageParams  # noqa: E402
from pipeline.dataset import list_images  # noqa: E402
from pipeline.recognize import Prepared  # noqa: E402


def training_images(model: str) -> tuple[Bundle, Path, list[Prepared]]:
    """The bundle, its training folder, and every image of it through the classic stages."""
    bundle = load_bundle(model)
    folder = ROOT / bundle.manifest["data"]["folder"]
    params = StageParams.from_dict(bundle.manifest.get("params"))
    paths = [item.path for item in list_images(folder)]
    return bundle, folder, prepare_all(paths, params=params, lengths=bundle.lengths, height=bundle.image_height)


def timed(forms: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Each form's last output and its seconds per pass, the forms taking turns (this machine's
    speed drifts over minutes)."""
    out: dict[str, Any] = {}
    seconds: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(repeats):
        for name, run in forms.items():
            started = time.perf_counter()
            out[name] = run()
            seconds[name].append(time.perf_counter() - started)
    return out, seconds


def main_over_bundles(doc: str, script: str, measure: Callable[..., dict[str, Any]], *,
                      repeats: int | None = None) -> int:
    """The command line of such a bench: ``--model`` (repeatable; default both shipped bundles)
    and, when ``repeats`` is given, ``--repeats``; ``measure(model[, repeats])`` per bundle; the
    results to ``bench/results/<script>.json`` with the command that made them."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundle name or path (repeatable; default both shipped)")
    if repeats is not None:
        parser.add_argument("--repeats", type=int, default=repeats)
    args = parser.parse_args()
    extra = () if repeats is None else (args.repeats,)
    results = [measure(m, *extra) for m in (args.model or ["captcha_v2", "wp_rsc"])]
    RESULTS.mkdir(exist_ok=True)
    command = f"python bench/{script}.py " + " ".join(sys.argv[1:])
    (RESULTS / f"{script}.json").write_text(json.dumps({"command": command.strip(), "cpus": os.cpu_count(),
                                                        "bundles": results}, indent=1) + "\n", encoding="utf-8")
    return 0


def split_train_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(the bench's own arguments, the ``pipeline.train`` arguments after ``--``)."""
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def file_tag(parts: list[str]) -> str:
    """Arguments as part of a results file's name: ``--ctc-epochs 150`` -> ``ctc_epochs_150``."""
    return "".join(c if c.isalnum() else "_" for c in "_".join(a.lstrip("-") for a in parts))
