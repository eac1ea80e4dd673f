"""ToMe: bipartite soft matching, merging the r most similar token pairs by size-weighted mean.

Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023 (arXiv:2210.09461). Tokens are
split alternately into sets A (even positions) and B (odd positions); each A token finds its most
similar B token (cosine similarity on the attention keys when the encoder gave them, else on the
features); the r A-tokens with the highest best-match score are merged into their match by a
size-weighted mean, and ``size`` records how many source tokens each result stands for (used for
proportional attention, ``log(size)`` added to attention logits).

Here it runs once between encoder and LLM (the papers apply it inside every ViT block; the
in-encoder patch comes with the reduction issue). Deviations: the output is put back in source
order (ToMe concatenates unmerged-A then B); ties break towards the earlier A token.
``r`` below 1 is a fraction of the input tokens, otherwise a count; at most ``n // 2`` merges
are possible in one matching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.errors import BudgetError
from mmllm.reduction.base import BaseReducer
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def merge_count(spec: str, name: str, r: float, n_in: int) -> int:
    """Merges one matching step makes: ``r`` is a fraction of ``n_in`` if < 1, else a count; a
    bipartite step merges at most ``n_in // 2`` (shared by ``tome`` and ``pitome``)."""
    count = math.floor(r * n_in) if r < 1 else int(r)
    if count > n_in // 2:
        raise BudgetError(
            f"{spec}: one {name} step merges at most {n_in // 2} of {n_in} tokens, "
            f"asked for {count}; chain two {name} stages for more"
        )
    return count


def bipartite_match(metric: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which A tokens merge, and into which B token.

    Args:
        metric: ``[B, N, C]`` matching features.
        r: number of A tokens to merge.
    Returns:
        ``src [B, r]`` positions in A of the merged tokens and ``dst [B, r]`` their B partners.
    """
    unit = F.normalize(metric.float(), dim=-1)
    a, b = unit[:, ::2], unit[:, 1::2]
    best, best_idx = (a @ b.transpose(1, 2)).max(dim=-1)  # [B, Na]
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :r]
    return src, best_idx.gather(1, src)


def merge_tokens(tokens: VisualTokens, src: torch.Tensor, dst: torch.Tensor) -> VisualTokens:
    """Merge A tokens ``src`` into B tokens ``dst`` (size-weighted), keep the rest, source order."""
    bsz, n = tokens.batch_size, tokens.num_tokens
    n_a = (n + 1) // 2
    keep_a = torch.ones(bsz, n_a, dtype=torch.bool, device=tokens.device)
    keep_a.scatter_(1, src, False)
    size_a, size_b = tokens.size[:, ::2], tokens.size[:, 1::2]
    src_size = size_a.gather(1, src)
    new_size_b = size_b.scatter_add(1, dst, src_size)

    def merged_mean(x: torch.Tensor) -> torch.Tensor:  # [B, N, C] size-weighted
        xa, xb = x[:, ::2], x[:, 1::2]
        w_a = (xa * size_a.unsqueeze(-1).to(x.dtype)).gather(
            1, src[..., None].expand(-1, -1, x.shape[-1])
        )
        xb = (xb * size_b.unsqueeze(-1).to(x.dtype)).scatter_add(
            1, dst[..., None].expand(-1, -1, x.shape[-1]), w_a
        )
        return torch.cat([xa, xb / new_size_b.unsqueeze(-1).to(x.dtype)], dim=1)

    changes: dict[str, torch.Tensor | None] = {"size": torch.cat([size_a, new_size_b], 1)}
    if tokens.embeds is not None:
        changes["embeds"] = merged_mean(tokens.embeds)
    if tokens.keys is not None:
        changes["keys"] = merged_mean(tokens.keys)
    if tokens.attn_to_cls is not None:  # attention mass adds up
        at_a, at_b = tokens.attn_to_cls[:, ::2], tokens.attn_to_cls[:, 1::2]
        changes["attn_to_cls"] = torch.cat([at_a, at_b.scatter_add(1, dst, at_a.gather(1, src))], 1)
    changes["index"] = torch.cat([tokens.index[:, ::2], tokens.index[:, 1::2]], 1)
    if tokens.ids is not None:  # a merged token keeps its destination's id
        changes["ids"] = torch.cat([tokens.ids[:, ::2], tokens.ids[:, 1::2]], 1)
    merged = tokens.replace(**changes)
    # keep unmerged A and all B, back in source order
    keep = torch.cat([keep_a, torch.ones(bsz, n - n_a, dtype=torch.bool, device=tokens.device)], 1)
    positions = torch.arange(n, device=tokens.device).expand(bsz, n)
    rank = torch.where(keep, merged.index, merged.index.new_full((), torch.iinfo(torch.long).max))
    order = rank.argsort(dim=1)[:, : n - src.shape[1]]
    return merged.gather(positions.gather(1, order))


@register("tome")
@dataclass
class ToMe(BaseReducer):
    """Merge the r most similar A->B token pairs (bipartite soft matching), tracking size."""

    r: float = field(metadata={"help": "merges: a fraction of the tokens if < 1, else a count"})
    metric: str = field(default="auto", metadata={"help": "auto (keys if given) | keys | embeds"})
    paper: ClassVar[str] = "ToMe (Bolya et al., ICLR 2023, arXiv:2210.09461)"
    example: ClassVar[str] = "tome:r=0.5"

    def __post_init__(self) -> None:
        if self.metric not in ("auto", "keys", "embeds"):
            raise ValueError(f"metric must be auto, keys or embeds, got '{self.metric}'")
        if self.r <= 0:
            raise ValueError(f"r must be positive, got {self.r}")

    def required_fields(self) -> tuple[str, ...]:
        return ("keys",) if self.metric == "keys" else ("embeds",)

    def merges(self, n_in: int) -> int:
        return merge_count(self.spec, "tome", self.r, n_in)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return n_in - self.merges(n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        r = self.merges(tokens.num_tokens)
        if r == 0:
            return tokens
        use_keys = self.metric == "keys" or (self.metric == "auto" and tokens.keys is not None)
        from mmllm.kernels.ops import bipartite_merge  # fast path; merge_tokens: the reference

        return bipartite_merge(tokens, r, tokens.keys if use_keys else tokens.embeds)
