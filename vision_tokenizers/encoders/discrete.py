"""A discrete tokenizer as the model's vision path: ids embedded through their codebook vectors.

Understanding from discrete tokens (TokenFlow, SEED): the tokens the LLM reads are the code
vectors of the ids (``VisualTokens.embeds``; ``ids`` ride along for reducers and logging), and
the model's adapter maps them into the LLM, exactly as for a continuous encoder.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.discrete.base import HALF, DiscreteTokenizer
from mmllm.vision_tokenizers.encoders.base import VisionEncoder


class DiscreteTokenizerEncoder(VisionEncoder):
    """Wrap a trained :class:`DiscreteTokenizer` (frozen) as a :class:`VisionEncoder`."""

    mean = HALF
    std = HALF

    def __init__(self, tokenizer: DiscreteTokenizer):
        super().__init__()
        self.tokenizer = tokenizer.eval().requires_grad_(False)
        self.image_size = tokenizer.config.image_size
        self.hidden_size = tokenizer.quantizer.dim
        self.name = f"{type(tokenizer).__name__} (discrete)"

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> DiscreteTokenizerEncoder:
        return cls(DiscreteTokenizer.from_pretrained(folder))

    @property
    def grid(self) -> tuple[int, int]:
        return self.tokenizer.grid

    def forward(self, pixels: torch.Tensor) -> VisualTokens:
        self.check_pixels(pixels)
        return self.tokenizer.encode(pixels).replace(source=self.name)
