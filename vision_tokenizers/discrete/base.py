"""Discrete tokenizers: images -> ids (``encode``), ids -> images (``decode``), safetensors I/O.

A tokenizer is an encoder to continuous latents, a quantizer from
:mod:`mmllm.vision_tokenizers.quantizers`, and a decoder back to pixels. Pixels are ``[B, 3, H,
W]`` in ``[-1, 1]``. ``encode`` returns :class:`VisualTokens` with ``ids`` and the code vectors as
``embeds`` (so reducers and adapters work on discrete tokens unchanged). A folder holds
``config.json`` and ``model.safetensors``; nothing else is read.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmllm.errors import MMLLMError
from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.images import ImageLike, to_pixels
from mmllm.vision_tokenizers.quantizers import Quantizer, QuantizerAux, build_quantizer

HALF = (0.5, 0.5, 0.5)
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class TokenizerConfig:
    """Shape of a tokenizer; ``quantizer`` is ``build_quantizer``'s name and keyword arguments."""

    kind: str = "conv2d"
    image_size: int = 64
    channels: int = 64
    latent_dim: int = 8
    downsample: int = 8  # conv2d: grid side = image_size / downsample
    num_latents: int = 32  # titok: 1D token count
    patch_size: int = 8  # titok
    depth: int = 4  # titok: transformer layers in encoder and decoder
    heads: int = 4
    quantizer: dict = field(default_factory=lambda: {"name": "fsq", "levels": [8, 5, 5, 5]})


@dataclass
class TokenizerOutput:
    reconstruction: Tensor
    ids: Tensor
    aux: QuantizerAux
    latents: Tensor


class DiscreteTokenizer(nn.Module):
    """Base of the 2D and 1D tokenizers: subclasses implement the latent encoder and decoder."""

    #: True where the model is centred on the training images' mean (``fit_pixel_mean``), which
    #: the trainer then computes before the first step.
    centres_pixels = False

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        q = dict(config.quantizer)
        name = q.pop("name")
        q.setdefault("dim", config.latent_dim)
        self.quantizer: Quantizer = build_quantizer(name, **q)
        if self.quantizer.dim != config.latent_dim:
            raise MMLLMError(
                f"quantizer width {self.quantizer.dim} != latent_dim {config.latent_dim}"
            )

    # -- to implement ----------------------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        raise NotImplementedError

    @property
    def grid(self) -> tuple[int, int]:
        raise NotImplementedError

    def encode_latents(self, pixels: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> ``[B, N, latent_dim]``."""
        raise NotImplementedError

    def decode_latents(self, codes: Tensor) -> Tensor:
        """``[B, N, latent_dim]`` -> ``[B, 3, H, W]``."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------------------
    def check_pixels(self, pixels: Tensor) -> None:
        size = self.config.image_size
        if pixels.dim() != 4 or tuple(pixels.shape[1:]) != (3, size, size):
            raise MMLLMError(
                f"tokenizer expects pixels [B, 3, {size}, {size}] in [-1, 1], got "
                f"{tuple(pixels.shape)}; use tokenizer.preprocess(images)"
            )

    def preprocess(self, images: Sequence[ImageLike] | ImageLike) -> Tensor:
        """Images -> pixels ``[B, 3, S, S]`` in ``[-1, 1]``."""
        return to_pixels(images, self.config.image_size, HALF, HALF)

    def forward(self, pixels: Tensor) -> TokenizerOutput:
        self.check_pixels(pixels)
        latents = self.encode_latents(pixels)
        quantized, ids, aux = self.quantizer(latents)
        return TokenizerOutput(self.decode_latents(quantized), ids, aux, latents)

    @torch.no_grad()
    def encode(self, images: Sequence[ImageLike] | ImageLike | Tensor) -> VisualTokens:
        """Images (or pixels) -> ``VisualTokens(ids=[B, N], embeds=codes)``."""
        pixels = images if isinstance(images, Tensor) else self.preprocess(images)
        self.check_pixels(pixels)
        quantized, ids, _ = self.quantizer(self.encode_latents(pixels))
        if ids.dim() != 2:
            raise MMLLMError(
                "encode gives one id per token; multi-id quantizers (rvq, group) return "
                "[B, N, S] ids from forward() instead"
            )
        return VisualTokens(embeds=quantized, ids=ids, grid=self.grid, source=type(self).__name__)

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """ids ``[B, N]`` (``[B, N, S]`` for multi-id quantizers) -> pixels in ``[-1, 1]``."""
        if ids.dim() < 2 or ids.shape[1] != self.num_tokens:
            raise MMLLMError(
                f"this tokenizer decodes {self.num_tokens} tokens per image, got ids of shape "
                f"{tuple(ids.shape)}"
            )
        return self.decode_latents(self.quantizer.ids_to_codes(ids)).clamp(-1, 1)

    # -- save / load -----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, folder / WEIGHTS_FILE)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DiscreteTokenizer:
        from mmllm.modeling import refuse_pickles

        folder = Path(folder)
        if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise MMLLMError(f"{folder}: not a tokenizer folder ({CONFIG_FILE} + {WEIGHTS_FILE})")
        refuse_pickles(folder)
        config = TokenizerConfig(**json.loads((folder / CONFIG_FILE).read_text()))
        model = build_tokenizer(config)
        model.load_state_dict(load_file(folder / WEIGHTS_FILE), strict=True)
        return model.eval()


def build_tokenizer(config: TokenizerConfig) -> DiscreteTokenizer:
    from mmllm.vision_tokenizers.discrete.conv2d import ConvTokenizer
    from mmllm.vision_tokenizers.discrete.titok import TiTokTokenizer

    kinds = {"conv2d": ConvTokenizer, "titok": TiTokTokenizer}
    if config.kind not in kinds:
        raise MMLLMError(f"unknown tokenizer kind '{config.kind}'; known: {', '.join(kinds)}")
    return kinds[config.kind](config)
