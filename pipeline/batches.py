"""Files -> prepared images, in parallel chunks, without losing a file to an error.

Loading and the classic stages are CPU work with no model, so they run in joblib worker processes
while the main process runs the models on the chunks already done. A file that cannot be read, or
a stage that fails on it, becomes an error string for that file; the rest of the run goes on.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
from joblib import Parallel, delayed

from pipeline.config import StageParams
from pipeline.load import LoadError, load_gray
from pipeline.recognize import Prepared, prepare

#: Images per chunk handed to a worker: large enough to amortise inter-process overhead.
CHUNK = 128


def default_jobs() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def uses_workers(n_paths: int, n_jobs: int, chunk: int = CHUNK) -> bool:
    """Whether :func:`iter_prepared` runs in worker processes: not for one chunk's worth of
    files, where starting the workers would cost more than it saves."""
    return n_jobs > 1 and n_paths > chunk


def start_workers(n_jobs: int | None = None) -> int:
    """Start the worker processes (and their imports) now, so a run's first chunk does not wait
    for them (0.7-0.9 s measured on the 2-core reference machine): start-up, not per-image work.

    joblib keeps the pool alive between calls with the same ``n_jobs``. Returns the number of
    distinct worker processes that answered.
    """
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    if n_jobs <= 1:
        return 0
    # Enough short tasks that every worker receives one (each imports this module to run it).
    pids = Parallel(n_jobs=n_jobs)(delayed(_worker_pid)() for _ in range(4 * n_jobs))
    return len(set(pids))


def _worker_pid() -> int:
    time.sleep(0.02)
    return os.getpid()


def prepare_file(
    path: Path, *, params: StageParams, lengths: tuple[int, ...], height: int, line_size: tuple[int, int] | None = None
) -> Prepared | str:
    """Load and prepare one file; a one-line reason instead of a Prepared when that fails."""
    started = time.perf_counter()
    try:
        gray = load_gray(path)
    except LoadError as exc:
        return str(exc)
    load_ms = (time.perf_counter() - started) * 1000.0
    try:
        prepared = prepare(gray, params=params, lengths=lengths, height=height, line_size=line_size)
    except (ValueError, MemoryError) as exc:  # a stage refusing a degenerate image
        return f"processing failed: {exc}"
    prepared.ms = {"load": load_ms, **prepared.ms}
    return prepared


def _prepare_chunk(
    paths: Sequence[Path], params: StageParams, lengths: tuple[int, ...], height: int,
    line_size: tuple[int, int] | None = None,
) -> list[Prepared | str]:
    return [prepare_file(p, params=params, lengths=lengths, height=height, line_size=line_size) for p in paths]


def _prepare_chunk_in_worker(
    paths: Sequence[Path], params: StageParams, lengths: tuple[int, ...], height: int,
    line_size: tuple[int, int] | None = None, planes: bool = True,
) -> list[Prepared | str]:
    """:func:`_prepare_chunk` in a worker process, with OpenCV on one thread: the workers already
    fill the cores, and on CAPTCHA-sized images OpenCV's own threads only add work (CPU time of
    the image stages 3.8 -> 2.4 ms an image on the 2-core machine, the same wall time alone; an
    ad-hoc timing). Without ``planes``, each image is sent :meth:`~Prepared.without_planes`."""
    cv2.setNumThreads(1)
    done = _prepare_chunk(paths, params, lengths, height, line_size)
    return done if planes else [p if isinstance(p, str) else p.without_planes() for p in done]


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """[start, end) of each chunk of ``n`` items: a quarter and a half chunk first, so the models
    get their first images while the workers are still on the full-size chunks."""
    bounds = []
    start = 0
    for size in (max(1, chunk // 4), max(1, chunk // 2)):
        if start < n:
            bounds.append((start, min(n, start + size)))
            start = bounds[-1][1]
    bounds.extend((a, min(n, a + chunk)) for a in range(start, n, chunk))
    return bounds


def iter_prepared(
    paths: Sequence[Path],
    *,
    params: StageParams,
    lengths: tuple[int, ...],
    height: int,
    n_jobs: int | None = None,
    chunk: int = CHUNK,
    line_size: tuple[int, int] | None = None,
    planes: bool = True,
) -> Iterator[list[Prepared | str]]:
    """Yield, chunk by chunk and in input order, a Prepared or an error string per path
    (with the CRNN's input when ``line_size`` is given).

    ``planes=False``: images prepared in worker processes come without their grey, binary and
    cleaned planes where the crops need none of them (:meth:`Prepared.without_planes`: less to
    send, which costs CPU on both sides), and :meth:`Prepared.planes` makes them again from the
    file for the few that are drawn. For runs that draw every image, keep them."""
    n_jobs = default_jobs() if n_jobs is None else n_jobs
    chunks = [paths[a:b] for a, b in chunk_bounds(len(paths), chunk)]
    if not uses_workers(len(paths), n_jobs, chunk):
        for part in chunks:
            yield _prepare_chunk(part, params, lengths, height, line_size)
        return
    parallel = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="2*n_jobs")
    with warnings.catch_warnings():
        # A run stopped early (Ctrl-C, an unwritable OUT) closes this generator; joblib then warns
        # that chunks done ahead were never used, or cancels those under way: expected here.
        warnings.filterwarnings("ignore", message=".*successfully executed.*but not used", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*still being processed by the workers have been cancelled",
                                category=UserWarning)
        work = delayed(_prepare_chunk_in_worker)
        done = parallel(work(part, params, lengths, height, line_size, planes) for part in chunks)
        try:
            for part, prepared in zip(chunks, done, strict=True):  # joblib keeps the order
                for path, p in zip(part, prepared, strict=True):
                    if not isinstance(p, str) and p.gray is None:
                        p.remake = functools.partial(prepare_file, path, params=params, lengths=lengths,
                                                     height=height)
                yield prepared
        finally:
            done.close()  # a run stopped early: here, where joblib's warnings are expected


def prepare_all(
    paths: Sequence[Path], *, params: StageParams, lengths: tuple[int, ...], height: int, n_jobs: int | None = None
) -> list[Prepared]:
    """Every path that prepares, in order (:func:`iter_prepared`); the files that fail are left out."""
    return [p for chunk in iter_prepared(paths, params=params, lengths=lengths, height=height, n_jobs=n_jobs)
            for p in chunk if not isinstance(p, str)]
