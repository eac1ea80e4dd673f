"""The greedy selection loops for CPU tensors, run on NumPy views of the tensors' memory.

Why NumPy: each greedy step is a handful of tiny array operations over ``[B, N]``. Torch's eager
dispatch costs several microseconds per operation on CPU, NumPy's about one, so the same
vectorised steps run 3-7x faster (``benchmarks/kernels.py``). The arithmetic is the same
float32 arithmetic in the same order as the torch references, and ties break the same way
(``argmax`` returns the first maximum in both libraries), so the indices are identical.
Views share memory with the tensors: nothing is copied in or out.
"""

from __future__ import annotations

import numpy as np
import torch


def as_array(x: torch.Tensor) -> np.ndarray:
    """A float32 NumPy view of a CPU tensor (copied only if it is not contiguous float32)."""
    return x.detach().float().contiguous().numpy()


def greedy_max_min(dist: np.ndarray, k: int) -> torch.Tensor:
    """Greedy max-min selection on ``dist [B, N, N]`` -> ``[B, K]`` (selection order).

    As :func:`mmllm.reduction.divprune.greedy_max_min`: first the item whose minimum distance
    to the others is largest, then repeatedly the item farthest from the chosen set. Writes
    the diagonal and restores it."""
    b, n, _ = dist.shape
    rows = np.arange(b)
    diag = np.arange(n)
    saved = dist[:, diag, diag].copy()
    dist[:, diag, diag] = np.inf
    first = dist.min(axis=2).argmax(axis=1)
    dist[:, diag, diag] = saved
    chosen = np.empty((b, k), dtype=np.int64)
    chosen[:, 0] = first
    min_dist = dist[rows, first]  # fancy indexing: a copy
    min_dist[rows, first] = -1.0
    for step in range(1, k):
        nxt = min_dist.argmax(axis=1)
        chosen[:, step] = nxt
        np.minimum(min_dist, dist[rows, nxt], out=min_dist)
        min_dist[rows, nxt] = -1.0  # chosen items stay at -1 (the minimum keeps them there)
    return torch.from_numpy(chosen)


def dpp_greedy_map(kernel: np.ndarray, k: int) -> torch.Tensor:
    """Greedy DPP MAP (Chen et al., 2018, Alg. 1) on a PSD ``kernel [B, N, N]`` -> sorted
    ``[B, K]``, as :func:`mmllm.reduction.dpp.dpp_greedy_map` computes it.

    The Cholesky rows live in one ``[B, N, K]`` buffer so that a chosen item's row is
    contiguous; each step's correction is one batched matrix-vector product."""
    from mmllm.reduction.dpp import RANK_TOL  # here: reduction imports kernels

    b, n, _ = kernel.shape
    rows = np.arange(b)
    c = np.zeros((b, n, k), dtype=np.float32)
    diag = kernel[:, np.arange(n), np.arange(n)].copy()
    d2 = diag.copy()
    top = diag.max(axis=1, keepdims=True)
    tol = np.float32(RANK_TOL) * top

    def pick_next() -> np.ndarray:  # as mmllm.reduction.dpp.pick_next
        score = np.where(d2 > tol, d2 + top, diag)
        return np.where(d2 == -np.inf, -np.inf, score).argmax(axis=1)

    chosen = np.empty((b, k), dtype=np.int64)
    j = pick_next()
    for step in range(k):
        chosen[:, step] = j
        if step == k - 1:
            break
        gain = d2[rows, j]
        dj = np.sqrt(np.maximum(gain, np.float32(1e-12)))
        e = kernel[rows, j]  # a copy
        if step:
            cj = c[rows, j, :step]  # [B, step]
            e -= np.matmul(c[:, :, :step], cj[:, :, None])[..., 0]
        e /= dj[:, None]
        e *= (gain > tol[:, 0])[:, None]  # past the kernel's rank: no update, as the reference
        c[:, :, step] = e
        d2 -= e * e
        d2[rows, j] = -np.inf
        j = pick_next()
    return torch.from_numpy(np.sort(chosen, axis=1))
