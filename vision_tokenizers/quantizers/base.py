"""The quantizer contract: ``quantized, ids, aux = q(z)`` and ``q.ids_to_codes(ids)``.

``z`` is channel-last ``[..., dim]``. ``quantized`` has ``z``'s shape and carries the
straight-through gradient (forward: the code; backward: identity to ``z``). ``ids`` are integer
code indices ``[...]`` (or ``[..., S]`` for multi-codebook quantizers: residual stages, groups).
``aux`` holds the loss term to add to training (commitment / entropy; zero where the method
needs none) and this batch's codebook usage and perplexity, the numbers that show collapse.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmllm.errors import MMLLMError


@dataclass
class QuantizerAux:
    """Training loss term and codebook statistics of one call."""

    loss: Tensor
    usage: float
    perplexity: float


def code_stats(ids: Tensor, codebook_size: int) -> tuple[float, float]:
    """Fraction of the codebook used by ``ids`` and the perplexity ``exp(H)`` of their histogram."""
    _, counts = torch.unique(ids.reshape(-1), return_counts=True)
    p = counts.double() / counts.sum()
    perplexity = float(torch.exp(-(p * p.log()).sum()))
    return len(counts) / float(codebook_size), perplexity


def straight_through(z: Tensor, code: Tensor) -> Tensor:
    """The code in the forward pass, the identity to ``z`` in the backward pass."""
    return z + (code - z).detach()


class Quantizer(nn.Module):
    """Base class: subclasses set ``dim`` and ``codebook_size`` and implement both methods."""

    dim: int
    codebook_size: int

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, QuantizerAux]:
        raise NotImplementedError

    def ids_to_codes(self, ids: Tensor) -> Tensor:
        raise NotImplementedError

    def check_input(self, z: Tensor) -> None:
        if z.shape[-1] != self.dim:
            raise MMLLMError(
                f"{type(self).__name__} expects channel-last input [..., {self.dim}], "
                f"got {tuple(z.shape)}"
            )

    def check_ids(self, ids: Tensor, size: int | None = None) -> None:
        size = size or self.codebook_size
        if ids.dtype.is_floating_point:
            raise MMLLMError(f"ids must be integers, got {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= size):
            raise MMLLMError(
                f"ids out of codebook range: min {int(ids.min())}, max {int(ids.max())}, "
                f"codebook size {size}"
            )
