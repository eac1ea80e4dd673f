"""A 1D latent-query tokenizer (TiTok) with nested tail dropout (FlexTok / One-D-Piece).

Yu et al., "An Image is Worth 32 Tokens for Reconstruction and Generation" (TiTok,
arXiv:2406.07550): a ViT over image patches plus K learned latent tokens; only the latent
tokens' outputs are quantized; the decoder ViT reads the K codes plus one mask token per patch
and predicts the patches' pixels. Nested dropout (FlexTok, arXiv:2502.13967; One-D-Piece,
arXiv:2501.10064): in training, a random tail of the K tokens is replaced by a learned "absent"
token, so the decoder reconstructs from any prefix and quality can grow with the prefix length
(at the small widths and budgets of ``mmllm bench tokenizers`` it does not yet: the first token
carries nearly everything; docs/generation.md, section 6).

Deviations: pixels are predicted directly (TiTok's two-stage training through a VQGAN proxy
code is not used); plain ``nn.TransformerEncoder`` blocks. Pixels are centred on the training
set's mean image (``pixel_mean``, set by :meth:`fit_pixel_mean` before training, saved with the
weights): the encoder reads ``x - mean`` and the decoder predicts ``x - mean``. Without it, at the
small widths trained here, the latent tokens' attention averages over a background shared by
every image, their outputs barely depend on the image, and training sits on the "mean image"
plateau for hundreds of steps with ~1% of the codebook in use (tokenizer benchmark, width 32,
450 steps: codebook usage 1.3% -> 13.1% and training loss 0.20 -> 0.145 with centring).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.discrete.base import DiscreteTokenizer, TokenizerConfig


def _transformer(width: int, depth: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class TiTokTokenizer(DiscreteTokenizer):
    """Pixels -> K 1D tokens -> pixels; ``decode`` accepts any prefix length ``1..K``."""

    centres_pixels = True

    def __init__(self, config: TokenizerConfig):
        super().__init__(config)
        p, w, k = config.patch_size, config.channels, config.num_latents
        if config.image_size % p:
            raise MMLLMError(f"patch_size {p} must divide image_size {config.image_size}")
        self.num_patches = (config.image_size // p) ** 2
        self.patchify = nn.Conv2d(3, w, p, stride=p)
        self.patch_pos = nn.Parameter(torch.randn(1, self.num_patches, w) * 0.02)
        self.latents = nn.Parameter(torch.randn(1, k, w) * 0.02)
        self.encoder = _transformer(w, config.depth, config.heads)
        self.to_latent = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, config.latent_dim))
        self.from_latent = nn.Linear(config.latent_dim, w)
        self.absent = nn.Parameter(torch.zeros(1, 1, w))  # a dropped tail token
        self.latent_pos = nn.Parameter(torch.randn(1, k, w) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.decoder = _transformer(w, config.depth, config.heads)
        self.to_pixels = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, 3 * p * p))
        size = config.image_size
        self.register_buffer("pixel_mean", torch.zeros(1, 3, size, size))

    @torch.no_grad()
    def fit_pixel_mean(self, pixels: Iterable[Tensor]) -> None:
        """Set the centring image to the mean of ``pixels`` (batches ``[B, 3, S, S]``)."""
        total, count = torch.zeros_like(self.pixel_mean), 0
        for batch in pixels:
            self.check_pixels(batch)
            total += batch.to(total).sum(0, keepdim=True)
            count += len(batch)
        if not count:
            raise MMLLMError("fit_pixel_mean needs at least one image")
        self.pixel_mean.copy_(total / count)

    @property
    def grid(self) -> tuple[int, int]:
        return 1, self.config.num_latents

    @property
    def num_tokens(self) -> int:
        return self.config.num_latents

    def encode_latents(self, pixels: Tensor) -> Tensor:
        patches = self.patchify(pixels - self.pixel_mean).flatten(2).transpose(1, 2)
        patches = patches + self.patch_pos
        x = torch.cat([patches, self.latents.expand(len(pixels), -1, -1)], dim=1)
        return self.to_latent(self.encoder(x)[:, self.num_patches :])

    def decode_latents(self, codes: Tensor) -> Tensor:
        b, k = codes.shape[:2]
        tokens = self.from_latent(codes)
        if k < self.num_tokens:  # a prefix: the tail is absent
            tail = self.absent.expand(b, self.num_tokens - k, -1)
            tokens = torch.cat([tokens, tail], dim=1)
        elif self.training:  # nested dropout: keep a random prefix per image
            keep = torch.randint(1, self.num_tokens + 1, (b, 1), device=codes.device)
            dropped = torch.arange(self.num_tokens, device=codes.device) >= keep
            tokens = torch.where(dropped.unsqueeze(-1), self.absent, tokens)
        x = torch.cat(
            [tokens + self.latent_pos, self.mask_token + self.patch_pos.expand(b, -1, -1)], 1
        )
        out = self.to_pixels(self.decoder(x)[:, self.num_tokens :])  # [B, P, 3 * p * p]
        p, side = self.config.patch_size, self.config.image_size // self.config.patch_size
        out = out.view(b, side, side, 3, p, p).permute(0, 3, 1, 4, 2, 5)
        return out.reshape(b, 3, side * p, side * p) + self.pixel_mean

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """ids ``[B, k]`` for any prefix ``1 <= k <= K`` -> pixels in ``[-1, 1]``."""
        if ids.dim() < 2 or not 1 <= ids.shape[1] <= self.num_tokens:
            raise MMLLMError(
                f"this tokenizer decodes 1..{self.num_tokens} tokens per image, got ids of shape "
                f"{tuple(ids.shape)}"
            )
        return self.decode_latents(self.quantizer.ids_to_codes(ids)).clamp(-1, 1)
