"""A discrete tokenizer as the model's vision path (ids -> code vectors -> adapter -> LLM)."""

import pytest
import torch

from mmllm.encoders import build_encoder
from mmllm.errors import MMLLMError
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


def discrete_model(tmp_path, tiny, **adapter_kwargs):
    torch.manual_seed(0)
    tok = build_tokenizer(
        TokenizerConfig(kind="conv2d", image_size=32, channels=32, latent_dim=4, downsample=8)
    )
    tok.save_pretrained(tmp_path / "tok")
    llm, tokenizer = tiny.llm("llama")
    config = MMLLMConfig(
        encoder=f"tokenizer:{tmp_path / 'tok'}",
        llm="custom",
        image_size=32,
        adapter="vocab_rows",
        adapter_kwargs=adapter_kwargs,
    )
    encoder = build_encoder(config.encoder)
    return MMLLMForConditionalGeneration(config, encoder=encoder, llm=llm, tokenizer=tokenizer)


def test_ids_read_as_new_vocabulary_rows(tmp_path, tiny, conversations, images):
    model = discrete_model(tmp_path, tiny, num_codes=1000)
    rows = model.adapter.rows.weight.detach()
    codes = model.encoder.tokenizer.quantizer.ids_to_codes(torch.arange(1000))
    # rows start as an affine image of the codebook, at the scale of the text rows
    design = torch.cat([codes, torch.ones(1000, 1)], 1).double()
    fit = torch.linalg.lstsq(design, rows.double()).solution
    assert (design @ fit - rows.double()).abs().max() < 1e-4
    text = model.llm.get_input_embeddings().weight.detach()
    assert 0.3 < rows.std() / text.std() < 3
    tokens = model.encoder.encode(images)
    torch.testing.assert_close(model.adapter(tokens), rows[tokens.ids])
    batch = MMLLMProcessor.from_model(model)(conversations, [[im] for im in images], train=True)
    model(**batch).loss.backward()
    assert model.adapter.rows.weight.grad is not None
    # a merging reducer keeps valid ids (each merged token reads its destination's row)
    model.set_reduction("tome:r=4")
    batch = MMLLMProcessor.from_model(model)(conversations, [[im] for im in images], train=True)
    assert model(**batch).loss.isfinite()


def test_vocab_rows_errors(tmp_path, tiny):
    with pytest.raises(MMLLMError, match="num_codes to 1000"):
        discrete_model(tmp_path, tiny, num_codes=12)
    llm, tokenizer = tiny.llm("llama")
    with pytest.raises(MMLLMError, match="discrete tokenizer encoder"):
        MMLLMForConditionalGeneration(
            MMLLMConfig(
                encoder="custom",
                llm="custom",
                image_size=32,
                adapter="vocab_rows",
                adapter_kwargs={"num_codes": 8},
            ),
            encoder=tiny.encoder(),
            llm=llm,
            tokenizer=tokenizer,
        )


def test_default_tokenizer_is_the_shipped_generators():
    """``tokenizer:default`` loads the image tokenizer that ships with the default generator, so
    a discrete-token checkpoint does not depend on the directory it is loaded from."""
    from mmllm.default_model import default_generator_path

    encoder = build_encoder("tokenizer:default")
    shipped = build_encoder(f"tokenizer:{default_generator_path() / 'image_tokenizer'}")
    assert encoder.grid == shipped.grid and encoder.image_size == shipped.image_size
    pixels = torch.rand(1, 3, encoder.image_size, encoder.image_size)
    assert torch.equal(encoder(pixels).ids, shipped(pixels).ids)
