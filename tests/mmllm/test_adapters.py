"""Adapters: mlp2x_gelu's learned cell embeddings follow each token's source cell."""

import pytest
import torch

from mmllm.adapters import build_adapter
from mmllm.errors import MMLLMError
from mmllm.reduction.types import VisualTokens


def test_cell_embeddings_start_at_zero_and_follow_source_cells(tiny):
    model = tiny.model(adapter="mlp2x_gelu", adapter_kwargs={"positions": 16})  # 4 x 4 grid
    adapter = model.adapter
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 16, model.config.vision_dim, generator=gen)
    tokens = VisualTokens(embeds=feats, grid=(4, 4))
    plain = adapter.token_projector()(feats)
    torch.testing.assert_close(adapter(tokens), plain)  # a fresh table adds nothing
    with torch.no_grad():
        adapter.position.weight.normal_(generator=gen)
    keep = torch.tensor([[15, 0, 7], [3, 3, 9]])  # pruned, reordered, a repeat
    pruned = tokens.gather(keep)
    got = adapter(pruned)
    for b in range(2):  # reference: token by token, the embedding of its source cell
        for k, cell in enumerate(keep[b].tolist()):
            want = plain[b, cell] + adapter.position.weight[cell]
            torch.testing.assert_close(got[b, k], want)


def test_cell_embeddings_survive_save_and_load(tmp_path, tiny):
    from mmllm.modeling import MMLLMForConditionalGeneration

    model = tiny.model(adapter="mlp2x_gelu", adapter_kwargs={"positions": 16})
    with torch.no_grad():
        model.adapter.position.weight.normal_()
    model.save_pretrained(tmp_path)
    llm, tok = tiny.llm("llama")
    loaded = MMLLMForConditionalGeneration.from_pretrained(
        tmp_path, encoder=tiny.encoder(), llm=llm, tokenizer=tok
    )
    assert torch.equal(loaded.adapter.position.weight, model.adapter.position.weight)


def test_cell_embeddings_must_match_the_grid(tiny):
    with pytest.raises(MMLLMError, match=r"4x4 grid: set adapter_kwargs.positions to 16"):
        tiny.model(adapter="mlp2x_gelu", adapter_kwargs={"positions": 49})
    with pytest.raises(MMLLMError, match="positions must be >= 0"):
        build_adapter("mlp2x_gelu", 8, 8, positions=-1)
    adapter = build_adapter("mlp2x_gelu", 8, 8, positions=4)
    with pytest.raises(MMLLMError, match=r"4 grid cells, but these tokens come from a 3x3"):
        adapter(VisualTokens(embeds=torch.zeros(1, 9, 8), grid=(3, 3)))
