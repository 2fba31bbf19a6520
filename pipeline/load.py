"""Stage 0, load: decode any supported image file into the grey contract.

The contract every later stage relies on: a grey image is ``uint8`` of shape ``(H, W)``, ink darker
than the background is *not* assumed (binarize decides polarity), but a transparent background is
always composited so that it reads as background, never as ink.

Decoding is the only place that touches file formats; it is also the guard against hostile input:
files that are empty, truncated, not images, decompression bombs, or far larger than any CAPTCHA
raise :class:`LoadError` with a one-line reason that the orchestrator writes into the results.
"""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

#: File endings the folder reader picks up (lower case, with the dot).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

#: Largest image accepted, in pixels. CAPTCHAs are a few thousand to a few hundred thousand pixels;
#: anything above this is refused before decoding, so a decompression bomb costs nothing.
MAX_PIXELS = 4_000_000
#: Largest file accepted, in bytes (a CAPTCHA is kilobytes).
MAX_FILE_BYTES = 32 * 1024 * 1024


class LoadError(ValueError):
    """A file that cannot be turned into a grey image; ``str(err)`` is a one-line reason."""


def load_gray(source: str | Path | bytes, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a file (path or its bytes) into a grey ``uint8 (H, W)`` image.

    Handles RGB, RGBA / LA / palette with transparency (composited so the transparent part is
    background), grey, 1-bit, 16-bit and float images, CMYK and YCbCr JPEGs; the first frame of an
    animated GIF / WEBP.

    Raises:
        LoadError: empty, truncated, not an image, too large, or an unsupported mode.
    """
    data = _read_bytes(source)
    if not data:
        raise LoadError("empty file")
    fast = _plain_png(data, max_pixels)
    if fast is not None:
        return fast
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than raises) on moderately large images; we do our own check.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width <= 0 or height <= 0:
                    raise LoadError(f"image has no pixels ({width}x{height})")
                if width * height > max_pixels:
                    raise LoadError(
                        f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                        f"{max_pixels:,} (far larger than any CAPTCHA)"
                    )
                img.seek(0)
                img.load()
                return _to_gray(img)
    except LoadError:
        raise
    except UnidentifiedImageError:
        raise LoadError("not a recognised image file") from None
    except Image.DecompressionBombError as exc:
        raise LoadError(f"refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Pillow reports truncation and corrupt chunks as OSError / SyntaxError.
        raise LoadError(f"corrupt or truncated image ({_one_line(exc)})") from None


#: PNG colour types OpenCV decodes exactly as Pillow does (8-bit samples, no palette, no tRNS):
#: 2 truecolour (RGB, BGR from OpenCV), 6 truecolour with alpha (RGBA, BGRA from OpenCV).
_PLAIN_PNG_TYPES = {2: cv2.COLOR_BGR2GRAY, 6: cv2.COLOR_BGRA2GRAY}


def _plain_png(data: bytes, max_pixels: int) -> np.ndarray | None:
    """The grey image of a well-formed, still 8-bit RGB / RGBA PNG without a tRNS chunk, decoded by
    OpenCV: the same pixels as Pillow's, and :func:`load_gray` in 0.33 against 0.43 ms of CPU for a
    captcha_v2 image, 0.07 against 0.17 for wp_rsc (ad-hoc timing over both training folders, on
    the 2-core machine). None for anything else, which Pillow then decodes or explains.

    Every chunk is walked and its CRC checked first, so that OpenCV never meets a truncated or
    corrupt file (its PNG decoder prints to stderr when it does): a damaged file goes to Pillow,
    whose error becomes the file's reason.
    """
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 33 or data[12:16] != b"IHDR":
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, colour, interlace = data[24], data[25], data[28]
    if depth != 8 or colour not in _PLAIN_PNG_TYPES or interlace != 0 or not 0 < width * height <= max_pixels:
        return None
    offset = 8
    view = memoryview(data)  # CRCs over slices of it copy nothing
    while True:  # length (4) + type (4) + data + CRC (4), up to IEND
        if offset + 12 > len(data):
            return None
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        end = offset + 8 + length
        if end + 4 > len(data) or kind in (b"tRNS", b"acTL"):  # a colour key; an animated PNG's frames
            return None
        if zlib.crc32(view[offset + 4 : end]) != int.from_bytes(data[end : end + 4], "big"):
            return None
        offset = end + 4
        if kind == b"IEND":
            break
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.shape[:2] != (height, width) or decoded.dtype != np.uint8:
        return None
    alpha = None if colour == 2 else decoded[..., 3]
    grey = _grey_levels(decoded, _PLAIN_PNG_TYPES[colour], alpha)
    return grey if alpha is None else _composite(grey, alpha)


def fit_height(gray: np.ndarray, height: int) -> np.ndarray:
    """Scale a grey image to ``height`` rows, keeping its aspect ratio (a no-op when it has them).

    Models are trained at one image height; schemes served at another size are brought to it.
    """
    h, w = gray.shape
    if h == height or height <= 0:
        return gray
    width = max(1, int(round(w * height / h)))
    interpolation = cv2.INTER_AREA if height < h else cv2.INTER_LINEAR
    return cv2.resize(gray, (width, height), interpolation=interpolation)


def _read_bytes(source: str | Path | bytes) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    path = Path(source)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise LoadError(f"cannot read file ({exc.strerror or exc})") from None
    if size > MAX_FILE_BYTES:
        raise LoadError(f"file is {size:,} bytes, over the limit of {MAX_FILE_BYTES:,}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoadError(f"cannot read file ({exc.strerror or exc})") from None


def _to_gray(img: Image.Image) -> np.ndarray:
    """Any decoded Pillow image -> grey uint8 (H, W); transparency composited as background."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        return _stretch_to_uint8(values)
    if mode in ("CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        img = img.convert("RGB")
        mode = "RGB"
    if mode == "1":
        img = img.convert("L")
        mode = "L"
    if mode == "La":
        img = img.convert("LA")
        mode = "LA"
    if mode == "RGBa":
        img = img.convert("RGBA")
        mode = "RGBA"

    if mode == "L":
        return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))
    if mode == "RGB":
        return _grey_levels(np.asarray(img, dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    if mode in ("RGBA", "LA"):
        arr = np.asarray(img, dtype=np.uint8)
        alpha = arr[..., -1]
        grey = _grey_levels(arr, cv2.COLOR_RGBA2GRAY, alpha) if mode == "RGBA" else arr[..., 0]
        return _composite(grey, alpha)
    raise LoadError(f"unsupported image mode {mode!r}")


#: Mean chroma (per pixel, its largest channel minus its smallest, 0-255) from which an image's
#: grey levels are its colours' distances from its page's colour rather than its luma.
COLOURFUL = 8.0


def _grey_levels(pixels: np.ndarray, luma_code: int, alpha: np.ndarray | None = None) -> np.ndarray:
    """Grey levels of an 8-bit colour image (H, W, 3 or 4, in the channel order ``luma_code``
    converts from; a fourth channel is ignored here): uint8 (H, W).

    An image without colour (a mean chroma under :data:`COLOURFUL`: grey pixels, or a grey
    image's JPEG noise) gives its ITU-R 601 luma, as every grey scheme always has. A coloured one
    gives each pixel's distance, in RGB, from the page's colour (the median of each channel: the
    page outnumbers the text), the page light and the farthest colour black. Luma alone reads a
    red, a green and a grey of one brightness as one level, so a letter whose colour differs from
    the page's in hue more than in brightness would vanish at the threshold; its distance does not.
    Where ``alpha`` shows that most of the image is transparent, the opaque pixels are the text
    itself, with no page to measure from: luma, laid on a contrasting level by :func:`_composite`.
    """
    luma = np.asarray(cv2.cvtColor(np.ascontiguousarray(pixels), luma_code), dtype=np.uint8)
    # RGB order whatever the decoder's (OpenCV's is BGR), so that both decoders' sums of squares
    # run in one order and give the same levels to the bit.
    colours = pixels[..., 2::-1] if luma_code in (cv2.COLOR_BGR2GRAY, cv2.COLOR_BGRA2GRAY) else pixels[..., :3]
    opaque = None if alpha is None or cv2.minMaxLoc(alpha)[0] == 255 else _opaque(alpha)
    if opaque is not None and not _holds_a_page(opaque):
        return luma
    # The chroma's mean over the image, by OpenCV on the decoder's planes (their order does not
    # matter here): some 20 microseconds for a CAPTCHA.
    planes = cv2.split(np.ascontiguousarray(pixels))
    spread = cv2.max(cv2.max(cv2.absdiff(planes[0], planes[1]), cv2.absdiff(planes[1], planes[2])),
                     cv2.absdiff(planes[0], planes[2]))
    if cv2.mean(spread)[0] < COLOURFUL:
        return luma
    samples = colours[opaque] if opaque is not None else colours.reshape(-1, 3)
    page = np.median(samples, axis=0).astype(np.float32)
    distance = np.sqrt(np.square(colours.astype(np.float32) - page).sum(axis=-1))
    far = float(distance[opaque].max() if opaque is not None else distance.max())  # a transparent colour is no ink
    if far <= 0.0:
        return luma
    return np.clip(255.0 - distance * (255.0 / far) + 0.5, 0, 255).astype(np.uint8)


def _composite(grey: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Blend a grey image over the background its transparent pixels stand for.

    Transparent pixels are background, never ink. Where most of the image is opaque, the opaque
    pixels hold a page (transparent corners or margins around it), and the transparent ones take
    the page's level: the median of the opaque pixels, which the page outnumbers the text in.
    Where most of it is transparent, the opaque pixels are the text itself (a transparent page),
    laid on the level that contrasts with it: dark text on white, light text on black.
    """
    if alpha.min() == 255:
        return np.ascontiguousarray(grey)
    weight = alpha.astype(np.float32) / 255.0
    opaque = _opaque(alpha)
    level = float(np.median(grey[opaque])) if opaque.any() else 0.0
    if _holds_a_page(opaque):
        background = level  # a page with transparent corners or margins
    else:
        background = 255.0 if level < 128 else 0.0  # text on a transparent page
    blended = grey.astype(np.float32) * weight + background * (1.0 - weight)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def _opaque(alpha: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels more opaque than transparent (alpha over half of 255)."""
    return alpha > 127


def _holds_a_page(opaque: np.ndarray) -> bool:
    """Whether the opaque pixels are a page (most of the image), not the text alone on a
    transparent one: the one rule by which :func:`_grey_levels` and :func:`_composite` read
    transparency."""
    return 2 * int(np.count_nonzero(opaque)) > opaque.size


def _stretch_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth or float image onto 0..255 by its own range."""
    if values.ndim == 3:
        values = values[..., :3].mean(axis=-1)
    finite = np.isfinite(values)
    if not finite.any():
        raise LoadError("image holds no finite pixel values")
    lo, hi = float(values[finite].min()), float(values[finite].max())
    if hi <= lo:
        return np.full(values.shape, 255 if lo > 0 else 0, dtype=np.uint8)
    scaled = (np.where(finite, values, lo) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
