"""load: any file -> grey uint8 (H, W), or a LoadError with a one-line reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.load as load_module
from pipeline.binarize import binarize
from pipeline.load import LoadError, fit_height, load_gray


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def dark_text_rgba(transparent_background: bool) -> Image.Image:
    """A 10x20 RGBA image: black 'ink' block on a background that is transparent or white."""
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[..., 3] = 0 if transparent_background else 255
    arr[..., :3] = 0 if transparent_background else 255  # transparent black, or opaque white
    arr[3:7, 5:15] = (0, 0, 0, 255)
    return Image.fromarray(arr, "RGBA")


def test_grey_rgb_gives_luma():
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[0, 0] = (90, 80, 80)  # a chroma of 10 on one pixel of six: a mean under COLOURFUL
    arr[1, 2] = (255, 255, 255)
    gray = load_gray(encode(Image.fromarray(arr, "RGB")))
    assert gray.dtype == np.uint8 and gray.shape == (2, 3)
    assert gray[0, 0] == 83  # 0.299 * 90 + 0.701 * 80, rounded
    assert gray[1, 2] == 255 and gray[0, 1] == 0


def _letters_of_many_colours(page: tuple[int, int, int], fmt: str = "PNG") -> tuple[bytes, list[np.ndarray]]:
    """A 30x100 image of four bars ("letters") on a ``page`` colour: two nearly black, two of a
    colour as bright as the page (the same luma within a level or two) but of another hue; and
    the bars' masks."""
    arr = np.zeros((30, 100, 3), np.uint8)
    arr[:] = page
    luma = 0.299 * page[0] + 0.587 * page[1] + 0.114 * page[2]
    # A red-shifted and a blue-shifted colour of the page's luma.
    inks = [(20, 20, 20), (int(min(255, page[0] + 90)), int(round((luma - 0.299 * min(255, page[0] + 90)
                                                                         - 0.114 * page[2]) / 0.587)), page[2]),
            (25, 15, 30), (page[0], int(round((luma - 0.299 * page[0] - 0.114 * min(255, page[2] + 120)) / 0.587)),
                           int(min(255, page[2] + 120)))]
    masks = []
    for k, ink in enumerate(inks):
        mask = np.zeros((30, 100), bool)
        mask[6:24, 10 + 22 * k : 20 + 22 * k] = True
        arr[mask] = ink
        masks.append(mask)
    return encode(Image.fromarray(arr, "RGB"), fmt), masks


@pytest.mark.parametrize("page", [(150, 150, 150), (120, 160, 140), (90, 110, 100)])
def test_letters_of_another_hue_but_the_same_brightness_are_ink(page: tuple[int, int, int]):
    data, masks = _letters_of_many_colours(page)
    gray = load_gray(data)
    mask = binarize(gray, smooth=1)
    for letter in masks:
        assert mask[letter].mean() > 0.95  # every letter is ink, the isoluminant ones too
    assert not mask[~np.any(masks, axis=0)].any()  # and the page is not
    assert gray[0, 0] == 255  # the page is the lightest level


def test_opaque_rgba_gives_the_luma_of_its_rgb():
    rgb = np.random.default_rng(4).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((9, 13), 255, np.uint8)])
    np.testing.assert_array_equal(load_gray(encode(Image.fromarray(rgba, "RGBA"))),
                                  load_gray(encode(Image.fromarray(rgb, "RGB"))))


def test_transparent_background_is_not_ink():
    # Transparent black pixels would read as ink if alpha were dropped; they must become background.
    gray = load_gray(encode(dark_text_rgba(transparent_background=True)))
    assert gray[0, 0] == 255 and gray[5, 10] == 0
    same = load_gray(encode(dark_text_rgba(transparent_background=False)))
    np.testing.assert_array_equal(gray, same)


def test_light_ink_on_transparent_is_laid_on_black():
    arr = np.zeros((10, 20, 4), np.uint8)
    arr[3:7, 5:15] = (255, 255, 255, 255)
    gray = load_gray(encode(Image.fromarray(arr, "RGBA")))
    assert gray[0, 0] == 0 and gray[5, 10] == 255


def _page_with_transparent_edges(page: int | tuple[int, int, int], ink: int | tuple[int, int, int],
                                 edges: str) -> np.ndarray:
    """A 30x60 RGBA page of grey ``page`` with an ``ink`` bar, and transparent black pixels:
    its four corners (rounded corners) or its first and last 6 columns (margins)."""
    arr = np.zeros((30, 60, 4), np.uint8)
    arr[..., :3], arr[..., 3] = page, 255
    arr[10:20, 20:40, :3] = ink
    if edges == "corners":
        for rows in (slice(0, 5), slice(-5, None)):
            for cols in (slice(0, 5), slice(-5, None)):
                arr[rows, cols] = 0
    else:
        arr[:, :6] = arr[:, -6:] = 0
    return arr


# page level, ink level, where the page is transparent
PAGE_CASES = [
    (230, 30, "corners"),  # a light page with rounded corners: they are page, not dark ink
    (230, 30, "margins"),
    (40, 220, "corners"),  # a dark page with light text: its transparent edges are dark page
    (40, 220, "margins"),
    ((200, 120, 60), (40, 60, 200), "corners"),  # coloured: distances from the page, the page at 255
    ((30, 60, 40), (200, 200, 90), "margins"),
]


@pytest.mark.parametrize(("page", "ink", "edges"), PAGE_CASES)
def test_transparent_edges_of_an_opaque_page_are_page(page: int | tuple[int, int, int],
                                                      ink: int | tuple[int, int, int], edges: str):
    arr = _page_with_transparent_edges(page, ink, edges)
    gray = load_gray(encode(Image.fromarray(arr, "RGBA")))
    page_level, ink_level = (page, ink) if isinstance(page, int) else (255, 0)
    assert gray[0, 0] == gray[-1, -1] == gray[15, 10] == page_level  # the transparent edges read as the page
    assert gray[15, 30] == ink_level
    mask = binarize(gray, smooth=1)
    assert mask.sum() == 10 * 20 and mask[10:20, 20:40].all()  # the bar is the only ink


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("L", "PNG"),  # grey
        ("P", "PNG"),  # palette
        ("P", "GIF"),  # palette GIF
        ("RGB", "JPEG"),  # lossy
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
        ("1", "PNG"),  # 1-bit
        ("CMYK", "JPEG"),
        ("LA", "PNG"),  # grey + alpha
    ],
)
def test_modes_and_formats_decode(mode: str, fmt: str):
    base = np.full((12, 30), 255, np.uint8)
    base[4:8, 5:25] = 0
    img = Image.fromarray(base, "L").convert(mode)
    gray = load_gray(encode(img, fmt))
    assert gray.dtype == np.uint8 and gray.shape == (12, 30)
    assert gray[6, 15] < 60 and gray[0, 0] > 195  # ink dark, background light, in every mode


def test_16_bit_is_stretched():
    arr = np.full((8, 8), 60000, np.uint16)
    arr[2:6, 2:6] = 1000
    gray = load_gray(encode(Image.fromarray(arr)))
    assert gray[0, 0] == 255 and gray[3, 3] == 0


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),  # zero bytes
        (b"this is not an image at all", "not a recognised image"),  # text with an image name
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "not a recognised|corrupt"),  # PNG signature, junk
    ],
)
def test_bad_bytes_give_reasons(data: bytes, reason: str):
    with pytest.raises(LoadError, match=reason):
        load_gray(data)


def test_truncated_png():
    data = encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 200), np.uint8)))
    with pytest.raises(LoadError, match="corrupt or truncated"):
        load_gray(data[: len(data) // 2])


def test_huge_image_refused_before_decoding():
    # A 10000 x 10000 PNG of one colour is a few kB: a decompression bomb in miniature.
    data = encode(Image.new("L", (10_000, 10_000), 255))
    assert len(data) < 200_000
    with pytest.raises(LoadError, match="over the limit"):
        load_gray(data)


def test_missing_file(tmp_path: Path):
    with pytest.raises(LoadError, match="cannot read file"):
        load_gray(tmp_path / "nope.png")


def test_fit_height_keeps_aspect():
    gray = np.zeros((25, 100), np.uint8)
    assert fit_height(gray, 50).shape == (50, 200)
    assert fit_height(gray, 25) is gray


def _pillow_only(data: bytes, monkeypatch: pytest.MonkeyPatch) -> np.ndarray:
    with monkeypatch.context() as m:
        m.setattr(load_module, "_plain_png", lambda data, max_pixels: None)
        return load_gray(data)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_plain_pngs_decode_by_opencv_to_pillows_pixels(mode: str, monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(5)
    arr = rng.integers(0, 256, (17, 23, len(mode)), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = rng.choice([0, 90, 255], size=(17, 23))  # transparent, half, opaque
    data = encode(Image.fromarray(arr, mode))
    assert load_module._plain_png(data, load_module.MAX_PIXELS) is not None  # the fast path took it
    np.testing.assert_array_equal(load_gray(data), _pillow_only(data, monkeypatch))


def _rgb_png(**save: object) -> bytes:
    return encode(Image.fromarray(np.random.default_rng(6).integers(0, 256, (9, 11, 3), dtype=np.uint8), "RGB"),
                  **save)


def _bad_crc(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[40] ^= 0xFF  # inside the first chunk after IHDR: its CRC no longer matches
    return bytes(damaged)


@pytest.mark.parametrize(
    "data",
    [
        encode(Image.new("L", (9, 11), 40)),  # grey
        encode(Image.new("P", (9, 11))),  # palette
        encode(Image.fromarray(np.full((9, 11), 1000, np.uint16))),  # 16-bit
        _rgb_png(transparency=(0, 0, 0)),  # a tRNS colour key: Pillow's reading of it stays
        encode(Image.new("RGB", (9, 11)), save_all=True,  # animated (APNG): Pillow picks the frame
               append_images=[Image.new("RGB", (9, 11), (255, 0, 0))]),
        _rgb_png()[:-20],  # truncated
        _bad_crc(_rgb_png()),  # corrupt
        encode(Image.new("RGB", (3000, 3000))),  # over max_pixels=1,000,000 below
        encode(Image.new("RGB", (9, 11)), "BMP"),  # not a PNG
    ],
)
def test_anything_but_a_sound_plain_png_goes_to_pillow(data: bytes):
    assert load_module._plain_png(data, 1_000_000) is None
