"""Every kernel fast path against the plain reference in mmllm.reduction: same indices (ties
included), values within float32 rounding, B > 1, odd sizes, fp32 and bf16. The Triton kernels
run under TRITON_INTERPRET=1 on CPU at small sizes (on a GPU machine: the gpu tests)."""

import os
import warnings

import pytest
import torch
import torch.nn.functional as F

from mmllm.kernels import ops
from mmllm.reduction import VisualTokens
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.divprune import greedy_max_min as ref_greedy
from mmllm.reduction.dpp import dpp_greedy_map as ref_dpp
from mmllm.reduction.tome import bipartite_match as ref_match
from mmllm.reduction.tome import merge_tokens as ref_merge

BACKENDS = ["torch", "triton"]


@pytest.fixture(params=BACKENDS)
def kernel_backend(request, monkeypatch):
    """Run the test once per fast backend; Triton interpreted on CPU."""
    if request.param == "triton":
        pytest.importorskip("triton")
        if torch.cuda.is_available():
            pytest.skip("interpreter tests are for CPU machines; the gpu tests cover CUDA")
        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("TRITON_INTERPRET=1 must be set before triton is imported (conftest)")
    monkeypatch.setenv("MMLLM_KERNELS", request.param)
    return request.param


def features(b, n, d, dtype=torch.float32, ties=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g)
    if ties:  # exact duplicates: equal distances and scores everywhere
        x[:, 1::3] = x[:, 0:1]
    return x.to(dtype)


def cosine_dist(x):
    unit = F.normalize(x.float(), dim=-1)
    return 1.0 - unit @ unit.transpose(1, 2)


@pytest.mark.parametrize(("b", "n", "k"), [(1, 7, 3), (3, 33, 10), (2, 40, 40)])
@pytest.mark.parametrize("ties", [False, True])
def test_greedy_max_min(kernel_backend, b, n, k, ties):
    x = features(b, n, 16, ties=ties)
    k = min(k, n)
    expected = ref_greedy(cosine_dist(x), k)
    assert torch.equal(ops.greedy_max_min(cosine_dist(x), k), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cosine_max_min_is_divprune(kernel_backend, dtype):
    x = features(3, 29, 24, dtype=dtype, ties=True)
    assert torch.equal(ops.cosine_max_min(x, 9), divprune_select(x, 9))


def test_torch_path_leaves_the_matrix_as_it_was(monkeypatch):
    monkeypatch.setenv("MMLLM_KERNELS", "torch")
    dist = cosine_dist(features(2, 12, 8))
    before = dist.clone()
    ops.greedy_max_min(dist, 5)
    assert torch.equal(dist, before)


def tome_tokens(b, n, c, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return VisualTokens(
        embeds=torch.randn(b, n, c, generator=g).to(dtype),
        keys=torch.randn(b, n, 8, generator=g).to(dtype),
        size=torch.randint(1, 4, (b, n), generator=g),
        attn_to_cls=torch.rand(b, n, generator=g),
        ids=torch.randint(0, 100, (b, n), generator=g),
        grid=(1, n),
    )


def assert_same_merge(got, expected, dtype):
    """Merged fields within float rounding of the dtype, integer fields exactly."""
    tol = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for name in ("embeds", "keys", "attn_to_cls"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), **tol)
    for name in ("size", "index", "ids"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


@pytest.mark.parametrize(("b", "n", "r"), [(1, 9, 4), (3, 32, 10), (2, 31, 15)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bipartite_merge_matches_tome(kernel_backend, b, n, r, dtype):
    tokens = tome_tokens(b, n, 20, dtype)
    src, dst = ops.bipartite_match(tokens.keys, r)
    ref_src, ref_dst = ref_match(tokens.keys, r)
    assert torch.equal(src, ref_src) and torch.equal(dst, ref_dst)
    got = ops.bipartite_merge(tokens, r, tokens.keys)
    expected = ref_merge(tokens, ref_src, ref_dst)
    assert_same_merge(got, expected, dtype)


def test_bipartite_ties(kernel_backend):
    """torch: the reference's indices exactly (ties to the earlier token). Triton sums the
    similarity in another order, so among scores equal to rounding it may pick another tied
    token: there the picks must be equally good (scores within 1e-6)."""
    x = features(2, 18, 8, ties=True)
    src, dst = ops.bipartite_match(x, 5)
    ref_src, ref_dst = ref_match(x, 5)
    if kernel_backend == "torch":
        assert torch.equal(src, ref_src) and torch.equal(dst, ref_dst)
        return
    unit = F.normalize(x, dim=-1)
    sim = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)
    best = sim.amax(-1)
    rows = torch.arange(2)[:, None]
    torch.testing.assert_close(sim[rows, src, dst], best.gather(1, src), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        best.gather(1, src).sort(1).values,
        best.gather(1, ref_src).sort(1).values,
        atol=1e-6,
        rtol=0,
    )


@pytest.mark.parametrize(("b", "h", "n", "d"), [(1, 1, 5, 8), (3, 4, 37, 16), (2, 3, 64, 32)])
@pytest.mark.parametrize("masked", [False, True])
def test_query_topk(kernel_backend, b, h, n, d, masked):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(b, h, d, generator=g), torch.randn(b, h, n, d, generator=g)
    values = torch.randn(b, n, 6, generator=g)
    bias = None
    if masked:  # left padding: the first tokens of the first image are masked out
        bias = torch.zeros(b, n)
        bias[0, : n // 3] = torch.finfo(torch.float32).min
    keep = max(1, n // 4)
    scores, idx, kept = ops.query_topk(q, k, keep, values, bias=bias)
    expected = ops.query_attention_reference(q, k, d**-0.5, bias)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-5)
    assert torch.equal(idx, expected.topk(keep, dim=1).indices.sort(dim=1).values)
    assert torch.equal(kept, values.gather(1, idx[..., None].expand(-1, -1, 6)))


def dpp_kernel(b, n, d, seed=0, ties=False):
    x = F.normalize(features(b, n, d, ties=ties, seed=seed), dim=-1)
    q = torch.rand(b, n, generator=torch.Generator().manual_seed(seed)) + 0.5
    return q[:, :, None] * (x @ x.transpose(1, 2)) * q[:, None, :]


@pytest.mark.parametrize(("b", "n", "k"), [(1, 6, 3), (3, 31, 8), (2, 40, 12)])
def test_dpp_greedy_map(kernel_backend, b, n, k):
    kernel = dpp_kernel(b, n, 24)
    assert torch.equal(ops.dpp_greedy_map(kernel, k), ref_dpp(kernel, k))


@pytest.mark.parametrize("k", [12, 20])
def test_dpp_past_the_kernel_rank(kernel_backend, k):
    """A rank-2 kernel runs out of gain after two picks: every backend still returns k distinct
    items, the same ones as the reference, with no overflow on the way."""
    kernel = dpp_kernel(2, 20, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy overflow warnings become failures
        got = ops.dpp_greedy_map(kernel, k)
    assert torch.equal(got, ref_dpp(kernel, k))
    assert all(len(set(row.tolist())) == k for row in got)
    # past the rank (2 picks), the rest go by the kernel's diagonal, not by round-off residuals
    for diag, first, row in zip(
        kernel.diagonal(dim1=1, dim2=2), ref_dpp(kernel, 2), got, strict=True
    ):
        rest = [i for i in diag.argsort(descending=True).tolist() if i not in first.tolist()]
        assert set(row.tolist()) == set(first.tolist()) | set(rest[: k - 2])


def test_reference_backend_is_the_reference(monkeypatch):
    monkeypatch.setenv("MMLLM_KERNELS", "reference")
    dist = cosine_dist(features(2, 10, 4))
    assert torch.equal(ops.greedy_max_min(dist, 4), ref_greedy(dist, 4))


def test_unknown_backend_and_unavailable_triton(monkeypatch):
    from mmllm.errors import MMLLMError

    monkeypatch.setenv("MMLLM_KERNELS", "cuda-magic")
    with pytest.raises(MMLLMError, match="choose one of"):
        ops.greedy_max_min(cosine_dist(features(1, 4, 4)), 2)
    if not torch.cuda.is_available():
        monkeypatch.setenv("MMLLM_KERNELS", "triton")
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(MMLLMError, match=r"Triton runs on CUDA|triton is not installed"):
            ops.greedy_max_min(cosine_dist(features(1, 4, 4)), 2)


def test_merge_many_sources_into_one_partner(kernel_backend):
    """Every A token's best match is the same B token: the fast merge adds all of them into one
    slot (duplicate destinations) and must equal the reference's scatter-add."""
    g = torch.Generator().manual_seed(3)
    b, n, c = 2, 12, 6
    keys = torch.randn(b, n, c, generator=g) * 0.01
    keys[:, 1::2] = torch.randn(b, 1, c, generator=g)  # B tokens: far apart ...
    keys[:, 1] = keys[:, 0:1].mean(1) + 1.0  # ... except B0, which every A token is close to
    keys[:, 0::2] = keys[:, 1:2] + torch.randn(b, n // 2, c, generator=g) * 1e-3
    tokens = VisualTokens(
        embeds=torch.randn(b, n, c, generator=g),
        keys=keys,
        size=torch.randint(1, 5, (b, n), generator=g),
        grid=(1, n),
    )
    r = 5
    src, dst = ops.bipartite_match(tokens.keys, r)
    assert (dst == dst[:, :1]).all(), "the construction should send every merge to one token"
    got = ops.bipartite_merge(tokens, r, tokens.keys)
    expected = ref_merge(tokens, src, dst)  # the merge under test, on the same matching
    torch.testing.assert_close(got.embeds, expected.embeds, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.size, expected.size) and torch.equal(got.index, expected.index)


def test_cpu_loops_take_tensors_that_need_grad(kernel_backend):
    """Selection runs on detached views: a reducer inside training (TokenFLEX-style) passes
    features that require grad."""
    x = features(2, 20, 8).requires_grad_(True)
    assert torch.equal(ops.cosine_max_min(x, 6), divprune_select(x.detach(), 6))
    kernel = dpp_kernel(2, 20, 8).requires_grad_(True)
    assert torch.equal(ops.dpp_greedy_map(kernel, 5), ref_dpp(kernel.detach(), 5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_alone_matches_tome(kernel_backend, dtype):
    """``ops.merge`` on a given matching (any src/dst, several sources per partner) equals
    ToMe's ``merge_tokens``: the fused Triton pass and the torch plan alike."""
    tokens = tome_tokens(3, 41, 19, dtype, seed=5)
    g = torch.Generator().manual_seed(6)
    src = torch.stack([torch.randperm(21, generator=g)[:12] for _ in range(3)])
    dst = torch.randint(0, 4, (3, 12), generator=g)  # few partners: many merge into each
    got = ops.merge(tokens, src, dst)
    expected = ref_merge(tokens, src, dst)
    assert_same_merge(got, expected, dtype)
