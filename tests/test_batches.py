"""Tier 1-2: chunking and the worker pool give every file exactly one result, in input order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.batches import chunk_bounds, iter_prepared, start_workers, uses_workers
from pipeline.config import GlyphParams, StageParams


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 31, 100])
@pytest.mark.parametrize("chunk", [1, 4, 10])
def test_chunks_cover_every_index_once_in_order(n: int, chunk: int):
    bounds = chunk_bounds(n, chunk)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
    assert all(0 < b - a <= chunk for a, b in bounds)


def test_first_chunks_are_smaller_so_the_models_start_early():
    assert [b - a for a, b in chunk_bounds(1000, 128)[:3]] == [32, 64, 128]


def test_small_folders_stay_in_process():
    assert not uses_workers(128, 2)
    assert uses_workers(129, 2)
    assert not uses_workers(10_000, 1)


def _bars(rng: np.random.Generator) -> np.ndarray:
    """A white 24x72 image with four dark bars: four 'glyphs' with gaps between them."""
    img = np.full((24, 72), 255, np.uint8)
    for k in range(4):
        x = 4 + 17 * k + int(rng.integers(0, 3))
        img[4:20, x : x + 8] = int(rng.integers(0, 60))
    return img


def test_workers_give_the_same_results_as_one_process_in_order(tmp_path: Path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(11):
        path = tmp_path / f"{i:02d}.png"
        if i == 5:
            path.write_bytes(b"not an image")
        else:
            Image.fromarray(_bars(rng)).save(path)
        paths.append(path)
    kwargs = {"params": StageParams(), "lengths": (4,), "height": 24}
    assert start_workers(2) == 2
    parallel = [p for c in iter_prepared(paths, n_jobs=2, chunk=4, **kwargs) for p in c]
    serial = [p for c in iter_prepared(paths, n_jobs=1, chunk=4, **kwargs) for p in c]
    assert len(parallel) == len(serial) == len(paths)
    assert isinstance(parallel[5], str) and "not a recognised image" in parallel[5]
    for a, b in zip(parallel, serial, strict=True):
        if isinstance(a, str):
            assert a == b
        else:
            assert not isinstance(b, str)
            np.testing.assert_array_equal(a.crops, b.crops)
            np.testing.assert_array_equal(a.lattice.cuts, b.lattice.cuts)


def test_workers_may_leave_the_planes_out_and_make_them_again(tmp_path: Path):
    """Without planes, what workers send still reads the same crops, and the planes made again
    from the file for drawing are the ones the image was read from; a file changed since
    is refused, not drawn from the wrong pixels."""
    rng = np.random.default_rng(1)
    paths = []
    for i in range(9):
        path = tmp_path / f"{i:02d}.png"
        Image.fromarray(_bars(rng)).save(path)
        paths.append(path)
    # With grey levels (as the shipped bundles): crops need neither the mask nor the grey image.
    kwargs = {"params": StageParams(glyph=GlyphParams(shade=True, first_mark=True)), "lengths": (4,), "height": 24}
    slim = [p for c in iter_prepared(paths, n_jobs=2, chunk=4, planes=False, **kwargs) for p in c]
    full = [p for c in iter_prepared(paths, n_jobs=2, chunk=4, **kwargs) for p in c]
    for a, b in zip(slim, full, strict=True):
        assert not isinstance(a, str) and not isinstance(b, str)
        assert a.gray is None and a.binary is None and a.cleaned is None and b.gray is not None
        np.testing.assert_array_equal(a.crops, b.crops)
    for a, b in zip(slim[:-1], full[:-1], strict=True):
        for made, kept in zip(a.planes(), b.planes(), strict=True):
            np.testing.assert_array_equal(made, kept)
    Image.fromarray(np.full((24, 72), 255, np.uint8)).save(paths[-1])  # the last file, now blank
    with pytest.raises(ValueError, match="differ"):
        slim[-1].planes()


def test_without_grey_levels_the_planes_travel(tmp_path: Path):
    """Crops cut from the cleaned mask alone need it: nothing is left out then."""
    paths = []
    for i in range(5):
        Image.fromarray(_bars(np.random.default_rng(i))).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    kwargs = {"params": StageParams(), "lengths": (4,), "height": 24}
    for p in (p for c in iter_prepared(paths, n_jobs=2, chunk=2, planes=False, **kwargs) for p in c):
        assert not isinstance(p, str) and p.cleaned is not None and p.gray is not None and p.remake is None
