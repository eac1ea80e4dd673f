import pytest
import torch

from mmllm.errors import MissingSideInfoError
from mmllm.reduction import TextContext, VisualTokens, build
from mmllm.reduction.dpp import dpp_greedy_map


def naive_greedy_det(kernel: torch.Tensor, k: int) -> list[int]:
    """Add, one at a time, the item that maximises det(L[S, S])."""
    chosen: list[int] = []
    for _ in range(k):
        best, best_det = None, -float("inf")
        for i in range(kernel.shape[0]):
            if i in chosen:
                continue
            idx = torch.tensor([*chosen, i])
            det = float(torch.det(kernel[idx][:, idx].double()))
            if det > best_det + 1e-12:
                best, best_det = i, det
        chosen.append(best)
    return sorted(chosen)


@pytest.mark.parametrize(("n", "k"), [(8, 3), (12, 5), (10, 10)])
def test_matches_naive_determinant_greedy(n, k):
    gen = torch.Generator().manual_seed(n + k)
    x = torch.randn(3, n, 16, generator=gen)
    q = torch.rand(3, n, generator=gen) + 0.5
    unit = torch.nn.functional.normalize(x, dim=-1)
    kernel = q[:, :, None] * (unit @ unit.transpose(1, 2)) * q[:, None, :]
    got = dpp_greedy_map(kernel.double(), k)
    for row in range(3):
        assert got[row].tolist() == naive_greedy_det(kernel[row], k)


def test_picks_past_the_kernel_rank_are_distinct_and_follow_residual_gain():
    """Alg. 1 stops when no item adds gain; with a fixed budget the greedy picks go on past the
    kernel's rank without updating the (zero-gain) Cholesky rows: distinct items, finite, and
    the first picks are the full-rank greedy's."""
    gen = torch.Generator().manual_seed(3)
    unit = torch.nn.functional.normalize(torch.randn(2, 16, 3, generator=gen), dim=-1)
    q = torch.rand(2, 16, generator=gen) + 0.5
    kernel = q[:, :, None] * (unit @ unit.transpose(1, 2)) * q[:, None, :]
    got = dpp_greedy_map(kernel, 16)
    assert torch.equal(got, torch.arange(16).expand(2, 16))  # all 16, each once
    first3 = dpp_greedy_map(kernel.double(), 3)
    for row in range(2):
        assert first3[row].tolist() == naive_greedy_det(kernel[row], 3)
        assert set(first3[row].tolist()) <= set(got[row].tolist())


def test_relevance_pulls_towards_the_instruction():
    torch.manual_seed(0)
    x = torch.randn(1, 30, 8)
    text = TextContext(embeds=x[:, :2].clone())  # the instruction "is about" tokens 0 and 1
    plain = build("dpp:4,theta=0")(VisualTokens(embeds=x), text)
    conditional = build("dpp:4,theta=8")(VisualTokens(embeds=x), text)
    assert {0, 1} <= set(conditional.index[0].tolist())
    assert plain.num_tokens == conditional.num_tokens == 4


def test_text_in_another_space_is_a_clear_error():
    tokens = VisualTokens(embeds=torch.randn(1, 10, 8))
    with pytest.raises(MissingSideInfoError, match="width 5"):
        build("dpp:3")(tokens, TextContext(embeds=torch.randn(1, 4, 5)))
    assert build("dpp:3")(tokens).num_tokens == 3
