"""Shared test setup: GPU tests skip cleanly without CUDA, vLLM tests without the serve extra."""

import importlib.util
import os

import torch

if not torch.cuda.is_available():
    # Triton kernels are tested interpreted on CPU. Triton reads this once, when it is first
    # imported (transformers imports it), so it is set before anything else loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
from PIL import Image
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from mmllm.vision_tokenizers import HFVisionEncoder

CORPUS = [
    "What colour is the circle? red",
    "How many stars are there? 3",
    "Is there a blue square? yes",
    "Describe the image briefly. a red circle and a green star",
    "Where is the cat? top left",
] * 20
SPECIALS = ["<unk>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_vllm = pytest.mark.skip(reason="needs the [serve] extra (vLLM)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "vllm" in item.keywords and importlib.util.find_spec("vllm") is None:
            item.add_marker(no_vllm)


def train_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A small tokenizer trained here: SentencePiece-style Unigram (Llama) or byte-level BPE."""
    if kind == "sentencepiece":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(
            vocab_size=120, special_tokens=SPECIALS, unk_token="<unk>"
        )
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=300,
            special_tokens=SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"],
    )


def tiny_llm(family: str):
    torch.manual_seed(0)
    tok = train_tokenizer("sentencepiece" if family == "llama" else "bpe")
    v = len(tok)
    if family == "llama":
        cfg = LlamaConfig(
            vocab_size=v,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        model = LlamaForCausalLM(cfg)
    elif family == "qwen2":
        cfg = Qwen2Config(
            vocab_size=v,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
        )
        model = Qwen2ForCausalLM(cfg)
    else:
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=v, n_embd=32, n_layer=2, n_head=4, n_positions=256)
        )
    model.config.eos_token_id = tok.eos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def tiny_llama(attn: str = "sdpa", layers: int = 4):
    """A tiny random Llama with a 50-token vocabulary (no tokenizer), for attention-level tests."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=50,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attn_implementation=attn,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_encoder():
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=24,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
    )
    return HFVisionEncoder(CLIPVisionModel(cfg))


@pytest.fixture
def images():
    return [Image.new("RGB", (40, 40), "red"), Image.effect_noise((32, 32), 60).convert("RGB")]


@pytest.fixture
def conversations():
    return [
        [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
        ],
        [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "How many stars?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "3"}]},
        ],
    ]


@pytest.fixture
def tiny():
    """Builders for tiny parts: ``tiny.llm(family)``, ``tiny.encoder()``, ``tiny.model(...)``."""

    class Tiny:
        llm = staticmethod(tiny_llm)
        llama = staticmethod(tiny_llama)
        encoder = staticmethod(tiny_encoder)

        @staticmethod
        def model(family="llama", **config):
            from mmllm.modeling import MMLLMConfig, MMLLMForConditionalGeneration

            llm, tok = tiny_llm(family)
            cfg = MMLLMConfig(encoder="custom", llm="custom", image_size=32, **config)
            return MMLLMForConditionalGeneration(
                cfg, encoder=tiny_encoder(), llm=llm, tokenizer=tok
            )

    return Tiny
