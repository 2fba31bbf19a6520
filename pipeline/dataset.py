"""Folders of CAPTCHA images: which files, what their labels are, and the seeded split.

A labelled folder holds one image per file; the label is the file stem (``3ebpw.png`` reads
"3ebpw"), or, where labels cannot be file names, a ``labels.csv`` with columns ``file,label``
beside the images (it wins over stems for the files it names).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.load import IMAGE_SUFFIXES

LABELS_CSV = "labels.csv"
#: The first columns of ``pipeline.run``'s predictions.csv (``run.COLUMNS`` begins with them): a
#: folder holding a predictions.csv whose header begins so is a run's output.
RUN_OUTPUT_COLUMNS = ("file", "prediction", "route")
RUN_OUTPUT_HEADER = ",".join(RUN_OUTPUT_COLUMNS) + ","
#: The subfolder of a run's output that holds its stage images.
DEBUG_DIR = "debug"

log = logging.getLogger(__name__)


class FolderError(ValueError):
    """The folder itself is unusable (missing, not a folder, no images); one-line reason."""


@dataclass(frozen=True)
class Item:
    """One image file of a folder."""

    path: Path  # absolute or as given
    rel: str  # path relative to the folder, with forward slashes: the row key in outputs
    label: str | None  # the known text, or None
    label_from: str = "stem"  # "stem" (the file name) or "csv" (labels.csv)


def list_images(folder: str | Path, *, recursive: bool = True, skip: Sequence[str | Path] = ()) -> list[Item]:
    """Every image file under ``folder`` (sorted by relative path), with its label where known.

    Left out, and said so in the log: images under ``skip`` (e.g. the run's own OUT, where it lies
    inside ``folder``) and the stage images of a ``pipeline.run`` output (its ``debug/`` beside a
    predictions.csv, :func:`is_run_output`), ``folder``'s own included: they are not CAPTCHAs.

    Raises:
        FolderError: the folder is missing, not a directory, or unreadable.
    """
    root = Path(folder)
    if not root.exists():
        raise FolderError(f"folder not found: {root}")
    if not root.is_dir():
        raise FolderError(f"not a folder: {root}")
    try:
        pattern = "**/*" if recursive else "*"
        files = sorted(
            # A broken link is listed too: its row then says it cannot be read, rather than no row.
            (p for p in root.glob(pattern)
             if p.suffix.lower() in IMAGE_SUFFIXES and (p.is_file() or (p.is_symlink() and not p.exists()))),
            key=lambda p: p.relative_to(root).as_posix(),
        )
    except OSError as exc:
        raise FolderError(f"cannot list folder {root}: {exc.strerror or exc}") from None
    files = _without_outputs(root, files, skip)
    csv_labels = read_labels_csv(root / LABELS_CSV)
    items = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        listed = csv_labels.get(rel, csv_labels.get(path.name))
        if listed is not None:
            items.append(Item(path=path, rel=rel, label=listed or None, label_from="csv"))
        else:
            items.append(Item(path=path, rel=rel, label=label_from_stem(path)))
    return items


def is_run_output(folder: Path) -> bool:
    """Whether ``folder`` holds the predictions.csv of a ``pipeline.run`` (its header)."""
    try:
        with (folder / "predictions.csv").open(encoding="utf-8", newline="") as fh:
            return fh.readline(len(RUN_OUTPUT_HEADER)) == RUN_OUTPUT_HEADER
    except (OSError, UnicodeDecodeError):
        return False


def _without_outputs(root: Path, files: list[Path], skip: Sequence[str | Path]) -> list[Path]:
    """``files`` less those under ``skip`` (``root`` itself aside) or under a run output's debug/."""
    skipped = {real for s in skip if (real := _real(Path(s))) is not None} - {_real(root)}
    verdict: dict[Path, bool] = {}  # per subfolder: is it (or a folder above it) left out?

    def left_out(folder: Path) -> bool:
        if folder == root:
            return False
        if folder not in verdict:
            verdict[folder] = (left_out(folder.parent) or _real(folder) in skipped
                               or (folder.name == DEBUG_DIR and is_run_output(folder.parent)))
        return verdict[folder]

    kept = [p for p in files if not left_out(p.parent)]
    if len(kept) < len(files):
        tops = sorted({f.relative_to(root).as_posix() for f, out in verdict.items()
                       if out and not left_out(f.parent)})
        log.info("left out %d images in %s: pipeline.run's own output, not CAPTCHAs",
                 len(files) - len(kept), ", ".join(tops))
    return kept


def _real(path: Path) -> Path | None:
    """``path`` with its links resolved; None where that fails (a link loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def label_from_stem(path: Path) -> str | None:
    """The label a file name carries: its stem (None for a blank stem)."""
    stem = path.stem.strip()
    return stem or None


def read_labels_csv(path: Path) -> dict[str, str]:
    """``file,label`` rows of a labels.csv (header optional); empty dict where there is none."""
    if not path.is_file():
        return {}
    labels: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if len(row) < 2 or not row[0].strip():
                continue
            name, label = row[0].strip(), row[1].strip()
            if (name.lower(), label.lower()) == ("file", "label"):
                continue
            labels[name.replace("\\", "/")] = label
    return labels


def plausible_labels(items: Sequence[Item], charset: str) -> tuple[list[Item], int]:
    """Drop stem labels that cannot be labels for a model with ``charset`` (``img001.png`` in an
    unlabelled folder); labels.csv labels are always kept. Returns (items, how many were dropped)."""
    allowed = set(charset)
    out, dropped = [], 0
    for it in items:
        if it.label and it.label_from == "stem" and not set(it.label) <= allowed:
            out.append(Item(path=it.path, rel=it.rel, label=None, label_from=it.label_from))
            dropped += 1
        else:
            out.append(it)
    return out, dropped


def labelled(items: Sequence[Item]) -> list[Item]:
    """The items whose label is known."""
    return [it for it in items if it.label]


def charset_of(labels: Sequence[str]) -> str:
    """The sorted set of characters the labels use: a scheme's character set comes from its data."""
    return "".join(sorted(set("".join(labels))))


def lengths_of(labels: Sequence[str]) -> list[int]:
    """Label lengths that occur, most frequent first."""
    return [n for n, _ in Counter(len(t) for t in labels).most_common()]


def split_indices(n: int, *, val_fraction: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, reproducible (train, validation) split of ``range(n)``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def fingerprint(items: Sequence[Item]) -> str:
    """sha256 over the sorted (relative path, label, content sha256) of every item."""
    outer = hashlib.sha256()
    for it in sorted(items, key=lambda i: i.rel):
        content = hashlib.sha256(it.path.read_bytes()).hexdigest()
        outer.update(f"{it.rel}\t{it.label}\t{content}\n".encode())
    return outer.hexdigest()
