import pytest
import torch

from mmllm.reduction import VisualTokens, build
from mmllm.reduction.divprune import divprune_select


def reference_maxmin(x: torch.Tensor, k: int) -> list[int]:
    """Plain greedy max-min diversity on cosine distance, one row, Python loops."""
    n = x.shape[0]
    unit = [v / v.norm() for v in x.double()]

    def d(i, j):
        return 1.0 - float(unit[i] @ unit[j])

    first = max(range(n), key=lambda i: (min(d(i, j) for j in range(n) if j != i), -i))
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(d(i, c) for c in chosen), -i)))
    return sorted(chosen)


@pytest.mark.parametrize(("n", "k"), [(12, 1), (12, 4), (25, 10), (9, 9)])
def test_matches_greedy_maxmin_reference(n, k):
    x = torch.randn(3, n, 6, generator=torch.Generator().manual_seed(n * 100 + k))
    got = divprune_select(x, k)
    for row in range(3):
        assert got[row].tolist() == reference_maxmin(x[row], k)


def test_duplicates_are_never_chosen_twice():
    x = torch.ones(2, 8, 4)
    x[:, 3] = -1.0
    got = divprune_select(x, 5)
    assert all(len(set(row.tolist())) == 5 for row in got)
    assert 3 in got[0].tolist()


def test_reducer_gathers_and_checks_budget():
    tokens = VisualTokens(embeds=torch.randn(2, 49, 8, dtype=torch.bfloat16))
    out = build("divprune:7")(tokens)
    assert out.num_tokens == 7 and out.embeds.dtype == torch.bfloat16
    assert torch.equal(out.index, divprune_select(tokens.embeds, 7))
    with pytest.raises(ValueError, match="larger than the 49 tokens"):
        build("divprune:50")(tokens)
