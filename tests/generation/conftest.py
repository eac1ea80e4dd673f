"""Tiny generators: a random tiny Llama + a random tiny conv tokenizer (16 tokens, 9 codes)."""

import pytest
import torch

from mmllm.generation.model import GeneratorConfig, ImageGenerator
from mmllm.vision_tokenizers.discrete import TokenizerConfig, build_tokenizer


def tiny_image_tokenizer():
    torch.manual_seed(0)
    config = TokenizerConfig(
        kind="conv2d",
        image_size=16,
        channels=8,
        latent_dim=2,
        downsample=4,
        quantizer={"name": "fsq", "levels": [3, 3]},
    )
    return build_tokenizer(config).eval()


@pytest.fixture
def image_tokenizer():
    return tiny_image_tokenizer()


@pytest.fixture
def generator(tiny):
    llm, tok = tiny.llm("llama")
    return ImageGenerator(GeneratorConfig(llm="custom"), tiny_image_tokenizer(), llm, tok).eval()
