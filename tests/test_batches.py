"""Tier 1-2: chunking and the worker pool give every file exactly one result, in input order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.batches import chunk_bounds, iter_prepared, start_workers, uses_workers
from pipeline.config import StageParams


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
