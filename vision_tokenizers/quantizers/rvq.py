"""Residual quantization: quantize, subtract, quantize the residual again, stage after stage.

Zeghidour et al., "SoundStream", 2021 (arXiv:2107.03312) and Lee et al., "Autoregressive Image
Generation using Residual Quantization" (RQ-VAE), CVPR 2022 (arXiv:2203.01941). Any quantizer can
be a stage (each stage is built by the same factory). The output is the sum of the stage codes;
``ids [..., S]`` holds one id per stage; usage and perplexity are the stages' means.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers.base import Quantizer, QuantizerAux, straight_through


class ResidualQuantizer(Quantizer):
    """``num_stages`` quantizers, each on what the previous ones left."""

    def __init__(self, make_stage: Callable[[], Quantizer], num_stages: int):
        super().__init__()
        if num_stages < 1:
            raise MMLLMError(f"a residual quantizer needs >= 1 stage, got {num_stages}")
        self.stages = nn.ModuleList(make_stage() for _ in range(num_stages))
        self.dim = self.stages[0].dim
        self.codebook_size = self.stages[0].codebook_size

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        self.check_input(z)
        residual = z.float()
        total = torch.zeros_like(residual)
        ids, auxes = [], []
        for stage in self.stages:
            q, stage_ids, aux = stage(residual)
            total = total + q.detach()
            residual = residual - q.detach()
            ids.append(stage_ids)
            auxes.append(aux)
        quantized = straight_through(z.float(), total.detach()).to(z.dtype)
        aux = QuantizerAux(
            loss=sum(a.loss for a in auxes),
            usage=sum(a.usage for a in auxes) / len(auxes),
            perplexity=sum(a.perplexity for a in auxes) / len(auxes),
        )
        return quantized, torch.stack(ids, dim=-1), aux

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        if ids.shape[-1] != len(self.stages):
            raise MMLLMError(f"expected ids [..., {len(self.stages)}], got {tuple(ids.shape)}")
        return sum(stage.ids_to_codes(ids[..., i]) for i, stage in enumerate(self.stages))
