import pytest
import torch

from mmllm.errors import MMLLMError
from mmllm.layout import key_bias, size_bias, source_positions, use_biased_attention
from mmllm.modeling import MMLLMConfig


def reference_positions(mask, image_mask, index, n_source):
    """Token by token: text advances by one, image j's token k sits at start_j + index[j, k]."""
    out = torch.zeros_like(mask)
    img = 0
    for b in range(mask.shape[0]):
        pos, k = 0, 0
        for t in range(mask.shape[1]):
            if not mask[b, t]:
                continue
            if image_mask[b, t]:
                if k == 0:
                    start = pos
                out[b, t] = start + index[img, k]
                k += 1
                if k == index.shape[1]:
                    pos, k, img = start + n_source, 0, img + 1
            else:
                out[b, t] = pos
                pos += 1
    return out


def test_source_positions_match_a_token_by_token_reference():
    gen = torch.Generator().manual_seed(0)
    n_source, k = 16, 5
    # row 0: left padding, text, image, text, image, text; row 1: two adjacent images
    layout = [
        "..tttIIIIIttIIIIIt",
        "tIIIIIIIIIIttttttt",
    ]
    mask = torch.tensor([[c != "." for c in row] for row in layout]).long()
    image_mask = torch.tensor([[c == "I" for c in row] for row in layout])
    index = torch.stack(
        [torch.randperm(n_source, generator=gen)[:k].sort().values for _ in range(4)]
    )
    got = source_positions(mask, image_mask, index, n_source)
    assert torch.equal(got, reference_positions(mask, image_mask, index, n_source))
    # unsorted index (a reducer that does not sort): still each token at its cell
    shuffled = index[:, torch.randperm(k, generator=gen)]
    got = source_positions(mask, image_mask, shuffled, n_source)
    assert torch.equal(got, reference_positions(mask, image_mask, shuffled, n_source))


def test_full_tokens_give_the_default_positions():
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    image_mask = torch.tensor([[0, 0, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0]]).bool()
    index = torch.arange(4).expand(2, 4)
    expected = (mask.cumsum(-1) - 1).clamp_min(0)
    assert torch.equal(source_positions(mask, image_mask, index, 4), expected)


def test_size_bias_is_log_size_on_visual_tokens_only():
    image_mask = torch.tensor([[False, True, True, False]])
    bias = size_bias(image_mask, torch.tensor([[4, 1]]))
    assert torch.allclose(bias, torch.tensor([[0.0, torch.log(torch.tensor(4.0)), 0.0, 0.0]]))


def test_proportional_attention_equals_attending_to_size_copies(tiny):
    """ToMe's defining property: a token of size s with log s on its logits is attended exactly
    as s identical copies of it (same key, value and position) would be."""
    llm = tiny.llama(layers=1)
    use_biased_attention(llm)
    x = torch.randn(1, 5, 32, generator=torch.Generator().manual_seed(1))
    merged = x  # token 1 stands for 3 copies
    copies = torch.cat([x[:, :1], x[:, 1:2].expand(1, 3, 32), x[:, 2:]], dim=1)
    pos_merged = torch.tensor([[0, 1, 2, 3, 4]])
    pos_copies = torch.tensor([[0, 1, 1, 1, 2, 3, 4]])
    with torch.no_grad():
        with key_bias(torch.tensor([[0.0, torch.log(torch.tensor(3.0)), 0, 0, 0]])):
            got = llm.model(inputs_embeds=merged, position_ids=pos_merged).last_hidden_state
        want = llm.model(inputs_embeds=copies, position_ids=pos_copies).last_hidden_state
        plain = llm.model(inputs_embeds=merged, position_ids=pos_merged).last_hidden_state
    # the text tokens after the merged one see the same attention
    assert torch.allclose(got[:, 2:], want[:, 4:], atol=1e-5)
    assert not torch.allclose(plain[:, 2:], want[:, 4:], atol=1e-3)  # without the bias: not


def test_no_bias_is_plain_sdpa(tiny):
    llm = tiny.llama(layers=1)
    x = torch.randn(2, 6, 32)
    mask = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        before = llm.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        use_biased_attention(llm)
        after = llm.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
        with key_bias(torch.zeros(2, 6)):
            zero = llm.model(inputs_embeds=x, attention_mask=mask).last_hidden_state
    assert torch.allclose(before, after) and torch.allclose(before[:, 1:], zero[:, 1:], atol=1e-6)


def test_bad_visual_positions_value_is_a_clear_error():
    with pytest.raises(MMLLMError, match="visual_positions"):
        MMLLMConfig(visual_positions="sorted")


def test_packed_layout_is_what_vllm_serves_and_is_restored(conversations, images, tiny):
    from mmllm.layout import packed_layout
    from mmllm.processor import MMLLMProcessor

    model = tiny.model(reduction="coverage:4")
    proc = MMLLMProcessor.from_model(model)
    gen = proc([c[:1] for c in conversations], [[im] for im in images])
    with packed_layout(model):
        packed = model.prompt(**gen)
    restored = model.prompt(**gen)
    assert packed.position_ids is None and packed.key_bias is None
    assert restored.position_ids is not None and restored.key_bias is not None
