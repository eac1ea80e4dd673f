"""The continuous-encoder interface: images in, :class:`VisualTokens` out."""

from __future__ import annotations

import abc
from collections.abc import Sequence

import torch
from torch import nn

from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.images import ImageLike, to_pixels


class VisionEncoder(nn.Module, abc.ABC):
    """A frozen-or-trainable image encoder producing a grid of token features.

    Subclasses set ``image_size``, ``hidden_size``, ``mean``/``std`` and implement
    :meth:`forward` on normalised pixels ``[B, 3, H, W]``.
    """

    image_size: int
    hidden_size: int
    mean: Sequence[float]
    std: Sequence[float]
    name: str = "encoder"

    @property
    @abc.abstractmethod
    def grid(self) -> tuple[int, int]:
        """``(H, W)`` of the token grid at ``image_size``."""

    @property
    def num_tokens(self) -> int:
        h, w = self.grid
        return h * w

    def preprocess(self, images: Sequence[ImageLike] | ImageLike) -> torch.Tensor:
        """Images (paths, bytes, PIL) to normalised pixels at this encoder's size."""
        return to_pixels(images, self.image_size, self.mean, self.std)

    @abc.abstractmethod
    def forward(self, pixels: torch.Tensor) -> VisualTokens:
        """Encode normalised pixels ``[B, 3, H, W]``."""

    def encode(self, images: Sequence[ImageLike] | ImageLike) -> VisualTokens:
        """Encode images given as paths, bytes or PIL images."""
        pixels = self.preprocess(images).to(next(self.parameters()).device)
        return self(pixels)

    def trainable_state_names(self) -> list[str]:
        """The parameters the tokens depend on: what fine-tuning trains and a checkpoint stores.

        Found once by a backward pass from the tokens of a blank image, so parts no token reads
        (an ImageNet classifier, a pooler, CLIP's post-layernorm, layers after the feature layer)
        are left out for every encoder without a per-family list.
        """
        cached = getattr(self, "_token_param_names", None)
        if cached is None:
            named = list(self.named_parameters())
            flags = [p.requires_grad for _, p in named]
            for _, p in named:
                p.requires_grad_(True)
            first = named[0][1] if named else None
            pixels = torch.zeros(
                1,
                3,
                self.image_size,
                self.image_size,
                device=first.device if first is not None else None,
                dtype=first.dtype if first is not None else None,
            )
            try:
                with torch.enable_grad():
                    tokens = self(pixels).embeds
                grads = (
                    torch.autograd.grad(tokens.sum(), [p for _, p in named], allow_unused=True)
                    if tokens.requires_grad
                    else [None] * len(named)
                )
            finally:
                for (_, p), flag in zip(named, flags, strict=True):
                    p.requires_grad_(flag)
            cached = [name for (name, _), g in zip(named, grads, strict=True) if g is not None]
            self._token_param_names = cached
        return list(cached)

    def check_pixels(self, pixels: torch.Tensor) -> None:
        expected = (3, self.image_size, self.image_size)
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(
                f"{self.name} expects pixels [B, {expected[0]}, {expected[1]}, {expected[2]}], "
                f"got {tuple(pixels.shape)}; use encoder.preprocess(images)"
            )
