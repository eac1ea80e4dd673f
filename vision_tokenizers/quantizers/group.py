"""Group-wise LFQ (WeTok): split the channels into groups and quantize each group with LFQ.

After WeTok (2025, group-wise lookup-free quantization): a wide binary code is split into G groups
so each group's entropy loss is computed exactly over a small codebook (``2^(dim/G)``), which
makes very large effective codebooks trainable. ``ids [..., G]`` holds one id per group.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers.base import Quantizer, QuantizerAux
from mmllm.vision_tokenizers.quantizers.lfq import LFQ


class GroupLFQ(Quantizer):
    """``groups`` independent LFQ quantizers on equal channel slices."""

    def __init__(self, dim: int, groups: int, **lfq_kwargs):
        super().__init__()
        if groups < 1 or dim % groups:
            raise MMLLMError(f"dim {dim} must split into {groups} equal groups")
        self.dim, self.groups = dim, groups
        self.parts = nn.ModuleList(LFQ(dim // groups, **lfq_kwargs) for _ in range(groups))
        self.codebook_size = self.parts[0].codebook_size

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        self.check_input(z)
        outs = [q(chunk) for q, chunk in zip(self.parts, z.chunk(self.groups, dim=-1), strict=True)]
        aux = QuantizerAux(
            loss=sum(o[2].loss for o in outs),
            usage=sum(o[2].usage for o in outs) / self.groups,
            perplexity=sum(o[2].perplexity for o in outs) / self.groups,
        )
        return torch.cat([o[0] for o in outs], -1), torch.stack([o[1] for o in outs], -1), aux

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        if ids.shape[-1] != self.groups:
            raise MMLLMError(f"expected ids [..., {self.groups}], got {tuple(ids.shape)}")
        return torch.cat([q.ids_to_codes(ids[..., i]) for i, q in enumerate(self.parts)], -1)
