"""Coverage merging, mmllm's region-merging reducer: every region survives, merged.

The recommended default is ``focus`` (``reduction/focus.py``) on models whose visual tokens are
grounded in words, like the shipped default; coverage is the choice where a text-free reducer
must merge rather than drop (ungrounded adapters, see ``docs/reduction.md``).

Pruning loses what it drops; plain feature clustering (k-means, ToMe) merges two objects that
look alike even when they are far apart, so a count or a position is lost. ``coverage:K`` cuts
the image into K regions that are alike in *both* appearance and place, and gives the LLM one
size-weighted token per region, at the source position of its most typical member:

1. distance ``d(i, j) = 1 - cos(x_i, x_j) + spatial * |p_i - p_j|`` with ``p`` the grid position
   scaled to [0, 1] (the SLIC superpixel distance, Achanta et al., TPAMI 2012, applied to
   tokens);
2. K seeds by greedy max-min on ``d`` (the k-center step of DivPrune, arXiv:2503.02175: the
   seeds cover the image, so small distinct objects get their own seed);
3. a few Lloyd iterations on ``d`` and a size-weighted merge of each region, so no token's
   information is dropped (the recycling idea of VFlowOpt, arXiv:2508.05211, and k-means token
   pooling, arXiv:2110.03860).

Needs no [CLS], no attention weights and no text, so it works with any encoder, with fused
attention and inside vLLM. ``spatial=0`` is the ``kmeans`` baseline; ``iters=0`` is DivPrune's
selection with every pruned token recycled into its nearest seed. The ablation behind the
defaults is in ``benchmarks/results/reduction.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.kmeans import cluster_assign, grid_positions, merge_clusters
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


@register("coverage")
@dataclass
class Coverage(BaseReducer):
    """K regions alike in appearance and place, one size-weighted token each (mmllm's method)."""

    k: int = field(metadata={"help": "output tokens (regions)"})
    spatial: float = field(
        default=0.5, metadata={"help": "weight of grid distance vs feature distance"}
    )
    iters: int = field(default=3, metadata={"help": "Lloyd iterations after k-center seeding"})
    paper: ClassVar[str] = "mmllm (SLIC-style k-center + merge; text-free, merges)"
    example: ClassVar[str] = "coverage:16"
    needs: ClassVar[tuple[str, ...]] = ("embeds",)

    def __post_init__(self) -> None:
        if self.spatial < 0 or self.iters < 0:
            raise ValueError(f"spatial and iters must be >= 0, got {self.spatial}, {self.iters}")

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        if self.k == tokens.num_tokens:
            return tokens
        assign, dist = cluster_assign(
            tokens.embeds,
            tokens.size.float(),
            self.k,
            self.iters,
            pos=grid_positions(tokens),
            spatial=self.spatial,
        )
        return merge_clusters(tokens, assign, self.k, dist)
