"""Size-weighted merging of dropped tokens into their most similar kept tokens (shared helper)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmllm.reduction.types import VisualTokens


def merge_into_nearest(
    kept: VisualTokens, gone: VisualTokens, allowed: torch.Tensor | None = None
) -> VisualTokens:
    """Merge every token of ``gone`` into the ``kept`` token with the highest cosine similarity.

    ``allowed [B, K]`` (optional) marks the kept tokens that may receive merges.

    Similarity uses the attention keys when both sides have them, else the features. Features
    and keys become size-weighted means, ``size`` adds up, ``attn_to_cls`` (attention mass) sums;
    ``index`` and ``ids`` stay those of the kept tokens.
    """
    metric_k = kept.keys if kept.keys is not None else kept.embeds
    metric_g = gone.keys if gone.keys is not None else gone.embeds
    unit_k = F.normalize(metric_k.float(), dim=-1)
    sim = F.normalize(metric_g.float(), dim=-1) @ unit_k.transpose(1, 2)
    if allowed is not None:
        sim = sim.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    target = sim.argmax(dim=-1)
    size = kept.size.scatter_add(1, target, gone.size)

    def weighted(k: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        summed = (k * kept.size.unsqueeze(-1).to(k.dtype)).scatter_add(
            1,
            target.unsqueeze(-1).expand(-1, -1, k.shape[-1]),
            g * gone.size.unsqueeze(-1).to(g.dtype),
        )
        return summed / size.unsqueeze(-1).to(k.dtype)

    changes = {"size": size}
    if kept.embeds is not None:
        changes["embeds"] = weighted(kept.embeds, gone.embeds)
    if kept.keys is not None:
        changes["keys"] = weighted(kept.keys, gone.keys)
    if kept.attn_to_cls is not None:
        changes["attn_to_cls"] = kept.attn_to_cls.scatter_add(1, target, gone.attn_to_cls)
    return kept.replace(**changes)
