"""Vector quantization with a learned codebook (VQ-VAE), EMA updates, dead-code restarts.

van den Oord et al., "Neural Discrete Representation Learning", NeurIPS 2017 (arXiv:1711.00937):
nearest codebook vector, straight-through gradient, commitment loss ``beta * |z - sg(q)|^2``
(plus the codebook loss ``|sg(z) - q|^2`` when the codebook is learned by gradient). EMA updates
of the codebook (Razavi et al., VQ-VAE-2, arXiv:1906.00446, App. A.1) replace the codebook loss;
codes whose EMA usage falls below ``dead_threshold`` are restarted on random inputs of the batch
(as in Jukebox / SoundStream); the EMA counts start at zero, so codes that no input chooses are
restarted from the first step (starting them at one hid dead codes for ``log(threshold) /
log(decay)`` ~ 460 steps: 1.2% usage after 450 steps in the tokenizer bench).
``cosine=True`` l2-normalises inputs and codes (LlamaGen's codebook, arXiv:2406.06525);
``kmeans_init=True`` initialises the codebook by k-means on the first training batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmllm.vision_tokenizers.quantizers.base import (
    Quantizer,
    QuantizerAux,
    code_stats,
    straight_through,
)


class VectorQuantizer(Quantizer):
    """Nearest-code VQ with optional EMA codebook, dead-code restart, cosine codes, k-means init.

    Args:
        dim: channel width of the input and the codes.
        codebook_size: number of codes.
        cosine: compare l2-normalised vectors (codes live on the unit sphere).
        ema: update the codebook by exponential moving averages (no codebook loss).
        decay: EMA decay.
        commitment: weight of the commitment loss.
        dead_threshold: restart codes whose EMA count drops below this (0 disables).
        kmeans_init: k-means (10 Lloyd steps) on the first training batch initialises the codes.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        *,
        cosine: bool = False,
        ema: bool = True,
        decay: float = 0.99,
        commitment: float = 0.25,
        dead_threshold: float = 1e-2,
        kmeans_init: bool = False,
    ):
        super().__init__()
        self.dim, self.codebook_size = dim, codebook_size
        self.cosine, self.ema, self.decay = cosine, ema, decay
        self.commitment, self.dead_threshold = commitment, dead_threshold
        codes = torch.randn(codebook_size, dim)
        if cosine:
            codes = F.normalize(codes, dim=-1)
        if ema:
            self.register_buffer("codebook", codes)
            # EMA statistics start empty (as in EnCodec's EMA codebook), so codes
            # no input chose are dead from the first step and restart on batch vectors.
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embed_sum", torch.zeros_like(codes))
        else:
            self.codebook = nn.Parameter(codes)
        self.register_buffer("initted", torch.tensor(not kmeans_init))

    def _prepare(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.cosine else x

    def nearest(self, flat: Tensor) -> Tensor:
        """Code index of each row of ``flat [M, dim]``."""
        codes = self._prepare(self.codebook)
        if self.cosine:
            return (flat @ codes.t()).argmax(dim=-1)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.t() + codes.pow(2).sum(1)
        return dist.argmin(dim=-1)

    @torch.no_grad()
    def _kmeans_init(self, flat: Tensor, iters: int = 10) -> None:
        pick = torch.randint(len(flat), (self.codebook_size,), device=flat.device)
        codes = flat[pick].clone()
        for _ in range(iters):
            ids = ((flat.unsqueeze(1) - codes.unsqueeze(0)).pow(2).sum(-1)).argmin(-1)
            counts = torch.bincount(ids, minlength=self.codebook_size).float()
            sums = torch.zeros_like(codes).index_add_(0, ids, flat)
            codes = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], codes)
        codes = self._prepare(codes)
        self.codebook.data.copy_(codes)
        if self.ema:
            self.embed_sum.copy_(codes)
            self.cluster_size.fill_(1.0)
        self.initted.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, ids: Tensor) -> None:
        counts = torch.bincount(ids, minlength=self.codebook_size).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, ids, flat)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + self.codebook_size * 1e-5) * n  # Laplace
        self.codebook.copy_(self._prepare(self.embed_sum / smoothed.unsqueeze(1)))
        if self.dead_threshold > 0:
            dead = self.cluster_size < self.dead_threshold
            if dead.any():
                fresh = flat[torch.randint(len(flat), (int(dead.sum()),), device=flat.device)]
                self.codebook[dead] = self._prepare(fresh)
                self.embed_sum[dead] = fresh
                self.cluster_size[dead] = 1.0

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        self.check_input(z)
        flat = self._prepare(z.reshape(-1, self.dim).float())
        if self.training and not bool(self.initted):
            self._kmeans_init(flat.detach())
        ids = self.nearest(flat.detach())
        if self.training and self.ema:
            self._ema_update(flat.detach(), ids)
        code = self._prepare(self.codebook)[ids]
        loss = self.commitment * F.mse_loss(flat, code.detach())
        if not self.ema:
            loss = loss + F.mse_loss(code, flat.detach())
        quantized = straight_through(flat, code).view(z.shape).to(z.dtype)
        usage, perplexity = code_stats(ids, self.codebook_size)
        return quantized, ids.view(z.shape[:-1]), QuantizerAux(loss, usage, perplexity)

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        self.check_ids(ids)
        return self._prepare(self.codebook)[ids]
