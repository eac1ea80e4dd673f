"""Drop-then-recycle: prune to K tokens, then merge each pruned token into its nearest kept one.

After VFlowOpt (Yang et al., ICCV 2025, arXiv:2508.05211: pruned tokens are recycled into kept
ones instead of being lost) and GTP-ViT (Xu et al., WACV 2024, arXiv:2311.03035: graph-based
propagation of pruned tokens' information into kept tokens). The kept set is the top-K by an
importance score; every pruned token is merged, size-weighted, into the kept token with the
highest cosine similarity (a one-hop propagation over the similarity graph).

Deviations: one hop to the single most similar kept token (GTP-ViT spreads over several
neighbours with a graph kernel); no tuning of settings by matching the LLM's hidden state
(VFlowOpt's optimisation step); ``score=cls`` needs [CLS] attention, ``norm`` (default),
``entropy`` and ``mean_sim`` work for any encoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.importance import ScoredMixin, importance_scores, top_k_in_order
from mmllm.reduction.merging import merge_into_nearest
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def recycle_into(tokens: VisualTokens, keep: torch.Tensor) -> VisualTokens:
    """Keep ``keep [B, K]`` and merge every other token into its most similar kept token."""
    b, n = tokens.batch_size, tokens.num_tokens
    dropped_mask = torch.ones(b, n, dtype=torch.bool, device=tokens.device)
    dropped_mask.scatter_(1, keep, False)
    dropped = dropped_mask.nonzero()[:, 1].view(b, n - keep.shape[1])
    return merge_into_nearest(tokens.gather(keep), tokens.gather(dropped))


@register("recycle")
@dataclass
class Recycle(ScoredMixin, BaseReducer):
    """Keep the top-K tokens and merge each pruned token into its most similar kept token."""

    k: int = field(metadata={"help": "tokens kept (each absorbs its pruned neighbours)"})
    score: str = field(default="norm", metadata={"help": "cls | norm | entropy | mean_sim"})
    paper: ClassVar[str] = "VFlowOpt (arXiv:2508.05211) / GTP-ViT (arXiv:2311.03035)"
    example: ClassVar[str] = "recycle:64"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        keep = top_k_in_order(importance_scores(tokens, self.score), self.k)
        if self.k == tokens.num_tokens:
            return tokens.gather(keep)
        return recycle_into(tokens, keep)
