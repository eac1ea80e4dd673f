import math

import pytest
import torch

from mmllm.errors import BudgetError
from mmllm.reduction import VisualTokens, build


def reference_pool(embeds: torch.Tensor, h: int, w: int, s: int):
    """Plain loop: mean of each SxS window (clipped at the edges), its size and centre index."""
    b, _, d = embeds.shape
    grid = embeds.view(b, h, w, d)
    out, sizes, centres = [], [], []
    for i in range(0, h, s):
        for j in range(0, w, s):
            win = grid[:, i : i + s, j : j + s].reshape(b, -1, d)
            out.append(win.mean(1))
            sizes.append(win.shape[1])
            centres.append(min(i + (s - 1) // 2, h - 1) * w + min(j + (s - 1) // 2, w - 1))
    return torch.stack(out, 1), torch.tensor(sizes, dtype=torch.float32), torch.tensor(centres)


@pytest.mark.parametrize(("h", "w", "s"), [(14, 14, 2), (7, 7, 2), (7, 5, 3), (6, 6, 3), (5, 9, 4)])
def test_pool_matches_loop_reference(h, w, s):
    embeds = torch.randn(3, h * w, 5, generator=torch.Generator().manual_seed(0))
    tokens = VisualTokens(embeds=embeds, grid=(h, w))
    reducer = build(f"pool:{s}x{s}")
    out = reducer(tokens)
    ref, sizes, centres = reference_pool(embeds, h, w, s)
    assert (
        out.num_tokens == reducer.output_len(h * w, (h, w)) == math.ceil(h / s) * math.ceil(w / s)
    )
    torch.testing.assert_close(out.embeds, ref)
    assert torch.equal(out.size[0], sizes) and torch.equal(out.index[2], centres)
    assert out.size.sum(1).eq(h * w).all()


def test_pool_sums_attention_mass_and_averages_keys():
    attn = torch.rand(1, 16)
    keys = torch.randn(1, 16, 3)
    out = build("pool:2x2")(VisualTokens(embeds=torch.randn(1, 16, 2), attn_to_cls=attn, keys=keys))
    torch.testing.assert_close(out.attn_to_cls.sum(), attn.sum())
    torch.testing.assert_close(out.keys[0, 0], keys[0, [0, 1, 4, 5]].mean(0))


def test_pool_needs_the_full_grid():
    with pytest.raises(BudgetError, match="put pool first"):
        build("random:10+pool:2x2")(VisualTokens(embeds=torch.randn(1, 16, 2)))
    with pytest.raises(BudgetError, match="form none"):
        build("pool:2x2").output_len(10)


def test_random_is_seeded_sorted_and_per_row():
    tokens = VisualTokens(embeds=torch.randn(4, 49, 3))
    a, b = build("random:10,seed=7")(tokens), build("random:10,seed=7")(tokens)
    c = build("random:10,seed=8")(tokens)
    assert torch.equal(a.index, b.index) and not torch.equal(a.index, c.index)
    assert torch.equal(a.index, a.index.sort(1).values)
    assert not all(torch.equal(a.index[0], a.index[i]) for i in range(1, 4))
    torch.testing.assert_close(
        a.embeds, tokens.embeds.gather(1, a.index[..., None].expand(-1, -1, 3))
    )


def test_chain_keeps_index_and_size_through_stages():
    tokens = VisualTokens(embeds=torch.randn(2, 36, 4), grid=(6, 6))
    pooled = build("pool:2x2")(tokens)
    out = build("pool:2x2+random:4,seed=1")(tokens)
    assert out.size.eq(4).all()
    # each kept token's index is one of the pooled window centres, with its features intact
    for row in range(2):
        for k in range(4):
            pos = (pooled.index[row] == out.index[row, k]).nonzero().item()
            torch.testing.assert_close(out.embeds[row, k], pooled.embeds[row, pos])


def test_identity_and_bf16():
    tokens = VisualTokens(embeds=torch.randn(2, 16, 4, dtype=torch.bfloat16))
    assert build("identity")(tokens) is tokens
    out = build("pool:2x2")(tokens)
    assert out.embeds.dtype == torch.bfloat16
