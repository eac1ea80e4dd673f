"""DivPrune: keep the K most diverse tokens (greedy Max-Min Diversity, cosine distance).

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models",
CVPR 2025 (arXiv:2503.02175). The selection is the greedy solution of the Max-Min Diversity
Problem on cosine distance ``1 - cos(x_i, x_j)``: the first token is the one whose minimum
distance to all others is largest; each next token is the one farthest (in min-distance) from
the chosen set. Needs no attention, so it works with fused attention and without [CLS].

Deviations: none in the selection; ties break towards the lower index (``argmax``). Kept tokens
are returned in their original order. The loop runs K greedy steps (inherently sequential); each
step is one vectorised update of the running min-distance over the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def cosine_distance(x: torch.Tensor) -> torch.Tensor:
    """Pairwise ``1 - cos`` for ``x [B, N, D]`` -> ``[B, N, N]`` (computed in float32)."""
    unit = F.normalize(x.float(), dim=-1)
    return 1.0 - unit @ unit.transpose(1, 2)


def greedy_max_min(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min (k-center) selection on a distance matrix ``[B, N, N]`` -> ``[B, K]``.

    The first item is the one whose minimum distance to all others is largest; each next item is
    the one farthest (in min-distance) from the chosen set. Indices in selection order.
    """
    b, n, _ = dist.shape
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    first = dist.masked_fill(eye, float("inf")).amin(dim=2).argmax(dim=1)  # [B]
    chosen = torch.empty(b, k, dtype=torch.long, device=dist.device)
    chosen[:, 0] = first
    rows = torch.arange(b, device=dist.device)
    min_dist = dist[rows, first].clone()  # distance of every token to the chosen set
    min_dist[rows, first] = -1.0
    for step in range(1, k):
        nxt = min_dist.argmax(dim=1)
        chosen[:, step] = nxt
        min_dist = torch.minimum(min_dist, dist[rows, nxt])
        min_dist[rows, nxt] = -1.0  # chosen tokens stay at -1 (min keeps them there)
    return chosen


def divprune_select(embeds: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min diverse subset: ``[B, N, D]`` -> sorted indices ``[B, K]``."""
    return greedy_max_min(cosine_distance(embeds), k).sort(dim=1).values


@register("divprune")
@dataclass
class DivPrune(BaseReducer):
    """Keep the K most diverse tokens: greedy max-min cosine distance."""

    k: int = field(metadata={"help": "tokens to keep"})
    paper: ClassVar[str] = "DivPrune (Alvar et al., CVPR 2025, arXiv:2503.02175)"
    example: ClassVar[str] = "divprune:64"
    needs: ClassVar[tuple[str, ...]] = ("embeds",)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        from mmllm.kernels.ops import cosine_max_min  # fast path; divprune_select is its reference

        return tokens.gather(cosine_max_min(tokens.embeds, self.k))
