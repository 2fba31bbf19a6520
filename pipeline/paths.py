"""Paths through many segmentation lattices at once: the dynamic programme of
:func:`pipeline.segment.best_path`, run over a whole batch of images in a few numpy operations.

The segment route asks, several times per batch, for every image's best path under some scores
(see ``recognize.read_segments``); a Python call per image and question cost about 0.2 ms each
(profiled), and there are several per image. Here the lattices are padded
to one cut count ``K`` and stacked: a step table ``(B, K, K)`` holds each image's segment scores
(``-inf`` where there is no segment), and each DP step is one broadcast over the batch.

Same arithmetic as ``best_path`` (the same additions in the same order, the same first-maximum
rule), so the same paths and the same scores, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.segment import Lattice


class LatticeBatch:
    """The lattices of a batch of images, stacked; scores are flat arrays over all their segments
    (image 0's segments first, in each lattice's order), as one classifier call returns them."""

    def __init__(self, lattices: Sequence[Lattice]) -> None:
        self.lattices = list(lattices)
        counts = np.array([len(lat.segments) for lat in self.lattices], dtype=np.int64)
        #: offsets[b]: index of image b's first segment in the flat arrays; offsets[-1]: their count
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        n_images = len(self.lattices)
        self.k = max([len(lat.cuts) for lat in self.lattices] + [2])
        self.image = np.repeat(np.arange(n_images), counts)  # (S,) the image of each segment
        parts = [lat.segments for lat in self.lattices if len(lat.segments)]
        segments = np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 2), np.int64)
        self.seg_from, self.seg_to = segments[:, 0], segments[:, 1]
        priors = [lat.prior for lat in self.lattices if len(lat.segments)]
        self.prior = np.concatenate(priors).astype(np.float64) if priors else np.zeros(0)
        self.seg_at = np.full((n_images, self.k, self.k), -1, dtype=np.int64)  # flat segment index, or -1
        self.seg_at[self.image, self.seg_from, self.seg_to] = np.arange(len(self.image))
        # Where paths may start and end; an end given as -1 is the image's last cut.
        self.start_ok = np.zeros((n_images, self.k), dtype=bool)
        self.end_ok = np.zeros((n_images, self.k), dtype=bool)
        for b, lat in enumerate(self.lattices):
            if not lat.failure and len(lat.cuts) >= 2:  # a failed lattice has no path
                self.start_ok[b, list(lat.starts)] = True
                self.end_ok[b, [e % len(lat.cuts) for e in lat.ends]] = True

    def __len__(self) -> int:
        return len(self.lattices)

    def _step(self, scores: np.ndarray) -> np.ndarray:
        """float (B, K, K): step[b, i, j] = prior + score of image b's segment from cut i to cut j."""
        step = np.full((len(self), self.k, self.k), -np.inf)
        step[self.image, self.seg_from, self.seg_to] = self.prior + scores
        return step

    def best(self, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each image's best path of ``n`` segments under ``prior + scores``.

        Args:
            scores: float (S,), a log-score per segment (``-inf``: the segment may not be used).
            n: segments per path.

        Returns:
            (score float (B,), ids int (B, n)): the path's total score (``-inf`` where an image
            has no such path) and its segments as flat indices (meaningless where the score is
            ``-inf``). Ties go to the first maximum, as in ``segment.best_path``, with end cuts
            taken in ascending order.
        """
        n_images, k = len(self), self.k
        step = self._step(scores)
        best = np.where(self.start_ok, 0.0, -np.inf)  # (B, K) best score of m segments to each cut
        back = np.zeros((n, n_images, k), dtype=np.int64)
        for m in range(n):
            cand = best[:, :, None] + step  # (B, from cut, to cut)
            back[m] = cand.argmax(axis=1)
            best = np.take_along_axis(cand, back[m][:, None, :], axis=1)[:, 0, :]
        at_end = np.where(self.end_ok, best, -np.inf)
        end = at_end.argmax(axis=1)
        rows = np.arange(n_images)
        score = at_end[rows, end]
        ids = np.zeros((n_images, n), dtype=np.int64)
        cut = end
        for m in range(n - 1, -1, -1):
            start = back[m, rows, cut]
            ids[:, m] = self.seg_at[rows, start, cut]
            cut = start
        return score, ids

    def through(self, scores: np.ndarray, n: int) -> np.ndarray:
        """float (S,): for each segment, the best total ``prior + scores`` of a path of ``n``
        segments that uses it (``-inf`` where none does): a forward and a backward pass."""
        step = self._step(scores)
        forward = [np.where(self.start_ok, 0.0, -np.inf)]  # forward[m][b, c]: m segments from a start to c
        backward = [np.where(self.end_ok, 0.0, -np.inf)]  # backward[m][b, c]: m segments from c to an end
        for _ in range(1, n):
            forward.append((forward[-1][:, :, None] + step).max(axis=1))
            backward.append((step + backward[-1][:, None, :]).max(axis=2))
        own = self.prior + scores
        out = np.full(len(own), -np.inf)
        for m in range(n):  # the segment as the (m + 1)-th of n
            before, after = forward[m][self.image, self.seg_from], backward[n - 1 - m][self.image, self.seg_to]
            out = np.maximum(out, before + own + after)
        return out
