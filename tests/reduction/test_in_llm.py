"""FastV / PyramidDrop / ToDRE on a tiny Llama: SDPA runner vs an eager-attention reference."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from mmllm.errors import BudgetError, MMLLMError
from mmllm.reduction import build
from mmllm.reduction.in_llm import DropRunner, generate_with_drops

T, VIS = 14, slice(2, 10)  # 14 positions, visual tokens at 2..9


def inputs():
    embeds = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(1))
    visual = torch.zeros(2, T, dtype=torch.bool)
    visual[:, VIS] = True
    return embeds, torch.ones(2, T, dtype=torch.long), visual


@pytest.mark.parametrize("layer", [0, 2])
def test_fastv_keeps_the_eager_reference_set(layer, tiny):
    lm = tiny.llama()
    embeds, mask, visual = inputs()
    eager = tiny.llama("eager")
    eager.load_state_dict(lm.state_dict())
    with torch.no_grad():
        att = eager(inputs_embeds=embeds, attention_mask=mask, output_attentions=True).attentions[
            layer
        ]
    ref_scores = att[:, :, -1, :].mean(1)[:, VIS]
    expected = ref_scores.topk(3, dim=1).indices.sort(1).values + VIS.start
    runner = DropRunner(lm, build(f"fastv:layer={layer},keep=3").schedule(8))
    runner.prefill(embeds, mask, visual)
    kept_after = runner.kept[layer + 1]
    for row in range(2):
        kept_visual = [p for p in kept_after[row].tolist() if VIS.start <= p < VIS.stop]
        assert kept_visual == expected[row].tolist()
        assert len(kept_after[row]) == T - 8 + 3


def test_keeping_everything_equals_plain_greedy_generation(tiny):
    lm = tiny.llama()
    embeds, mask, visual = inputs()
    ours = generate_with_drops(
        lm, lm.get_input_embeddings(), embeds, mask, visual, [(1, 8)], 6, None
    )
    ref = lm.generate(
        inputs_embeds=embeds,
        attention_mask=mask,
        max_new_tokens=6,
        do_sample=False,
        min_new_tokens=6,
        pad_token_id=0,
    )
    assert torch.equal(ours, ref[:, -6:])


def test_left_padding_is_respected(tiny):
    lm = tiny.llama()
    embeds, mask, visual = inputs()
    mask[1, :2] = 0  # row 1 is left-padded by two positions
    logits = DropRunner(lm, [(1, 8)]).prefill(embeds, mask, visual)
    alone = DropRunner(lm, [(1, 8)]).prefill(embeds[1:, 2:], mask[1:, 2:], visual[1:, 2:])
    torch.testing.assert_close(logits[1:], alone, rtol=1e-4, atol=1e-4)


def test_pdrop_and_todre_schedules(tiny):
    assert build("pdrop:layers=8/16/24,ratios=0.5/0.25/0.125").schedule(196) == [
        (8, 98),
        (16, 49),
        (24, 24),
    ]
    todre = build("todre:16,layer=2")
    assert todre.output_len(196) == 16 and todre.schedule(16) == [(2, 0)]
    lm = tiny.llama()
    embeds, mask, visual = inputs()
    out = generate_with_drops(
        lm,
        lm.get_input_embeddings(),
        embeds,
        mask,
        visual,
        build("pdrop:layers=1/2,ratios=0.5/0.25").schedule(8),
        3,
        None,
    )
    assert out.shape == (2, 3)


def test_errors(tiny):
    with pytest.raises(BudgetError, match="larger than the 8"):
        build("fastv:layer=1,keep=9").output_len(8)
    with pytest.raises(MMLLMError, match="ratios must be"):
        build("pdrop:layers=1/2,ratios=0.2/0.5")
    with pytest.raises(BudgetError, match="outside the LLM's 4 layers"):
        DropRunner(tiny.llama(), [(7, 2)])
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(MMLLMError, match="Llama-style decoders"):
        DropRunner(gpt2, [(1, 2)])


def test_model_generates_with_fastv(tiny):
    from mmllm.processor import MMLLMProcessor

    model = tiny.model("llama", reduction="pool:2x2+fastv:layer=1,keep=2")
    assert model.num_image_tokens() == 4
    proc = MMLLMProcessor.from_model(model)
    from PIL import Image

    batch = proc(
        [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]] * 2,
        [[Image.new("RGB", (32, 32), "red")]] * 2,
    )
    ids = model.generate(**batch, max_new_tokens=3)
    assert ids.shape[0] == 2
    assert (
        model.prefill_logits(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
        ).shape[0]
        == 2
    )
