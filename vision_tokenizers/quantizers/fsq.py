"""Finite scalar quantization: bound each channel and round it to a few levels.

Mentzer et al., "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024 (arXiv:2309.15505).
Channel ``i`` is bounded with ``tanh`` to ``L_i`` values and rounded (straight-through); the
implicit codebook is the product grid of ``prod(L_i)`` codes, all of them reachable, so there is
no codebook loss and no collapse. Even ``L`` use the paper's half-step offset so the grid stays
symmetric. Codes are returned scaled to ``[-1, 1]``. If ``dim`` differs from ``len(levels)``,
linear projections map in and out of the quantized space (as in the paper's reference code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers.base import (
    Quantizer,
    QuantizerAux,
    code_stats,
    straight_through,
)


class FSQ(Quantizer):
    """Round each (bounded) channel to ``levels[i]`` values; codebook = product of the levels."""

    def __init__(self, levels: Sequence[int], dim: int | None = None):
        super().__init__()
        if not levels or any(int(level) < 2 for level in levels):
            raise MMLLMError(f"FSQ levels must be integers >= 2, got {list(levels)}")
        lv = torch.tensor([int(level) for level in levels])
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer(
            "basis",
            torch.cumprod(torch.cat([torch.ones(1, dtype=lv.dtype), lv[:-1]]), 0),
            persistent=False,
        )
        self.codebook_size = int(lv.prod())
        self.dim = dim or len(levels)
        width = len(levels)
        self.project_in = nn.Linear(self.dim, width) if self.dim != width else nn.Identity()
        self.project_out = nn.Linear(width, self.dim) if self.dim != width else nn.Identity()

    def bound(self, z: Tensor, eps: float = 1e-3) -> Tensor:
        half_l = (self.levels - 1) * (1 + eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        self.check_input(z)
        h = self.project_in(z.float())
        bounded = self.bound(h)
        rounded = straight_through(bounded, bounded.round())
        half_width = self.levels // 2
        codes = rounded / half_width
        ids = ((rounded.detach().round() + half_width).long() * self.basis).sum(-1)
        usage, perplexity = code_stats(ids, self.codebook_size)
        loss = z.new_zeros((), dtype=torch.float32)
        return self.project_out(codes).to(z.dtype), ids, QuantizerAux(loss, usage, perplexity)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        self.check_ids(ids)
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels
        half_width = self.levels // 2
        return self.project_out((digits - half_width).float() / half_width)
