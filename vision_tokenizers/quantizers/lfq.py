"""Lookup-free quantization (MAGVIT-v2) and binary spherical quantization (BSQ).

LFQ: Yu et al., "Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation", ICLR
2024 (arXiv:2310.05737). Each channel's sign is one bit, the code is the ±1 vector and the id the
binary number, so the codebook (``2^dim``) is never looked up. An entropy loss keeps usage high:
``E[H(p(c|z))] - gamma * H(E[p(c|z)])`` with ``p(c|z) = softmax(-|z - c|^2 / tau)`` over codes.

BSQ: Zhao et al., "Image and Video Tokenization with Binary Spherical Quantization", 2024
(arXiv:2406.07548): project ``z`` to the unit sphere first; codes are ``±1/sqrt(dim)`` (unit
norm). Instella-T2I's 1D binary latents are this quantizer on a 1D token sequence.

Both distributions factorise over bits, so the per-sample entropy is exact for any width. The
codebook (batch-mean) entropy is exact up to ``exact_entropy_bits`` (default 12: 4096 codes)
and above that uses the sum of per-bit marginal entropies, the upper bound BSQ's paper uses
(a stated deviation for wide codes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers.base import (
    Quantizer,
    QuantizerAux,
    code_stats,
    straight_through,
)

MAX_BITS = 62  # ids are int64


def _binary_entropy(p: Tensor) -> Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


class LFQ(Quantizer):
    """Sign of each channel is a bit; id = binary number; entropy loss for codebook usage.

    Args:
        dim: bits per token (codebook size ``2^dim``).
        entropy_weight: weight of the entropy loss.
        commitment: weight of ``|z - sg(code)|^2``.
        gamma: weight of the codebook-entropy term inside the entropy loss.
        tau: temperature of ``p(c|z)``.
        exact_entropy_bits: widest code for which the codebook entropy is computed exactly.
    """

    spherical = False

    def __init__(
        self,
        dim: int,
        *,
        entropy_weight: float = 0.1,
        commitment: float = 0.25,
        gamma: float = 1.0,
        tau: float = 1.0,
        exact_entropy_bits: int = 12,
    ):
        super().__init__()
        if not 1 <= dim <= MAX_BITS:
            raise MMLLMError(f"{type(self).__name__} needs 1..{MAX_BITS} bits, got {dim}")
        self.dim, self.codebook_size = dim, 2**dim
        self.entropy_weight, self.commitment = entropy_weight, commitment
        self.gamma, self.tau, self.exact_entropy_bits = gamma, tau, exact_entropy_bits
        self.register_buffer("bits", 2 ** torch.arange(dim), persistent=False)
        self.scale = dim**-0.5 if self.spherical else 1.0

    def entropy_loss(self, h: Tensor) -> Tensor:
        """``mean per-sample entropy - gamma * codebook entropy`` of ``p(c|h)``."""
        # |h - c|^2 differs by 4 * scale * h_i between bit i = 1 and bit i = 0
        p_one = torch.sigmoid(4 * self.scale * h / self.tau)  # [M, dim]
        per_sample = _binary_entropy(p_one).sum(-1).mean()
        if self.dim <= self.exact_entropy_bits:
            all_codes = (torch.arange(self.codebook_size, device=h.device)[:, None] & self.bits) > 0
            log_p = (
                all_codes.float() @ F.logsigmoid(4 * self.scale * h / self.tau).t()
                + (~all_codes).float() @ F.logsigmoid(-4 * self.scale * h / self.tau).t()
            )  # [codes, M]
            mean_p = log_p.exp().mean(-1)
            codebook = -(mean_p * mean_p.clamp_min(1e-12).log()).sum()
        else:
            codebook = _binary_entropy(p_one.mean(0)).sum()
        return per_sample - self.gamma * codebook

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        self.check_input(z)
        h = z.reshape(-1, self.dim).float()
        if self.spherical:
            h = F.normalize(h, dim=-1)
        code = torch.where(h > 0, self.scale, -self.scale)
        ids = ((h > 0).long() * self.bits).sum(-1)
        loss = self.commitment * F.mse_loss(h, code)
        if self.training and self.entropy_weight > 0:
            loss = loss + self.entropy_weight * self.entropy_loss(h)
        quantized = straight_through(h, code).view(z.shape).to(z.dtype)
        usage, perplexity = code_stats(ids, self.codebook_size)
        return quantized, ids.view(z.shape[:-1]), QuantizerAux(loss, usage, perplexity)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        self.check_ids(ids)
        on = (ids.unsqueeze(-1) & self.bits) > 0
        return torch.where(on, self.scale, -self.scale)


class BSQ(LFQ):
    """LFQ on the unit sphere: ``z / |z|`` binarised to ``±1/sqrt(dim)``."""

    spherical = True
