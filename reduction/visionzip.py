"""VisionZip: D dominant tokens by [CLS] attention + C contextual tokens merged from the rest.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models",
CVPR 2025 (arXiv:2412.04467). Dominant tokens are the D with the highest [CLS] attention. The
remaining tokens are split into C targets, taken at a uniform stride over the remaining sequence,
and the others; every other token is merged into its most similar target (dot product of
L2-normalised keys), and each contextual token is the mean of its target and the tokens merged
into it.

Deviations: the means are size-weighted (identical to the paper's plain mean on fresh encoder
tokens, and correct after earlier merges); the output is in source order (the paper concatenates
dominant then contextual); encoders without [CLS] can rank dominants with a CLS-free score
(``score=norm|entropy|mean_sim`` from :mod:`mmllm.reduction.importance`); similarity uses the
features when the encoder gave no keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from mmllm.errors import BudgetError
from mmllm.reduction.base import BaseReducer
from mmllm.reduction.importance import ScoredMixin, importance_scores
from mmllm.reduction.merging import merge_into_nearest
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def merge_into_targets(tokens: VisualTokens, rest: torch.Tensor, n_targets: int) -> VisualTokens:
    """Merge tokens ``rest [B, R]`` into ``n_targets`` targets taken at a uniform stride of rest."""
    r = rest.shape[1]
    step = max(1, r // n_targets)
    target_pos = torch.arange(0, r, step, device=rest.device)[:n_targets]
    is_target = torch.zeros(r, dtype=torch.bool, device=rest.device)
    is_target[target_pos] = True
    targets, others = rest[:, is_target], rest[:, ~is_target]
    return merge_into_nearest(tokens.gather(targets), tokens.gather(others))


def concat_in_order(a: VisualTokens, b: VisualTokens) -> VisualTokens:
    """Two token sets of the same batch, joined and sorted by source position."""
    fields = {}
    for name in ("embeds", "ids", "index", "size", "attn_to_cls", "keys"):
        x, y = getattr(a, name), getattr(b, name)
        fields[name] = None if x is None or y is None else torch.cat([x, y], dim=1)
    joined = a.replace(**fields)
    return joined.gather(joined.index.argsort(dim=1))


@register("visionzip")
@dataclass
class VisionZip(ScoredMixin, BaseReducer):
    """Keep D dominant tokens; merge the rest into C contextual tokens by similarity."""

    dominant: int = field(metadata={"help": "dominant tokens kept as they are (D)"})
    contextual: int = field(
        default=0, metadata={"help": "contextual tokens merged from the rest (C)"}
    )
    score: str = field(default="cls", metadata={"help": "cls | norm | entropy | mean_sim"})
    paper: ClassVar[str] = "VisionZip (Yang et al., CVPR 2025, arXiv:2412.04467)"
    example: ClassVar[str] = "visionzip:dominant=54,contextual=10"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dominant < 0 or self.contextual < 0 or self.dominant + self.contextual == 0:
            raise ValueError("dominant and contextual must be >= 0 and not both 0")

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        k = self.dominant + self.contextual
        if k > n_in:
            raise BudgetError(
                f"{self.spec}: {self.dominant} dominant + {self.contextual} contextual tokens "
                f"need more than the {n_in} tokens it receives"
            )
        return k

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        scores = importance_scores(tokens, self.score)
        order = scores.argsort(dim=1, descending=True, stable=True)
        dominant = tokens.gather(order[:, : self.dominant].sort(dim=1).values)
        if self.contextual == 0:
            return dominant
        rest = order[:, self.dominant :].sort(dim=1).values
        return concat_in_order(dominant, merge_into_targets(tokens, rest, self.contextual))
