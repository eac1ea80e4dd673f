"""A 2D convolutional tokenizer: an N x N grid of discrete tokens (VQGAN-style, small).

Esser et al., "Taming Transformers" (VQGAN, arXiv:2012.09841) without the adversarial and
perceptual losses (they need pretrained discriminators/LPIPS weights): strided convolutions with
residual blocks down to ``image_size / downsample`` per side, a quantizer, and the mirror-image
decoder with nearest-neighbour upsampling.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.discrete.base import DiscreteTokenizer, TokenizerConfig


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class ConvTokenizer(DiscreteTokenizer):
    """Pixels -> ``(S/f)^2`` tokens -> pixels, ``f = downsample`` (a power of two)."""

    def __init__(self, config: TokenizerConfig):
        super().__init__(config)
        f, c = config.downsample, config.channels
        if f < 1 or f & (f - 1) or config.image_size % f:
            raise MMLLMError(
                f"downsample must be a power of two dividing image_size, got {f} for "
                f"{config.image_size}"
            )
        stages = int(math.log2(f))
        down: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1)]
        for _ in range(stages):
            down += [nn.Conv2d(c, c, 4, stride=2, padding=1), ResBlock(c)]
        down += [nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, config.latent_dim, 1)]
        self.encoder = nn.Sequential(*down)
        up: list[nn.Module] = [nn.Conv2d(config.latent_dim, c, 3, padding=1), ResBlock(c)]
        for _ in range(stages):
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
            up += [ResBlock(c)]
        up += [nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.downsample
        return side, side

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def encode_latents(self, pixels: Tensor) -> Tensor:
        return self.encoder(pixels).flatten(2).transpose(1, 2)

    def decode_latents(self, codes: Tensor) -> Tensor:
        h, w = self.grid
        return self.decoder(codes.transpose(1, 2).reshape(len(codes), -1, h, w))
