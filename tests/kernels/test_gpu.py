"""The Triton kernels compiled for a real GPU, at realistic sizes, against the references."""

import pytest
import torch
import torch.nn.functional as F

from mmllm.kernels import ops
from mmllm.reduction import VisualTokens
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.dpp import dpp_greedy_map as ref_dpp
from mmllm.reduction.tome import bipartite_match, merge_tokens

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("MMLLM_KERNELS", "triton")


@pytest.mark.parametrize(("b", "n", "d"), [(1, 576, 1024), (8, 196, 768), (2, 2880, 1024)])
def test_divprune_on_gpu(b, n, d):
    x = torch.randn(b, n, d, device="cuda")
    assert torch.equal(ops.cosine_max_min(x, n // 9), divprune_select(x, n // 9))


@pytest.mark.parametrize(("b", "n", "d"), [(1, 576, 1024), (8, 577, 768)])
def test_tome_on_gpu(b, n, d):
    x = torch.randn(b, n, d, device="cuda")
    tokens = VisualTokens(embeds=x, size=torch.ones(b, n, dtype=torch.long, device="cuda"))
    got = ops.bipartite_merge(tokens, n // 4, x)
    expected = merge_tokens(tokens, *bipartite_match(x, n // 4))
    torch.testing.assert_close(got.embeds, expected.embeds, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.size, expected.size)


@pytest.mark.parametrize(("b", "h", "n"), [(1, 16, 576), (8, 32, 2880)])
def test_query_attention_on_gpu(b, h, n):
    q, k = torch.randn(b, h, 128, device="cuda"), torch.randn(b, h, n, 128, device="cuda")
    got = ops.query_attention(q, k)
    torch.testing.assert_close(
        got, ops.query_attention_reference(q, k, 128**-0.5), atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize(("b", "n", "k"), [(1, 576, 64), (8, 196, 22)])
def test_dpp_on_gpu(b, n, k):
    x = F.normalize(torch.randn(b, n, 256, device="cuda"), dim=-1)
    kernel = x @ x.transpose(1, 2)
    assert torch.equal(ops.dpp_greedy_map(kernel, k), ref_dpp(kernel, k))
