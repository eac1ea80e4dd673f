"""EViT: keep the K most attended tokens and fuse all inattentive ones into one token.

Liang et al., "Not All Patches are What You Need: Expediting Vision Transformers via Token
Reorganizations", ICLR 2022 (arXiv:2202.07800). The attentive tokens are the K with the highest
[CLS] attention; the rest are fused into a single token, their attention-weighted average.
Output: K + 1 tokens (K when nothing is left to fuse).

Deviations: applied once between encoder and LLM (the paper reorganises inside ViT blocks);
CLS-free scores (``score=norm|entropy|mean_sim``) for encoders without [CLS], in which case the
fused token is the size-weighted mean; the fused token sits at the position of the
highest-scoring inattentive token, and the output is in source order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.importance import ScoredMixin, importance_scores
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens
from mmllm.reduction.visionzip import concat_in_order


@register("evit")
@dataclass
class EViT(ScoredMixin, BaseReducer):
    """Keep the K most attended tokens; fuse the rest into one attention-weighted token."""

    k: int = field(metadata={"help": "attentive tokens kept (output K + 1)"})
    score: str = field(default="cls", metadata={"help": "cls | norm | entropy | mean_sim"})
    paper: ClassVar[str] = "EViT (Liang et al., ICLR 2022, arXiv:2202.07800)"
    example: ClassVar[str] = "evit:63,score=norm"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        check_budget(self.spec, self.k, n_in)
        return self.k + (1 if self.k < n_in else 0)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        scores = importance_scores(tokens, self.score)
        order = scores.argsort(dim=1, descending=True, stable=True)
        kept = tokens.gather(order[:, : self.k].sort(dim=1).values)
        if self.k == tokens.num_tokens:
            return kept
        rest_idx = order[:, self.k :]
        rest = tokens.gather(rest_idx)
        weights = rest.attn_to_cls.float() if self.score == "cls" else rest.size.float()
        weights = weights / weights.sum(1, keepdim=True).clamp_min(1e-12)

        def fuse(x: torch.Tensor) -> torch.Tensor:
            return (x * weights.unsqueeze(-1).to(x.dtype)).sum(1, keepdim=True)

        fused = rest.gather(rest_idx.new_zeros(rest_idx.shape[0], 1))  # top inattentive token
        changes = {"size": rest.size.sum(1, keepdim=True)}
        if rest.embeds is not None:
            changes["embeds"] = fuse(rest.embeds)
        if rest.keys is not None:
            changes["keys"] = fuse(rest.keys)
        if rest.attn_to_cls is not None:
            changes["attn_to_cls"] = rest.attn_to_cls.sum(1, keepdim=True)
        return concat_in_order(kept, fused.replace(**changes))
