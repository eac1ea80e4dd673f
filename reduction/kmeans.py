"""K-means merging: K clusters of tokens, each replaced by its size-weighted centroid.

A baseline from the token-merging literature (e.g. the clustering baselines in ToMe, arXiv:
2210.09461, and in "Token Pooling in Vision Transformers", Marin et al., arXiv:2110.03860).
Lloyd iterations on L2-normalised features (spherical k-means), initialised with the greedy
max-min (k-center) seeds so the result is deterministic without a random seed. Each output token
sits at the source position of the member closest to its centroid; ``size`` counts members.
Empty clusters keep their seed token. Batched; the loop is over a fixed number of iterations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.kernels.ops import greedy_max_min as fast_greedy_max_min
from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def grid_positions(tokens: VisualTokens) -> torch.Tensor:
    """Each token's (row, col) in the source grid, scaled so the longer side spans [0, 1]."""
    h, w = tokens.grid
    rows, cols = tokens.index // w, tokens.index % w
    return torch.stack([rows, cols], dim=-1).float() / max(h - 1, w - 1, 1)


def cluster_assign(
    x: torch.Tensor,
    weights: torch.Tensor,
    k: int,
    iters: int,
    pos: torch.Tensor | None = None,
    spatial: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted spherical k-means with an optional spatial term (SLIC-style).

    The distance of a token to a centre is ``1 - cos(x, c) + spatial * |pos - pos_c|``; seeds are
    the greedy max-min (k-center) tokens under that distance, so the result is deterministic.
    Returns the cluster id ``[B, N]`` of each token and its distance to its centre ``[B, N]``.
    """
    unit = F.normalize(x.float(), dim=-1)
    use_pos = pos is not None and spatial > 0

    def distance(centres: torch.Tensor, centre_pos: torch.Tensor | None) -> torch.Tensor:
        d = 1.0 - unit @ centres.transpose(1, 2)
        if use_pos:
            d = d + spatial * torch.cdist(pos, centre_pos)
        return d

    seeds = fast_greedy_max_min(distance(unit, pos), k).sort(dim=1).values
    centres = unit.gather(1, seeds.unsqueeze(-1).expand(-1, -1, unit.shape[-1]))
    centre_pos = pos.gather(1, seeds.unsqueeze(-1).expand(-1, -1, 2)) if use_pos else None
    for _ in range(iters):
        assign = distance(centres, centre_pos).argmin(-1)
        w = weights.unsqueeze(-1)
        sums = torch.zeros_like(centres).scatter_add(
            1, assign.unsqueeze(-1).expand_as(unit), unit * w
        )
        empty = sums.norm(dim=-1, keepdim=True) == 0
        centres = torch.where(empty, centres, F.normalize(sums, dim=-1))
        if use_pos:
            mass = weights.new_zeros(weights.shape[0], k).scatter_add(1, assign, weights)
            pos_sum = torch.zeros_like(centre_pos).scatter_add(
                1, assign.unsqueeze(-1).expand_as(pos), pos * w
            )
            centre_pos = torch.where(
                empty, centre_pos, pos_sum / mass.clamp_min(1e-12).unsqueeze(-1)
            )
    dist = distance(centres, centre_pos)
    assign = dist.argmin(-1)
    # make every seed belong to its own cluster, so no cluster is empty
    assign.scatter_(1, seeds, torch.arange(k, device=x.device).expand_as(seeds))
    return assign, dist.gather(2, assign.unsqueeze(-1)).squeeze(-1)


def merge_clusters(
    tokens: VisualTokens, assign: torch.Tensor, k: int, dist: torch.Tensor
) -> VisualTokens:
    """One token per cluster: the size-weighted mean of its members, at the source position of the
    member nearest the centre (``dist``; ties within 1e-6 go to the first), with ``size`` the
    members' total; in source order."""
    b, n = tokens.batch_size, tokens.num_tokens
    size = tokens.size.float()
    new_size = size.new_zeros(b, k).scatter_add(1, assign, size)

    def mean(x: torch.Tensor) -> torch.Tensor:
        summed = x.new_zeros(b, k, x.shape[-1]).scatter_add(
            1, assign.unsqueeze(-1).expand_as(x), x * tokens.size.unsqueeze(-1).to(x.dtype)
        )
        return summed / new_size.unsqueeze(-1).to(x.dtype)

    best = torch.full((b, k), float("inf"), device=dist.device).scatter_reduce(
        1, assign, dist, reduce="amin"
    )
    is_rep = dist <= best.gather(1, assign) + 1e-6  # ties (e.g. two-member clusters): first
    positions = torch.arange(n, device=dist.device).expand(b, n)
    rep = torch.full((b, k), n, device=dist.device, dtype=torch.long).scatter_reduce(
        1, assign, torch.where(is_rep, positions, n), reduce="amin"
    )
    changes = {
        "embeds": mean(tokens.embeds),
        "size": new_size.to(tokens.size.dtype),
        "index": tokens.index.gather(1, rep),
    }
    if tokens.keys is not None:
        changes["keys"] = mean(tokens.keys)
    if tokens.attn_to_cls is not None:
        changes["attn_to_cls"] = tokens.attn_to_cls.new_zeros(b, k).scatter_add(
            1, assign, tokens.attn_to_cls
        )
    changes["ids"] = tokens.ids.gather(1, rep) if tokens.ids is not None else None
    out = tokens.replace(**changes)
    return out.gather(out.index.argsort(dim=1))


@register("kmeans")
@dataclass
class KMeans(BaseReducer):
    """Merge tokens into K clusters (spherical k-means, k-center seeds), size-weighted means."""

    k: int = field(metadata={"help": "clusters (output tokens)"})
    iters: int = field(default=10, metadata={"help": "Lloyd iterations"})
    paper: ClassVar[str] = "baseline (k-means token pooling, arXiv:2110.03860)"
    example: ClassVar[str] = "kmeans:64"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        assign, dist = cluster_assign(tokens.embeds, tokens.size.float(), self.k, self.iters)
        return merge_clusters(tokens, assign, self.k, dist)
