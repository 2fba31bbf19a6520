"""The one module that turns traces into images: ``NN_<stage>.png`` per stage, and a strip.

Every picture is drawn from the arrays in the :class:`~pipeline.recognize.Trace` that the
prediction came from; nothing is recomputed here.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage.color import label2rgb
from skimage.measure import label

from pipeline.recognize import Trace

GREEN, RED, BLUE, GREY = (40, 170, 40), (30, 30, 220), (200, 90, 20), (150, 150, 150)


def stage_images(trace: Trace) -> list[tuple[str, np.ndarray]]:
    """(stage name, BGR uint8 image) for every stage of one trace, in pipeline order."""
    grey, binary, cleaned = trace.prepared.planes()
    gray = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    images = [
        ("gray", gray),
        ("binary", _mask(binary)),
        ("cleaned", _mask(cleaned)),
        ("components", _components(cleaned)),
        ("split", _split(gray, trace)),
    ]
    if trace.path is not None:
        images.append(("glyphs", _glyphs(trace)))
    images.append(("result", _result(gray.shape[1], trace)))
    return images


def write_trace(trace: Trace, folder: Path) -> list[Path]:
    """Write ``folder/NN_<stage>.png`` for every stage and ``folder/strip.png``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    images = stage_images(trace)
    for n, (stage, image) in enumerate(images, start=1):
        written.append(_write(folder / f"{n:02d}_{stage}.png", image))
    written.append(_write(folder / "strip.png", strip(images)))
    return written


def strip(images: list[tuple[str, np.ndarray]], *, scale: int = 2) -> np.ndarray:
    """All stage images side by side (each titled), one picture per file."""
    height = max(im.shape[0] for _, im in images) * scale
    tiles = []
    for name, im in images:
        big = cv2.resize(im, (im.shape[1] * scale, im.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
        tile = np.full((height + 16, big.shape[1] + 6, 3), 255, np.uint8)
        tile[16 : 16 + big.shape[0], 3 : 3 + big.shape[1]] = big
        cv2.putText(tile, name, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.hstack(tiles)


def encode_png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def _write(path: Path, image: np.ndarray) -> Path:
    # imencode + write_bytes: cv2.imwrite mishandles non-ASCII paths on some platforms.
    path.write_bytes(encode_png(image))
    return path


def _mask(mask: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((~mask).astype(np.uint8) * 255, cv2.COLOR_GRAY2BGR)


def _components(mask: np.ndarray) -> np.ndarray:
    labels = label(mask, connectivity=2)
    rgb = label2rgb(labels, bg_label=0, bg_color=(1, 1, 1))
    return cv2.cvtColor((rgb * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _split(gray: np.ndarray, trace: Trace) -> np.ndarray:
    """Candidate cuts (grey ticks), the chosen glyph boxes (green, red where rejected)."""
    out = gray.copy()
    lattice = trace.prepared.lattice
    for c in lattice.cuts:
        cv2.line(out, (int(c), 0), (int(c), 3), GREY, 1)
    if trace.path is not None and trace.glyph_probs is not None:
        reject = trace.glyph_probs.shape[1] - 1
        for (x0, y0, x1, y1), p in zip(trace.path.boxes, trace.glyph_probs, strict=True):
            color = RED if p.argmax() == reject else GREEN
            cv2.rectangle(out, (int(x0), int(y0)), (int(x1) - 1, int(y1) - 1), color, 1)
    return out


def _glyphs(trace: Trace) -> np.ndarray:
    """The chosen crops side by side, each with its predicted character and confidence below; a
    crop of several channels (mask, grey levels, first-glyph mark) shows them one above the other, as the CNN
    got them."""
    assert trace.path is not None and trace.segment is not None
    crops = trace.prepared.crops_of(trace.path.segment_ids)
    crops = crops if crops.ndim == 4 else crops[..., None]  # (N, size, size, channels)
    size, channels = crops.shape[1], crops.shape[3]
    cell = size * 2
    out = np.full((cell * channels + 26, cell * len(crops) + 2 * len(crops), 3), 255, np.uint8)
    for n, crop in enumerate(crops):
        x = n * (cell + 2)
        for c in range(channels):
            tile = cv2.resize(255 - crop[..., c], (cell, cell), interpolation=cv2.INTER_NEAREST)
            out[c * cell : (c + 1) * cell, x : x + cell] = tile[..., None]
        char = trace.segment.text[n] if n < len(trace.segment.text) else "?"
        conf = trace.segment.char_conf[n] if n < len(trace.segment.char_conf) else 0.0
        _text(out, f"{_ascii(char)} {conf:.2f}", (x + 2, cell * channels + 16), GREEN if conf >= 0.5 else RED)
    return out


def _result(width: int, trace: Trace) -> np.ndarray:
    out = np.full((54, max(width, 220), 3), 255, np.uint8)
    seg = trace.segment
    _text(out, f"{trace.route}: {_ascii(trace.text)} ({trace.confidence:.2f})", (3, 14), BLUE)
    if seg is not None:
        _text(out, f"seg: {_ascii(seg.text)} ({seg.confidence:.2f})", (3, 31), GREY)
    if trace.ctc is not None:
        _text(out, f"ctc: {_ascii(trace.ctc.text)} ({trace.ctc.confidence:.2f})", (3, 48), GREY)
    return out


def _text(image: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int]) -> None:
    cv2.putText(image, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.42, color, 1, cv2.LINE_AA)


def _ascii(text: str) -> str:
    """OpenCV's Hershey fonts draw ASCII only; show other characters as their code point."""
    return "".join(c if 32 <= ord(c) < 127 else f"U+{ord(c):04X}" for c in text)
