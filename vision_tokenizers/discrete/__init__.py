"""Discrete image tokenizers: a 2D conv grid tokenizer and a 1D TiTok-style tokenizer."""

from mmllm.vision_tokenizers.discrete.base import (
    DiscreteTokenizer,
    TokenizerConfig,
    TokenizerOutput,
    build_tokenizer,
)
from mmllm.vision_tokenizers.discrete.conv2d import ConvTokenizer
from mmllm.vision_tokenizers.discrete.titok import TiTokTokenizer

__all__ = [
    "ConvTokenizer",
    "DiscreteTokenizer",
    "TiTokTokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "build_tokenizer",
]
