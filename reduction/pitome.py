"""PiToMe: ToMe's bipartite merging restricted to high-energy tokens, protecting isolated ones.

Tran et al., "Accelerating Transformers with Spectrum-Preserving Token Merging", NeurIPS 2024
(arXiv:2405.16148). Each token gets an *energy* score, its mean ELU-margined cosine similarity
to all tokens, ``E_i = mean_j elu(cos(x_i, x_j) - m, alpha)``: tokens in large groups of similar
tokens have high energy, isolated (informative) ones low energy. The ``2r`` highest-energy tokens
are the merge candidates, split alternately (by energy rank) into sets A and B; every A token
merges into its most similar B token by a size-weighted mean. The other ``n - 2r`` tokens are
protected and kept unchanged, so exactly ``r`` tokens disappear.

Deviations: one application between encoder and LLM by default (the paper merges in every ViT
block, with the margin ``m`` decreasing with depth: pass ``margin`` to set it); the output is put
back in source order; a merged token keeps the ``index`` of its B destination.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.reduction.base import BaseReducer
from mmllm.reduction.merging import merge_into_nearest
from mmllm.reduction.registry import register
from mmllm.reduction.tome import merge_count
from mmllm.reduction.types import TextContext, VisualTokens


def energy_scores(metric: torch.Tensor, margin: float, alpha: float = 1.0) -> torch.Tensor:
    """PiToMe's energy ``[B, N]``: mean over j of ``elu(cos_ij - margin, alpha)``."""
    unit = F.normalize(metric.float(), dim=-1)
    return F.elu(unit @ unit.transpose(1, 2) - margin, alpha=alpha).mean(dim=-1)


def pitome_merge(tokens: VisualTokens, r: int, margin: float, alpha: float = 1.0) -> VisualTokens:
    """Merge ``r`` tokens: A -> most similar B among the ``2r`` highest-energy tokens."""
    metric = tokens.keys if tokens.keys is not None else tokens.embeds
    order = energy_scores(metric, margin, alpha).argsort(dim=1, descending=True, stable=True)
    set_a, set_b = order[:, : 2 * r : 2], order[:, 1 : 2 * r : 2]
    kept = torch.cat([set_b, order[:, 2 * r :]], dim=1).sort(dim=1).values
    survivors = tokens.gather(kept)
    # A may only merge into B: hide the protected tokens from the matching by masking them out.
    is_b = torch.zeros_like(tokens.index, dtype=torch.bool).scatter_(1, set_b, True)
    return merge_into_nearest(survivors, tokens.gather(set_a), allowed=is_b.gather(1, kept))


@register("pitome")
@dataclass
class PiToMe(BaseReducer):
    """ToMe merging among the 2r highest-energy tokens; isolated tokens are protected."""

    r: float = field(metadata={"help": "merges: a fraction of the tokens if < 1, else a count"})
    margin: float = field(default=0.9, metadata={"help": "energy margin m (paper: 0.9 at layer 0)"})
    alpha: float = field(default=1.0, metadata={"help": "ELU slope below the margin"})
    paper: ClassVar[str] = "PiToMe (Tran et al., NeurIPS 2024, arXiv:2405.16148)"
    example: ClassVar[str] = "pitome:r=0.5"
    needs: ClassVar[tuple[str, ...]] = ("embeds",)

    def __post_init__(self) -> None:
        if self.r <= 0:
            raise ValueError(f"r must be positive, got {self.r}")

    def merges(self, n_in: int) -> int:
        return merge_count(self.spec, "pitome", self.r, n_in)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return n_in - self.merges(n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        r = self.merges(tokens.num_tokens)
        return tokens if r == 0 else pitome_merge(tokens, r, self.margin, self.alpha)
