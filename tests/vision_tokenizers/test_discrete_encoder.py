"""A discrete tokenizer as the model's vision path (ids -> code vectors -> adapter -> LLM)."""

import torch

from mmllm.encoders import build_encoder
from mmllm.modeling import MMLLMConfig, MMLLMForConditionalGeneration
from mmllm.processor import MMLLMProcessor
from mmllm.vision_tokenizers.discrete import TokenizerConfig, build_tokenizer


def test_model_reads_discrete_tokens(tmp_path, tiny, conversations, images):
    torch.manual_seed(0)
    tok = build_tokenizer(
        TokenizerConfig(kind="conv2d", image_size=32, channels=32, latent_dim=4, downsample=8)
    )
    tok.save_pretrained(tmp_path)
    encoder = build_encoder(f"tokenizer:{tmp_path}")
    assert encoder.num_tokens == 16 and encoder.hidden_size == 4
    tokens = encoder.encode(images)
    assert tokens.ids.shape == (2, 16)
    torch.testing.assert_close(tokens.embeds, tok.quantizer.ids_to_codes(tokens.ids))
    llm, tokenizer = tiny.llm("llama")
    model = MMLLMForConditionalGeneration(
        MMLLMConfig(encoder=f"tokenizer:{tmp_path}", llm="custom", image_size=32),
        encoder=encoder,
        llm=llm,
        tokenizer=tokenizer,
    )
    batch = MMLLMProcessor.from_model(model)(conversations, [[im] for im in images], train=True)
    out = model(**batch)
    out.loss.backward()
    assert model.adapter.net[0].weight.grad is not None
    assert all(p.grad is None for p in encoder.parameters())
