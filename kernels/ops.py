"""One dispatch function per kernel operation; each picks Triton, the CPU path or the reference.

=======================  ===============================================  ======================
operation                what                                             reference
=======================  ===============================================  ======================
``greedy_max_min``       K greedy max-min steps on a distance matrix      ``reduction.divprune``
``cosine_max_min``       cosine distance + ``greedy_max_min`` (DivPrune)  ``reduction.divprune``
``bipartite_merge``      ToMe matching + size-weighted merge              ``reduction.tome``
``merge``                the size-weighted merge alone                    ``reduction.tome``
``query_topk``           head-mean attention of one query, top-k, gather  softmax + ``topk``
``dpp_greedy_map``       greedy MAP with incremental Cholesky             ``reduction.dpp``
=======================  ===============================================  ======================

Every fast path returns what the reference returns: the same indices (ties break towards the
lower index everywhere) and values within float32 rounding (``atol=1e-5`` relative to the
inputs' scale; merged features are sums in another order). Tests check that on random inputs
with ties, B > 1, odd sizes, fp32 and bf16.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from mmllm.kernels import cpu_loops
from mmllm.kernels.dispatch import backend, log_once

# -- greedy max-min (DivPrune / k-center seeds) -------------------------------------------------


def _greedy_max_min_torch(dist: torch.Tensor, k: int) -> torch.Tensor:
    """The reference's K steps with fewer, allocation-free launches per step: rows are fetched
    with one ``index_select`` on the flattened matrix and the running minimum updated in place."""
    b, n, _ = dist.shape
    dist = dist.float()
    diag = torch.diagonal(dist, dim1=1, dim2=2)
    saved = diag.clone()
    diag.fill_(float("inf"))
    first = dist.amin(dim=2).argmax(dim=1)
    diag.copy_(saved)
    flat = dist.reshape(b * n, n)
    offset = torch.arange(b, device=dist.device) * n
    chosen = torch.empty(b, k, dtype=torch.long, device=dist.device)
    nxt = first
    chosen[:, 0] = nxt
    min_dist = flat.index_select(0, offset + nxt)
    min_dist.scatter_(1, nxt[:, None], -1.0)
    for step in range(1, k):
        nxt = min_dist.argmax(dim=1)
        chosen[:, step] = nxt
        torch.minimum(min_dist, flat.index_select(0, offset + nxt), out=min_dist)
        min_dist.scatter_(1, nxt[:, None], -1.0)
    return chosen


def greedy_max_min(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min selection on ``dist [B, N, N]`` -> ``[B, K]`` in selection order.

    The torch path writes to ``dist``'s diagonal and restores it (pass a matrix you own)."""
    which = backend("greedy_max_min", dist.device)
    if which == "reference":
        from mmllm.reduction.divprune import greedy_max_min as reference

        return reference(dist, k)
    if which == "triton":
        from mmllm.kernels import triton_kernels

        return triton_kernels.greedy_max_min(dist, k)
    if dist.device.type == "cpu":
        return cpu_loops.greedy_max_min(cpu_loops.as_array(dist), k)
    return _greedy_max_min_torch(dist, k)


def cosine_max_min(embeds: torch.Tensor, k: int) -> torch.Tensor:
    """DivPrune's selection: sorted indices ``[B, K]`` of the greedy max-min cosine subset."""
    if backend("cosine_max_min", embeds.device) == "reference":
        from mmllm.reduction.divprune import divprune_select

        return divprune_select(embeds, k)
    unit = F.normalize(embeds.float(), dim=-1)
    dist = torch.bmm(unit, unit.mT).neg_().add_(1.0)  # 1 - cos, bit-equal, in place
    return greedy_max_min(dist, k).sort(dim=1).values


# -- ToMe bipartite soft matching + merge ---------------------------------------------------------


def bipartite_match(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src, dst)`` as :func:`mmllm.reduction.tome.bipartite_match` returns them."""
    which = backend("bipartite_match", metric.device)
    if which == "reference":
        from mmllm.reduction.tome import bipartite_match as reference

        return reference(metric, r)
    if which == "triton":
        from mmllm.kernels import triton_kernels

        if metric.device.type == "cuda" and not triton_kernels.match_fills_gpu(metric):
            which = "torch"
            log_once("bipartite_match", "few matching programs with much work each: cuBLAS")
    if which == "triton":  # reads the (strided) halves in place, norms computed on the way
        best, best_idx = triton_kernels.bipartite_best_match(metric[:, ::2], metric[:, 1::2])
    else:  # raw dot products scaled by inverse norms: no normalised copy of the features
        metric = metric.float()
        a, b = metric[:, ::2], metric[:, 1::2]
        inv_a = torch.linalg.vector_norm(a, dim=-1).clamp_min_(1e-12).reciprocal_()
        inv_b = torch.linalg.vector_norm(b, dim=-1).clamp_min_(1e-12).reciprocal_()
        best, best_idx = torch.bmm(a, b.transpose(1, 2)).mul_(inv_b.unsqueeze(1)).max(dim=-1)
        best.mul_(inv_a)
    src = best.argsort(dim=-1, descending=True, stable=True)[:, :r]
    return src, best_idx.gather(1, src)


class MergePlan:
    """Where the r merged tokens go, computed once and shared by every merged field.

    ``keep [B, M]``: the remaining source positions (M = N - r), ordered by ``index`` as the
    reference orders them; ``src [B, r]`` and ``dst_slot [B, r]``: each merged token's source
    position and its partner's output slot; ``flat_*``: the same as row numbers of the
    flattened ``[B * N, C]`` input and ``[B * M, C]`` output, for ``index_select``/``index_add_``.
    """

    def __init__(self, index: torch.Tensor, src: torch.Tensor, dst: torch.Tensor):
        bsz, n = index.shape
        r = src.shape[1]
        src_pos, dst_pos = 2 * src, 2 * dst + 1
        rank = index.clone()
        rank.scatter_(1, src_pos, torch.iinfo(torch.long).max)
        self.keep = rank.argsort(dim=1)[:, : n - r]
        slot_of = torch.empty_like(index)
        slot_of.scatter_(1, self.keep, torch.arange(n - r, device=index.device).expand(bsz, -1))
        self.src = src_pos
        self.dst_slot = slot_of.gather(1, dst_pos)
        rows = torch.arange(bsz, device=index.device)[:, None]
        self.flat_src = (src_pos + rows * n).reshape(-1)
        self.flat_dst = (self.dst_slot + rows * (n - r)).reshape(-1)

    def summed(self, values: torch.Tensor) -> torch.Tensor:
        """Sum over each group (sizes, attention mass) at the kept slots: ``[B, N] -> [B, M]``."""
        kept = values.gather(1, self.keep)
        return kept.scatter_add_(1, self.dst_slot, values.gather(1, self.src))

    def weighted(self, x: torch.Tensor, weight: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Size-weighted mean of each group, ``[B, N, C] -> [B, M, C]``, touching only the
        merged rows beyond one gather: untouched rows are copied as they are, each partner row
        is rescaled by its own share and the r merged rows are added with theirs.
        ``weight [B, N]``: the sizes; ``total [B, M]``: :meth:`summed` of them."""
        bsz, n, c = x.shape
        flat = gather_rows(x, self.keep).view(-1, c)  # row copies: far faster than gather on CPU
        total = total.to(torch.float32)
        own = weight.gather(1, self.keep).to(torch.float32) / total  # 1 where nothing merged
        share = weight.gather(1, self.src).to(torch.float32) / total.gather(1, self.dst_slot)
        partners = flat.index_select(0, self.flat_dst)  # duplicates: same rows, same result
        flat.index_copy_(0, self.flat_dst, partners * own.view(-1, 1)[self.flat_dst].to(x.dtype))
        moved = x.reshape(-1, c).index_select(0, self.flat_src) * share.view(-1, 1).to(x.dtype)
        return flat.index_add_(0, self.flat_dst, moved).view(bsz, n - self.src.shape[1], c)

    def fused(self, weight: torch.Tensor, total: torch.Tensor):
        """The size-weighted mean of :meth:`weighted` as one Triton pass per field: merges are
        sorted by destination slot once (CSR: ``starts``), then each output row is its kept row
        plus its sources, read once each. Returns ``x -> merged x``."""
        from mmllm.kernels import triton_kernels

        bsz, m = self.keep.shape
        by_slot = self.dst_slot.argsort(dim=1, stable=True)
        slot_sorted = self.dst_slot.gather(1, by_slot)
        srcs = self.src.gather(1, by_slot)
        slots = torch.arange(m + 1, device=slot_sorted.device).expand(bsz, -1).contiguous()
        starts = torch.searchsorted(slot_sorted, slots)
        total = total.to(torch.float32)
        own = weight.gather(1, self.keep).to(torch.float32) / total
        share = weight.gather(1, srcs).to(torch.float32) / total.gather(1, slot_sorted)
        return functools.partial(
            triton_kernels.merge_rows, keep=self.keep, own=own, starts=starts, srcs=srcs,
            share=share,
        )  # fmt: skip


def bipartite_merge(tokens, r: int, metric: torch.Tensor):
    """ToMe step on :class:`~mmllm.reduction.types.VisualTokens`: match on ``metric``, merge r
    tokens (size-weighted), track ``size``; the reference is ``tome.merge_tokens``."""
    if r == 0:
        return tokens
    return merge(tokens, *bipartite_match(metric, r))


def merge(tokens, src: torch.Tensor, dst: torch.Tensor):
    """Merge A tokens ``src`` into B tokens ``dst`` (size-weighted), keep the rest in source
    order: what ``tome.merge_tokens`` returns, with one merge plan shared by every field."""
    which = backend("bipartite_merge", src.device)
    if which == "reference":
        from mmllm.reduction.tome import merge_tokens

        return merge_tokens(tokens, src, dst)
    plan = MergePlan(tokens.index, src, dst)
    size = plan.summed(tokens.size)
    changes: dict[str, torch.Tensor] = {"size": size, "index": tokens.index.gather(1, plan.keep)}
    if which == "triton":
        weighted = plan.fused(tokens.size, size)
    else:
        weighted = functools.partial(plan.weighted, weight=tokens.size, total=size)
    if tokens.embeds is not None:
        changes["embeds"] = weighted(tokens.embeds)
    if tokens.keys is not None:
        changes["keys"] = weighted(tokens.keys)
    if tokens.attn_to_cls is not None:
        changes["attn_to_cls"] = plan.summed(tokens.attn_to_cls)
    if tokens.ids is not None:
        changes["ids"] = tokens.ids.gather(1, plan.keep)
    return tokens.replace(**changes)


# -- score + top-k + gather -------------------------------------------------------------------


def query_attention_reference(
    q: torch.Tensor, k: torch.Tensor, scale: float, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Plain head-mean softmax attention of ``q [B, H, D]`` to ``k [B, H, N, D]`` -> ``[B, N]``
    (``bias [B, N]`` is added to the logits: a padding mask)."""
    logits = torch.einsum("bhd,bhnd->bhn", q.float(), k.float()) * scale
    if bias is not None:
        logits = logits + bias.float().unsqueeze(1)
    return logits.softmax(dim=-1).mean(dim=1)


def query_attention(
    q: torch.Tensor, k: torch.Tensor, scale: float | None = None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Head-mean softmax attention ``[B, N]`` of one query per image, ``q [B, H, D]``, to
    ``k [B, H, N, D]`` plus an optional additive ``bias [B, N]``, never forming ``N x N``."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    which = backend("query_attention", k.device)
    if which == "triton":
        from mmllm.kernels import triton_kernels

        return triton_kernels.query_attention(q, k, scale, bias)
    if which == "reference":
        return query_attention_reference(q, k, scale, bias)
    logits = torch.einsum("bhd,bhnd->bhn", q.float(), k.float()).mul_(scale)
    if bias is not None:
        logits.add_(bias.float().unsqueeze(1))
    return logits.softmax(dim=-1).mean(dim=1)


def query_topk(
    q: torch.Tensor,
    k: torch.Tensor,
    keep: int,
    values: torch.Tensor,
    scale: float | None = None,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Score N tokens by one query's head-mean attention, keep the top ``keep``, gather them.

    ``q [B, H, D]`` (the last text token, or [CLS]), ``k [B, H, N, D]``, ``values [B, N, C]``.
    Returns ``(scores [B, N], indices [B, keep] in token order, kept values [B, keep, C])``;
    FastV-style pruning with fused attention needs exactly this and nothing ``N x N``.
    """
    scores = query_attention(q, k, scale, bias)
    idx = scores.topk(keep, dim=1).indices.sort(dim=1).values
    return scores, idx, gather_rows(values, idx)


def gather_rows(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``values [B, N, C]`` at ``idx [B, K]`` -> ``[B, K, C]``: whole-row copies through the
    flattened rows (``index_select``), several times faster on CPU than ``gather`` with an
    index expanded over C; the same values."""
    b, n, c = values.shape
    if values.device.type == "cuda":  # one launch; the row-copy trick only pays on CPU
        return values.gather(1, idx.unsqueeze(-1).expand(-1, -1, c))
    flat = (idx + torch.arange(b, device=idx.device).unsqueeze(1) * n).reshape(-1)
    return values.reshape(b * n, c).index_select(0, flat).view(b, idx.shape[1], c)


# -- DPP greedy MAP ---------------------------------------------------------------------------


def _dpp_greedy_map_torch(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Chen et al. (2018) Alg. 1 as the reference runs it, with the Cholesky rows in one
    preallocated ``[B, K, N]`` buffer and each step's correction as one batched matmul."""
    from mmllm.reduction.dpp import RANK_TOL, pick_next  # here: reduction imports kernels

    b, n, _ = kernel.shape
    kernel = kernel.float()
    flat = kernel.reshape(b * n, n)
    offset = torch.arange(b, device=kernel.device) * n
    rows = torch.arange(b, device=kernel.device)
    c = kernel.new_zeros(b, k, n)
    diag = torch.diagonal(kernel, dim1=1, dim2=2).clone()
    d2 = diag.clone()
    top = diag.amax(dim=1, keepdim=True)
    tol = RANK_TOL * top
    chosen = torch.empty(b, k, dtype=torch.long, device=kernel.device)
    j = pick_next(d2, diag, top, tol)
    for step in range(k):
        chosen[:, step] = j
        if step == k - 1:
            break
        gain = d2.gather(1, j[:, None])
        dj = gain.clamp_min(1e-12).sqrt_()
        e = flat.index_select(0, offset + j)
        if step:
            cj = c[rows, :step, j]  # [B, step]
            e -= torch.bmm(cj.unsqueeze(1), c[:, :step]).squeeze(1)
        e /= dj
        e *= gain > tol  # past the kernel's rank: no update, as the reference
        c[:, step] = e
        d2 -= e * e
        d2.scatter_(1, j[:, None], float("-inf"))
        j = pick_next(d2, diag, top, tol)
    return chosen.sort(dim=1).values


def dpp_greedy_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy DPP MAP on a PSD ``kernel [B, N, N]`` -> sorted indices ``[B, K]``."""
    which = backend("dpp_greedy_map", kernel.device)
    if which == "reference":
        from mmllm.reduction.dpp import dpp_greedy_map as reference

        return reference(kernel, k)
    if which == "triton":
        from mmllm.kernels import triton_kernels

        return triton_kernels.dpp_greedy_map(kernel, k)
    if kernel.device.type == "cpu":
        return cpu_loops.dpp_greedy_map(cpu_loops.as_array(kernel), k)
    return _dpp_greedy_map_torch(kernel, k)
