"""Importance pruning: keep the top-K tokens by a score, in their original order.

``score=cls`` is FasterVLM (Zhang et al., "[CLS] Attention is All You Need for Training-Free
Visual Token Pruning", arXiv:2412.01818) and FoPru's token variant (Jiang et al.,
arXiv:2411.14164): the [CLS] token's attention to each patch in the encoder's last layer.

Encoders without [CLS] (EfficientNet, SigLIP) use a CLS-free score instead. These are mmllm's
own definitions, not a paper's:

- ``norm``: the token's L2 feature norm (high-norm tokens carry salient content).
- ``mean_sim``: minus the mean cosine similarity to the other tokens (keep distinctive tokens).
- ``entropy``: the Shannon entropy of the token's channel distribution ``p = |x| / sum |x|``:
  tokens whose activation is spread over many channels carry more content. VFlowOpt scores the
  entropy of the image patch; pixels are not part of ``VisualTokens``, so this is the
  feature-space analogue, and it is a deviation from that paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens

SCORES = ("cls", "norm", "entropy", "mean_sim")


def _cosine(x: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(x.float(), dim=-1)
    return unit @ unit.transpose(1, 2)


def importance_scores(tokens: VisualTokens, score: str) -> torch.Tensor:
    """Per-token importance ``[B, N]`` (higher = keep) for one of :data:`SCORES`."""
    if score == "cls":
        return tokens.attn_to_cls.float()
    if score == "norm":
        return tokens.embeds.float().norm(dim=-1)
    if score == "entropy":
        p = tokens.embeds.float().abs()
        p = p / p.sum(-1, keepdim=True).clamp_min(1e-12)
        return -(p * p.clamp_min(1e-12).log()).sum(-1)
    sim = _cosine(tokens.embeds)
    n = sim.shape[-1]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=sim.device)
    return -(sim * off_diagonal).sum(-1) / max(n - 1, 1)


class ScoredMixin:
    """Shared by reducers with a ``score`` setting: validation and the side information it needs."""

    score: str

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {', '.join(SCORES)}, got '{self.score}'")

    def required_fields(self) -> tuple[str, ...]:
        return ("attn_to_cls",) if self.score == "cls" else ("embeds",)


def top_k_in_order(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores per row, sorted back into token order."""
    return scores.topk(k, dim=1).indices.sort(dim=1).values


@register("importance")
@dataclass
class ImportancePrune(ScoredMixin, BaseReducer):
    """Keep the top-K tokens by [CLS] attention or a CLS-free score."""

    k: int = field(metadata={"help": "tokens to keep"})
    score: str = field(default="cls", metadata={"help": "cls | norm | entropy | mean_sim"})
    paper: ClassVar[str] = "FasterVLM (arXiv:2412.01818) / FoPru (arXiv:2411.14164)"
    example: ClassVar[str] = "importance:64,score=norm"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        return tokens.gather(top_k_in_order(importance_scores(tokens, self.score), self.k))
