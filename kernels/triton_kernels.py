"""Triton kernels for the reduction hot spots (CUDA; on CPU only under ``TRITON_INTERPRET=1``).

Each replaces the part of an algorithm that the reference runs as many small launches:

- ``greedy_max_min``: all K greedy steps in one launch, one program per image, the running
  min-distance vector held on chip (the reference launches ~5 ops per step).
- ``bipartite_best_match``: each A token's most similar B token, block-wise, never writing the
  ``Na x Nb`` similarity matrix (nor normalised copies of the features) to memory.
- ``merge_rows``: ToMe's size-weighted merge in one pass, each input row read once.
- ``query_attention``: head-mean softmax attention of one query per image to N keys, in two
  launches parallel over key blocks (logits + softmax partials, then combine), reading the keys
  once and never writing a ``T x N`` matrix.
- ``dpp_greedy_map``: all K steps of the incremental-Cholesky greedy MAP in one launch.

Imported only when Triton is installed (:mod:`mmllm.kernels.dispatch` decides).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def _warps(block: int) -> int:
    """Warps for a program that holds one ``block``-long row: ~16 elements per thread."""
    return max(4, min(16, block // 512))


def _rows(block: int) -> int:
    """Rows of a ``[ROWS, block]`` tile that fit in registers next to the row (~16K values)."""
    return max(1, min(16, 16384 // block))


@triton.jit
def _greedy_max_min_kernel(dist_ptr, first_ptr, out_ptr, n, k, stride_b, stride_r,
                           BLOCK: tl.constexpr):  # fmt: skip
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    base = dist_ptr + b.to(tl.int64) * stride_b
    nxt = tl.load(first_ptr + b)
    tl.store(out_ptr + b * k, nxt)
    # running min distance to the chosen set; chosen = -1, padding = -2 (never picked)
    best = tl.load(base + nxt * stride_r + offs, mask=valid, other=-2.0).to(tl.float32)
    best = tl.where(offs == nxt, -1.0, best)
    for step in range(1, k):
        top = tl.max(best, axis=0)
        nxt = tl.min(tl.where(best == top, offs, BLOCK), axis=0)  # ties: lowest index
        tl.store(out_ptr + b * k + step, nxt)
        row = tl.load(base + nxt * stride_r + offs, mask=valid, other=-2.0).to(tl.float32)
        best = tl.where(offs == nxt, -1.0, tl.minimum(best, row))


def greedy_max_min(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Same contract as :func:`mmllm.reduction.divprune.greedy_max_min`; writes ``dist``'s
    diagonal and restores it, as the torch path does."""
    b, n, _ = dist.shape
    dist = dist.float().contiguous()
    diag = torch.diagonal(dist, dim1=1, dim2=2)  # first pick: row minima without the diagonal,
    saved = diag.clone()  # set to inf in place and restored (no masked copy of the matrix)
    diag.fill_(float("inf"))
    first = dist.amin(dim=2).argmax(dim=1).to(torch.int32)
    diag.copy_(saved)
    out = torch.empty(b, k, dtype=torch.int32, device=dist.device)
    block = _block(n)
    _greedy_max_min_kernel[(b,)](dist, first, out, n, k, dist.stride(0), dist.stride(1),
                                 BLOCK=block, num_warps=_warps(block))  # fmt: skip
    return out.long()


@triton.jit
def _best_match_kernel(a_ptr, b_ptr, best_ptr, idx_ptr, na, nb, c,
                       sa_b, sa_n, sb_b, sb_n, PRECISION: tl.constexpr, BLOCK_A: tl.constexpr,
                       BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):  # fmt: skip
    """Each A row's best cosine match among the B rows. Raw dot products and squared norms
    accumulate in the same pass over the channels, so no normalised copy is ever written."""
    bi = tl.program_id(0)
    rows = tl.program_id(1) * BLOCK_A + tl.arange(0, BLOCK_A)
    row_ok = rows < na
    a_base = a_ptr + bi.to(tl.int64) * sa_b
    b_base = b_ptr + bi.to(tl.int64) * sb_b
    best = tl.full((BLOCK_A,), float("-inf"), tl.float32)
    best_idx = tl.zeros((BLOCK_A,), tl.int32)
    for j0 in range(0, nb, BLOCK_B):
        cols = j0 + tl.arange(0, BLOCK_B)
        col_ok = cols < nb
        acc = tl.zeros((BLOCK_A, BLOCK_B), tl.float32)
        a_sq = tl.zeros((BLOCK_A,), tl.float32)
        b_sq = tl.zeros((BLOCK_B,), tl.float32)
        for c0 in range(0, c, BLOCK_C):
            ch = c0 + tl.arange(0, BLOCK_C)
            ch_ok = ch < c
            a_ok = row_ok[:, None] & ch_ok[None, :]
            b_ok = col_ok[None, :] & ch_ok[:, None]
            a = tl.load(a_base + rows[:, None] * sa_n + ch[None, :], mask=a_ok, other=0.0)
            bt = tl.load(b_base + cols[None, :] * sb_n + ch[:, None], mask=b_ok, other=0.0)
            a, bt = a.to(tl.float32), bt.to(tl.float32)
            acc += tl.dot(a, bt, input_precision=PRECISION)
            a_sq += tl.sum(a * a, axis=1)
            b_sq += tl.sum(bt * bt, axis=0)
        inv_a = 1.0 / tl.maximum(tl.sqrt(a_sq), 1e-12)  # F.normalize's eps
        inv_b = 1.0 / tl.maximum(tl.sqrt(b_sq), 1e-12)
        acc = acc * inv_a[:, None] * inv_b[None, :]
        acc = tl.where(col_ok[None, :], acc, float("-inf"))
        blk_best = tl.max(acc, axis=1)
        blk_idx = tl.min(tl.where(acc == blk_best[:, None], cols[None, :], nb), axis=1)
        better = blk_best > best  # strictly: ties keep the earlier B token
        best_idx = tl.where(better, blk_idx, best_idx)
        best = tl.where(better, blk_best, best)
    tl.store(best_ptr + bi * na + rows, best, mask=row_ok)
    tl.store(idx_ptr + bi * na + rows, best_idx, mask=row_ok)


def _match_block_a(bsz: int, na: int) -> int:
    return 32 if bsz * na < 8192 else 64


def match_fills_gpu(metric: torch.Tensor) -> bool:
    """Whether the matching kernel beats cuBLAS here: it runs one program per image and block of
    A rows, so with few programs (one image of 576 tokens: 9 on an H200's 132 multiprocessors)
    and much work each, cuBLAS's parallel matrix product wins; small problems are launch-bound
    and the kernel's single launch wins. Thresholds from ``benchmarks/results/kernels_cuda.md``:
    Triton with two programs per multiprocessor or at most 16M multiply-adds per program."""
    bsz, n, c = metric.shape
    na, nb = (n + 1) // 2, n // 2
    programs = bsz * triton.cdiv(na, _match_block_a(bsz, na))
    sms = torch.cuda.get_device_properties(metric.device).multi_processor_count
    return programs >= 2 * sms or bsz * na * nb * c <= 16_000_000 * programs


def bipartite_best_match(a: torch.Tensor, b: torch.Tensor):
    """Best cosine score and B index for each A row: ``[B, Na]`` each, from raw features
    ``a [B, Na, C]``, ``b [B, Nb, C]`` (strided views such as ``x[:, ::2]`` are read in place).

    On CUDA the products run on tensor cores as three TF32 products (``tf32x3``: float32
    accuracy, ~1e-6 relative); the interpreter computes them in plain float32."""
    bsz, na, c = a.shape
    nb = b.shape[1]
    if a.stride(-1) != 1:
        a = a.contiguous()
    if b.stride(-1) != 1:
        b = b.contiguous()
    best = torch.empty(bsz, na, dtype=torch.float32, device=a.device)
    idx = torch.empty(bsz, na, dtype=torch.int32, device=a.device)
    if a.device.type == "cpu":
        block_a, block_b, block_c, precision = 16, 16, 16, "ieee"
    else:  # smaller A blocks when few images would leave most multiprocessors idle
        block_a, block_b, block_c, precision = _match_block_a(bsz, na), 64, 32, "tf32x3"
    grid = (bsz, triton.cdiv(na, block_a))
    _best_match_kernel[grid](a, b, best, idx, na, nb, c, a.stride(0), a.stride(1), b.stride(0),
                             b.stride(1), PRECISION=precision, BLOCK_A=block_a, BLOCK_B=block_b,
                             BLOCK_C=block_c)  # fmt: skip
    return best, idx.long()


@triton.jit
def _merge_rows_kernel(x_ptr, out_ptr, keep_ptr, own_ptr, starts_ptr, srcs_ptr, share_ptr,
                       n, m, r, c, BLOCK_C: tl.constexpr):  # fmt: skip
    """One output row (image b, slot s) and channel block: its kept source row times its own
    weight plus, in a fixed order, every row merged into it times its share."""
    pid = tl.program_id(0)  # b * m + s
    b = pid // m
    s = pid % m
    ch = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    ok = ch < c
    x_base = x_ptr + b.to(tl.int64) * n * c
    row = tl.load(keep_ptr + pid)
    acc = tl.load(x_base + row * c + ch, mask=ok, other=0.0).to(tl.float32)
    acc = acc * tl.load(own_ptr + pid)
    first = tl.load(starts_ptr + b * (m + 1) + s)
    last = tl.load(starts_ptr + b * (m + 1) + s + 1)
    for i in range(first, last):
        src = tl.load(srcs_ptr + b * r + i)
        moved = tl.load(x_base + src * c + ch, mask=ok, other=0.0).to(tl.float32)
        acc += moved * tl.load(share_ptr + b * r + i)
    tl.store(out_ptr + pid.to(tl.int64) * c + ch, acc.to(out_ptr.dtype.element_ty), mask=ok)


def merge_rows(x: torch.Tensor, keep: torch.Tensor, own: torch.Tensor, starts: torch.Tensor,
               srcs: torch.Tensor, share: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """Size-weighted merge ``x [B, N, C] -> [B, M, C]`` in one pass that reads each input row
    once and writes each output row once (the bandwidth floor): output slot ``s`` of image
    ``b`` is ``x[b, keep[b, s]] * own[b, s]`` plus ``x[b, srcs[b, i]] * share[b, i]`` for
    ``i`` in ``starts[b, s] : starts[b, s + 1]`` (merges sorted by slot: no atomics, so the sum
    order, and the result, is the same on every run)."""
    bsz, n, c = x.shape
    m, r = keep.shape[1], srcs.shape[1]
    x = x.contiguous()
    out = torch.empty(bsz, m, c, dtype=x.dtype, device=x.device)
    block_c = 16 if x.device.type == "cpu" else min(1024, _block(c))
    grid = (bsz * m, triton.cdiv(c, block_c))
    _merge_rows_kernel[grid](x, out, keep.contiguous(), own.contiguous(), starts.contiguous(),
                             srcs.contiguous(), share.contiguous(), n, m, r, c,
                             BLOCK_C=block_c)  # fmt: skip
    return out


@triton.jit
def _head_logits_kernel(q_ptr, k_ptr, bias_ptr, logits_ptr, m_ptr, l_ptr, n, d, heads, n_blocks,
                        scale, sq_b, sq_h, sk_b, sk_h, sk_n, HAS_BIAS: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):  # fmt: skip
    """One (image, head, key block): scaled logits (+ bias) to ``logits [B*H, N]``, and the
    block's max and sum of exp relative to it to ``m, l [B*H, n_blocks]``."""
    bh = tl.program_id(0)
    blk = tl.program_id(1)
    b = bh // heads
    h = bh % heads
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < d
    cols = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = cols < n
    q = tl.load(q_ptr + b * sq_b + h * sq_h + dims, mask=d_ok, other=0.0).to(tl.float32)
    k_base = k_ptr + b.to(tl.int64) * sk_b + h.to(tl.int64) * sk_h
    keys = tl.load(k_base + cols[:, None] * sk_n + dims[None, :],
                   mask=ok[:, None] & d_ok[None, :], other=0.0).to(tl.float32)  # fmt: skip
    logits = tl.sum(keys * q[None, :], axis=1) * scale
    if HAS_BIAS:
        logits += tl.load(bias_ptr + b * n + cols, mask=ok, other=0.0).to(tl.float32)
    logits = tl.where(ok, logits, float("-inf"))
    tl.store(logits_ptr + bh.to(tl.int64) * n + cols, logits, mask=ok)
    m = tl.max(logits, axis=0)
    tl.store(m_ptr + bh * n_blocks + blk, m)
    tl.store(l_ptr + bh * n_blocks + blk, tl.sum(tl.exp(logits - m), axis=0))


@triton.jit
def _head_mean_softmax_kernel(logits_ptr, m_ptr, l_ptr, out_ptr, n, heads, n_blocks,
                              BLOCK_N: tl.constexpr, BLOCK_NB: tl.constexpr):  # fmt: skip
    """One (image, key block): each head's softmax from the block partials, averaged over heads
    in a fixed order (deterministic: no atomics)."""
    b = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    ok = cols < n
    parts = tl.arange(0, BLOCK_NB)
    p_ok = parts < n_blocks
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for h in range(0, heads):
        bh = b * heads + h
        m_blk = tl.load(m_ptr + bh * n_blocks + parts, mask=p_ok, other=float("-inf"))
        l_blk = tl.load(l_ptr + bh * n_blocks + parts, mask=p_ok, other=0.0)
        m = tl.max(m_blk, axis=0)
        total = tl.sum(l_blk * tl.exp(m_blk - m), axis=0)
        logits = tl.load(logits_ptr + bh.to(tl.int64) * n + cols, mask=ok, other=float("-inf"))
        acc += tl.exp(logits - m) / total
    tl.store(out_ptr + b * n + cols, acc / heads, mask=ok)


def query_attention(
    q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Head-mean softmax attention ``[B, N]`` of queries ``q [B, H, D]`` to keys ``[B, H, N, D]``
    (plus an additive ``bias [B, N]``).

    Two launches, both parallel over images and key blocks: the first reads the keys once and
    writes each head's logits ``[B, H, N]`` (what one query row costs; never ``N x N``) with
    per-block softmax partials, the second combines the partials (online-softmax style) and
    averages the heads. The keys are read once: the bandwidth floor of the operation."""
    bsz, heads, n, d = k.shape
    q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    block_d = _block(d)
    block_n = 16 if k.device.type == "cpu" else max(16, min(128, 8192 // block_d))
    n_blocks = triton.cdiv(n, block_n)
    logits = torch.empty(bsz * heads, n, dtype=torch.float32, device=k.device)
    m = torch.empty(bsz * heads, n_blocks, dtype=torch.float32, device=k.device)
    l_sum = torch.empty_like(m)
    out = torch.empty(bsz, n, dtype=torch.float32, device=k.device)
    has_bias = bias is not None
    bias = bias.float().contiguous() if has_bias else out
    _head_logits_kernel[(bsz * heads, n_blocks)](
        q,
        k,
        bias,
        logits,
        m,
        l_sum,
        n,
        d,
        heads,
        n_blocks,
        scale,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        HAS_BIAS=has_bias,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    _head_mean_softmax_kernel[(bsz, n_blocks)](
        logits,
        m,
        l_sum,
        out,
        n,
        heads,
        n_blocks,
        BLOCK_N=block_n,
        BLOCK_NB=_block(n_blocks),
    )
    return out


@triton.jit
def _dpp_kernel(l_ptr, c_ptr, d2_ptr, out_ptr, n, k, sl_b, sl_r, sc_b, sc_r, rank_tol,
                BLOCK: tl.constexpr, ROWS: tl.constexpr):  # fmt: skip
    b = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    valid = offs < n
    l_base = l_ptr + b.to(tl.int64) * sl_b
    c_base = c_ptr + b.to(tl.int64) * sc_b
    d2 = tl.load(d2_ptr + b * n + offs, mask=valid, other=float("-inf"))
    diag = d2
    dmax = tl.max(d2, axis=0)
    tol = rank_tol * dmax
    for step in range(0, k):
        # as mmllm.reduction.dpp.pick_next: real gains first, then the diagonal; chosen never
        score = tl.where(d2 > tol, d2 + dmax, diag)
        score = tl.where(d2 == float("-inf"), float("-inf"), score)
        top = tl.max(score, axis=0)
        j = tl.min(tl.where(score == top, offs, BLOCK), axis=0)
        tl.store(out_ptr + b * k + step, j)
        if step < k - 1:
            gain = tl.sum(tl.where(offs == j, d2, 0.0), axis=0)
            dj = tl.sqrt(tl.maximum(gain, 1e-12))
            e = tl.load(l_base + j * sl_r + offs, mask=valid, other=0.0).to(tl.float32)
            for s0 in range(0, step, ROWS):  # e -= c[:step, j] @ c[:step], ROWS rows at a time
                rows = s0 + tl.arange(0, ROWS)
                r_ok = rows < step
                cj = tl.load(c_base + rows * sc_r + j, mask=r_ok, other=0.0)
                tile = tl.load(c_base + rows[:, None] * sc_r + offs[None, :],
                               mask=r_ok[:, None] & valid[None, :], other=0.0)  # fmt: skip
                e -= tl.sum(cj[:, None] * tile, axis=0)
            e = tl.where(gain > tol, e / dj, 0.0)  # past the kernel's rank: no update
            tl.store(c_base + step * sc_r + offs, e, mask=valid)
            tl.debug_barrier()  # later steps read this row back
            # chosen items are -inf and stay there (-inf - e^2), as in the reference
            d2 = tl.where(offs == j, float("-inf"), d2 - e * e)


def dpp_greedy_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Same contract as :func:`mmllm.reduction.dpp.dpp_greedy_map` (sorted indices)."""
    from mmllm.reduction.dpp import RANK_TOL  # here: reduction imports kernels

    bsz, n, _ = kernel.shape
    lk = kernel.float().contiguous()
    c = torch.zeros(bsz, k, n, dtype=torch.float32, device=lk.device)
    d2 = torch.diagonal(lk, dim1=1, dim2=2).contiguous()
    out = torch.empty(bsz, k, dtype=torch.int32, device=lk.device)
    block = _block(n)
    _dpp_kernel[(bsz,)](lk, c, d2, out, n, k, lk.stride(0), lk.stride(1), c.stride(0),
                        c.stride(1), RANK_TOL, BLOCK=block, ROWS=_rows(block),
                        num_warps=_warps(block))  # fmt: skip
    return out.long().sort(dim=1).values
