import math

import pytest
import torch

from mmllm.errors import BudgetError
from mmllm.reduction import VisualTokens, build


def reference_pitome(x: torch.Tensor, size: torch.Tensor, r: int, margin: float):
    """Plain PiToMe on one row, written from the paper with Python loops."""
    n = x.shape[0]

    def cos(i, j):
        return float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0))

    def elu(v):
        return v if v > 0 else math.exp(v) - 1

    energy = [sum(elu(cos(i, j) - margin) for j in range(n)) / n for i in range(n)]
    ranked = sorted(range(n), key=lambda i: (-energy[i], i))
    set_a, set_b = ranked[: 2 * r : 2], ranked[1 : 2 * r : 2]
    feats = {i: x[i].double() * float(size[i]) for i in range(n)}
    sizes = {i: float(size[i]) for i in range(n)}
    for i in set_a:
        dst = max(set_b, key=lambda j: (cos(i, j), -j))
        feats[dst] += feats.pop(i)
        sizes[dst] += sizes.pop(i)
    keep = sorted(feats)
    return keep, torch.stack([feats[i] / sizes[i] for i in keep]), [sizes[i] for i in keep]


@pytest.mark.parametrize(
    ("n", "r", "margin"), [(10, 3, 0.9), (11, 5, 0.5), (16, 4, 0.0), (7, 1, 0.9)]
)
def test_matches_reference(n, r, margin):
    gen = torch.Generator().manual_seed(n * 7 + r)
    x = torch.randn(2, n, 4, generator=gen)
    size = torch.randint(1, 4, (2, n), generator=gen).float()
    out = build(f"pitome:r={r},margin={margin}")(VisualTokens(embeds=x, size=size, grid=(1, n)))
    for row in range(2):
        keep, feats, sizes = reference_pitome(x[row], size[row], r, margin)
        assert out.index[row].tolist() == keep
        torch.testing.assert_close(out.embeds[row].double(), feats, rtol=1e-5, atol=1e-5)
        assert out.size[row].tolist() == sizes


def test_isolated_token_is_protected():
    """A token unlike all others has the lowest energy and is never merged (ToMe may merge it)."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 8, generator=gen)
    x = base + 0.05 * torch.randn(1, 12, 8, generator=gen)
    x[0, 4] = -base[0, 0]  # the isolated, informative token
    out = build("pitome:r=6,margin=0.5")(VisualTokens(embeds=x))
    assert 4 in out.index[0].tolist()
    assert out.size[0, out.index[0].tolist().index(4)] == 1


def test_too_many_merges():
    with pytest.raises(BudgetError, match="at most 8 of 16"):
        build("pitome:r=9").output_len(16)
