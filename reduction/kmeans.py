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
from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def kmeans_assign(x: torch.Tensor, weights: torch.Tensor, k: int, iters: int) -> torch.Tensor:
    """Cluster id ``[B, N]`` for each token of ``x [B, N, D]`` (weighted spherical k-means)."""
    unit = F.normalize(x.float(), dim=-1)
    seeds = divprune_select(x, k)
    centroids = unit.gather(1, seeds.unsqueeze(-1).expand(-1, -1, unit.shape[-1]))
    for _ in range(iters):
        assign = (unit @ centroids.transpose(1, 2)).argmax(-1)
        sums = torch.zeros_like(centroids).scatter_add(
            1, assign.unsqueeze(-1).expand_as(unit), unit * weights.unsqueeze(-1)
        )
        fresh = F.normalize(sums, dim=-1)
        empty = sums.norm(dim=-1, keepdim=True) == 0
        centroids = torch.where(empty, centroids, fresh)
    assign = (unit @ centroids.transpose(1, 2)).argmax(-1)
    # make every seed belong to its own cluster, so no cluster is empty
    assign.scatter_(1, seeds, torch.arange(k, device=x.device).expand_as(seeds))
    return assign


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
        b, n = tokens.batch_size, tokens.num_tokens
        size = tokens.size.float()
        assign = kmeans_assign(tokens.embeds, size, self.k, self.iters)
        new_size = size.new_zeros(b, self.k).scatter_add(1, assign, size)

        def mean(x: torch.Tensor) -> torch.Tensor:
            summed = x.new_zeros(b, self.k, x.shape[-1]).scatter_add(
                1, assign.unsqueeze(-1).expand_as(x), x * tokens.size.unsqueeze(-1).to(x.dtype)
            )
            return summed / new_size.unsqueeze(-1).to(x.dtype)

        centroids = mean(tokens.embeds)
        dist = (
            tokens.embeds.float()
            - centroids.float().gather(1, assign.unsqueeze(-1).expand(-1, -1, centroids.shape[-1]))
        ).norm(dim=-1)
        best = torch.full((b, self.k), float("inf"), device=dist.device).scatter_reduce(
            1, assign, dist, reduce="amin"
        )
        is_rep = dist == best.gather(1, assign)
        positions = torch.arange(n, device=dist.device).expand(b, n)
        rep = torch.full((b, self.k), n, device=dist.device, dtype=torch.long).scatter_reduce(
            1, assign, torch.where(is_rep, positions, n), reduce="amin"
        )
        changes = {
            "embeds": centroids,
            "size": new_size.to(tokens.size.dtype),
            "index": tokens.index.gather(1, rep),
        }
        if tokens.keys is not None:
            changes["keys"] = mean(tokens.keys)
        if tokens.attn_to_cls is not None:
            changes["attn_to_cls"] = tokens.attn_to_cls.new_zeros(b, self.k).scatter_add(
                1, assign, tokens.attn_to_cls
            )
        changes["ids"] = tokens.ids.gather(1, rep) if tokens.ids is not None else None
        out = tokens.replace(**changes)
        return out.gather(out.index.argsort(dim=1))
