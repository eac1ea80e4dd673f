import pytest
import torch

from mmllm.errors import BudgetError
from mmllm.reduction import VisualTokens, build


def reference_tome(x: torch.Tensor, size: torch.Tensor, r: int, feats: torch.Tensor | None = None):
    """Plain ToMe on one row: A = even, B = odd; merge the r best-matched A into their B.

    Matching uses ``x``; the size-weighted merge applies to ``feats`` (default ``x``).
    """
    feats = x if feats is None else feats
    n = x.shape[0]
    a_idx, b_idx = list(range(0, n, 2)), list(range(1, n, 2))

    def cos(i, j):
        return float(torch.nn.functional.cosine_similarity(x[i], x[j], dim=0))

    best = {i: max(b_idx, key=lambda j: (cos(i, j), -j)) for i in a_idx}
    ranked = sorted(a_idx, key=lambda i: (-cos(i, best[i]), i))
    merged = ranked[:r]
    acc = {i: feats[i].double() * float(size[i]) for i in range(n)}
    sizes = {i: float(size[i]) for i in range(n)}
    for i in merged:
        acc[best[i]] += acc.pop(i)
        sizes[best[i]] += sizes.pop(i)
    keep = sorted(acc)
    return keep, torch.stack([acc[i] / sizes[i] for i in keep]), [sizes[i] for i in keep]


@pytest.mark.parametrize(("n", "r"), [(10, 3), (11, 5), (16, 8), (7, 1)])
def test_matches_reference(n, r):
    gen = torch.Generator().manual_seed(n + r)
    x = torch.randn(2, n, 4, generator=gen)
    size = torch.randint(1, 4, (2, n), generator=gen).float()
    out = build(f"tome:r={r}")(VisualTokens(embeds=x, size=size, grid=(1, n)))
    for row in range(2):
        keep, feats, sizes = reference_tome(x[row], size[row], r)
        assert out.index[row].tolist() == keep
        torch.testing.assert_close(out.embeds[row].double(), feats, rtol=1e-5, atol=1e-5)
        assert out.size[row].tolist() == sizes
    assert out.size.sum(1).tolist() == size.sum(1).tolist()


def test_uses_keys_when_given_and_fraction_budget():
    x = torch.randn(1, 16, 4)
    keys = torch.randn(1, 16, 6)
    reducer = build("tome:r=0.5")
    assert reducer.output_len(16) == 8
    with_keys = reducer(VisualTokens(embeds=x, keys=keys))
    expected = build("tome:r=0.5,metric=keys")(VisualTokens(embeds=x, keys=keys))
    assert torch.equal(with_keys.index, expected.index)
    assert with_keys.keys.shape == (1, 8, 6)


def test_too_many_merges():
    with pytest.raises(BudgetError, match="at most 8 of 16"):
        build("tome:r=9").output_len(16)
