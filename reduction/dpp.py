"""Conditional DPP (CDPruner): K tokens relevant to the instruction and diverse among themselves.

Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token
Pruning in MLLMs", NeurIPS 2025 (arXiv:2506.10967). The kernel is ``L = diag(q) S diag(q)`` with
``S`` the cosine-similarity Gram matrix of the visual tokens and ``q`` their relevance to the
instruction; the K tokens are the greedy MAP of the DPP, computed with the fast incremental
Cholesky update of Chen, Zhang & Zhou (NeurIPS 2018, arXiv:1709.05135).

Relevance: the mean cosine similarity of each visual token to the instruction's token
embeddings (``TextContext.embeds``), min-max normalised to [0, 1] per image, then
``q = exp(theta * relevance)`` (``theta`` trades relevance against diversity; theta = 0 is plain
diversity). Deviations: the paper computes relevance with the encoder's text tower (CLIP/SigLIP);
mmllm uses the text embeddings the LLM reads (``TextContext.embeds``), compared with the visual
tokens mapped into the same space by ``TextContext.project`` (the model's adapter; the model
passes both). Without text, q = 1 and the reducer is a pure-diversity DPP.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens

#: relative gain below which an item adds nothing (float32 round-off of a rank-deficient kernel)
RANK_TOL = 1e-5


def dpp_greedy_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy MAP of a DPP with PSD ``kernel [B, N, N]``: sorted indices ``[B, K]``.

    Each step adds the item with the largest marginal gain in log-determinant, tracked as the
    squared Cholesky diagonal ``d2``; one vectorised update per step (Chen et al., 2018, Alg. 1).
    Deviation: Alg. 1 stops once the best gain ``d2[j]`` is ~0 (the kernel's rank is used up);
    a fixed budget needs K items, so from there on the Cholesky rows are not updated (their
    correction would divide by ~0 and overflow). A residual gain at or below "~0" (``RANK_TOL``
    times the row's largest diagonal entry) is round-off, so it is not compared: items with a
    real gain come first, then the remaining picks go by the kernel's diagonal (an item's own
    quality), the same on every backend (:func:`pick_next`).
    """
    b, n, _ = kernel.shape
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
        gain = d2[rows, j]
        dj = gain.clamp_min(1e-12).sqrt()
        cj = c[rows, :step, j]  # [B, step]
        e = (kernel[rows, j] - torch.einsum("bs,bsn->bn", cj, c[:, :step])) / dj.unsqueeze(1)
        e = e * (gain > tol[:, 0]).unsqueeze(1)  # past the kernel's rank: no update
        c[:, step] = e
        d2 = d2 - e * e
        d2[rows.unsqueeze(1), chosen[:, : step + 1]] = float("-inf")
        j = pick_next(d2, diag, top, tol)
    return chosen.sort(dim=1).values


def pick_next(
    d2: torch.Tensor, diag: torch.Tensor, top: torch.Tensor, tol: torch.Tensor
) -> torch.Tensor:
    """The next item ``[B]``: the largest residual gain ``d2`` above ``tol``; if none is left
    (the kernel's rank is used up), the largest ``diag``; chosen items (``-inf``) never."""
    score = torch.where(d2 > tol, d2 + top, diag)  # a real gain outranks every diagonal entry
    return score.masked_fill(d2 == float("-inf"), float("-inf")).argmax(dim=1)


def relevance(visual: torch.Tensor, text: TextContext) -> torch.Tensor:
    """Mean cosine similarity of each visual token to the text tokens, min-max scaled per image."""
    v = F.normalize(visual.float(), dim=-1)
    t = F.normalize(text.embeds.float(), dim=-1)
    mask = text.mask.float()
    sim = (v @ t.transpose(1, 2) * mask.unsqueeze(1)).sum(-1) / mask.sum(
        -1, keepdim=True
    ).clamp_min(1)
    lo, hi = sim.amin(1, keepdim=True), sim.amax(1, keepdim=True)
    return (sim - lo) / (hi - lo).clamp_min(1e-6)


@register("dpp")
@dataclass
class ConditionalDPP(BaseReducer):
    """Keep K tokens by greedy MAP of a DPP: relevance to the instruction x diversity."""

    k: int = field(metadata={"help": "tokens to keep"})
    theta: float = field(default=2.0, metadata={"help": "relevance weight (0 = diversity only)"})
    paper: ClassVar[str] = "CDPruner (Zhang et al., NeurIPS 2025, arXiv:2506.10967)"
    example: ClassVar[str] = "dpp:64"
    uses_text: ClassVar[bool] = True

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        unit = F.normalize(tokens.embeds.float(), dim=-1)
        kernel = unit @ unit.transpose(1, 2)
        if text is not None and self.theta != 0:
            visual = text.visual_in_text_space(
                tokens.embeds, self.spec, "theta=0 for diversity only"
            )
            q = torch.exp(self.theta * relevance(visual, text))
            kernel = q.unsqueeze(2) * kernel * q.unsqueeze(1)
        from mmllm.kernels.ops import dpp_greedy_map as fast_dpp  # reference: dpp_greedy_map

        return tokens.gather(fast_dpp(kernel, self.k))
