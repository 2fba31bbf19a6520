"""Model bundles: a folder of weight files and one JSON manifest that describes them.

A bundle is what ``pipeline.train`` writes and ``pipeline.run --model`` reads::

    models/captcha_v2/
        manifest.json        charset, lengths, image size, stage parameters, data fingerprint,
                             command, library versions, and per reader: weights file, sha256,
                             architecture, validation figures
        glyph.weights.h5     the glyph CNN (weights only)
        ctc.weights.h5       the CRNN (weights only)

Only weights are stored; architectures are rebuilt by the builder functions from the manifest, so
loading a bundle never deserialises code. Every weights file is checked against its sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
#: Where named bundles live: ``models/`` at the project root.
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "captcha_v2"


class BundleError(ValueError):
    """A bundle that is missing, malformed, or whose weights do not match their manifest."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name))

    @property
    def charset(self) -> str:
        return str(self.manifest["charset"])

    @property
    def lengths(self) -> tuple[int, ...]:
        """Text lengths the scheme uses, most frequent first."""
        return tuple(int(n) for n in self.manifest["lengths"])

    @property
    def image_height(self) -> int:
        """Height (pixels) images are scaled to before the stages run."""
        return int(self.manifest["image_height"])

    def reader(self, name: str) -> dict[str, Any] | None:
        """The manifest entry of reader ``glyph`` or ``ctc``, or None when the bundle lacks it."""
        entry = self.manifest.get("readers", {}).get(name)
        return dict(entry) if entry else None

    def weights_path(self, name: str) -> Path:
        """The verified weights file of reader ``name``."""
        entry = self.reader(name)
        if entry is None:
            raise BundleError(f"bundle {self.name!r} has no {name!r} reader")
        path = self.path / entry["weights"]
        if not path.is_file():
            raise BundleError(f"bundle {self.name!r}: weights file missing: {path}")
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise BundleError(
                f"bundle {self.name!r}: {path.name} does not match its manifest "
                f"(sha256 {digest[:12]}…, expected {entry['sha256'][:12]}…); refusing to load it"
            )
        return path


def resolve(name_or_dir: str | Path) -> Path:
    """A bundle name (a folder under ``models/``) or a path to a bundle folder -> its folder."""
    candidate = Path(name_or_dir)
    if (candidate / MANIFEST).is_file():
        return candidate
    named = MODELS_DIR / str(name_or_dir)
    if (named / MANIFEST).is_file():
        return named
    available = sorted(p.parent.name for p in MODELS_DIR.glob(f"*/{MANIFEST}"))
    raise BundleError(
        f"no model bundle at {name_or_dir!r} (a folder with {MANIFEST}); "
        f"named bundles: {', '.join(available) or 'none'}"
    )


def load_bundle(name_or_dir: str | Path) -> Bundle:
    """Read and validate a bundle's manifest (weights are verified when a reader is loaded)."""
    folder = resolve(name_or_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {folder / MANIFEST}: {exc}") from None
    for key in ("charset", "lengths", "image_height", "readers"):
        if key not in manifest:
            raise BundleError(f"{folder / MANIFEST} lacks {key!r}")
    if int(manifest.get("format", 0)) > FORMAT_VERSION:
        raise BundleError(f"{folder / MANIFEST} has format {manifest['format']}, newer than this code")
    return Bundle(path=folder, manifest=manifest)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically (a crash never leaves half a manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / MANIFEST
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a bundle depends on, for its manifest."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for dist in ("numpy", "opencv-python-headless", "scikit-image", "scikit-learn", "tensorflow-cpu",
                 "tensorflow", "keras", "pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Keep TensorFlow's native start-up chatter (oneDNN and absl notices on file descriptor 2)
    off the terminal while models load, unless the user asked for it with
    ``TF_CPP_MIN_LOG_LEVEL=0``. Recent TensorFlow ignores that variable for these lines, so they
    are silenced at the descriptor; Python exceptions still propagate as usual."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
