"""The fast paths on a real GPU, at realistic sizes, against the references: Triton compiled
for the device and the vectorised torch path on CUDA tensors (what each backend runs there)."""

import pytest
import torch
import torch.nn.functional as F

from mmllm.kernels import ops
from mmllm.kernels.dispatch import use
from mmllm.reduction import VisualTokens, build
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.dpp import dpp_greedy_map as ref_dpp
from mmllm.reduction.tome import bipartite_match, merge_tokens

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True, params=["triton", "torch"])
def gpu_backend(request, monkeypatch):
    if request.param == "triton":
        pytest.importorskip("triton")
    monkeypatch.setenv("MMLLM_KERNELS", request.param)
    return request.param


@pytest.mark.parametrize(("b", "n", "d"), [(1, 576, 1024), (8, 196, 768), (2, 2880, 1024)])
def test_divprune_on_gpu(b, n, d):
    x = torch.randn(b, n, d, device="cuda")
    assert torch.equal(ops.cosine_max_min(x, n // 9), divprune_select(x, n // 9))


def test_divprune_ties_on_gpu():
    x = torch.randn(4, 300, 64, device="cuda")
    x[:, 1::3] = x[:, :1]  # exact duplicates: equal distances everywhere
    assert torch.equal(ops.cosine_max_min(x, 40), divprune_select(x, 40))


def test_large_tome_matching_on_gpu(gpu_backend):
    """32 x 2880 tokens: the Triton kernel matches (tf32x3 products, float32 accuracy). Among
    near-equal similarities it may pick another partner or source than cuBLAS's float32
    product: each pick must then be as good, within 1e-5 of the float64 best."""
    x = torch.randn(32, 2880, 256, device="cuda")
    src, dst = ops.bipartite_match(x, 1000)
    unit = F.normalize(x.double(), dim=-1)
    sim = unit[:, ::2] @ unit[:, 1::2].transpose(1, 2)
    best = sim.amax(-1)
    rows = torch.arange(32, device="cuda")[:, None]
    torch.testing.assert_close(sim[rows, src, dst], best.gather(1, src), atol=1e-5, rtol=0)
    kth = best.sort(dim=1, descending=True).values[:, 999:1000]
    assert (best.gather(1, src) >= kth - 1e-5).all()  # the r best sources, up to near-ties


@pytest.mark.parametrize(("b", "n", "d"), [(1, 576, 1024), (8, 577, 768)])
def test_tome_on_gpu(b, n, d):
    x = torch.randn(b, n, d, device="cuda")
    tokens = VisualTokens(embeds=x, size=torch.ones(b, n, dtype=torch.long, device="cuda"))
    got = ops.bipartite_merge(tokens, n // 4, x)
    expected = merge_tokens(tokens, *bipartite_match(x, n // 4))
    torch.testing.assert_close(got.embeds, expected.embeds, atol=1e-4, rtol=1e-4)
    assert torch.equal(got.size, expected.size)


@pytest.mark.parametrize(
    ("b", "h", "n", "d"), [(1, 16, 576, 128), (8, 32, 2880, 128), (3, 7, 77, 48)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True])
def test_query_topk_on_gpu(b, h, n, d, dtype, masked):
    q = torch.randn(b, h, d, device="cuda").to(dtype)
    k = torch.randn(b, h, n, d, device="cuda").to(dtype)
    values = torch.randn(b, n, 32, device="cuda")
    bias = None
    if masked:  # left padding on the first image
        bias = torch.zeros(b, n, device="cuda")
        bias[0, : n // 3] = torch.finfo(torch.float32).min
    keep = max(1, n // 9)
    scores, idx, kept = ops.query_topk(q, k, keep, values, bias=bias)
    expected = ops.query_attention_reference(q, k, d**-0.5, bias)
    torch.testing.assert_close(scores, expected, atol=1e-6, rtol=1e-4)
    top = scores.topk(keep, dim=1).indices.sort(dim=1).values
    assert torch.equal(idx, top)
    assert torch.equal(kept, values.gather(1, idx[..., None].expand(-1, -1, 32)))


@pytest.mark.parametrize(("b", "n", "k"), [(1, 576, 64), (8, 196, 22)])
def test_dpp_on_gpu(b, n, k):
    x = F.normalize(torch.randn(b, n, 256, device="cuda"), dim=-1)
    kernel = x @ x.transpose(1, 2)
    assert torch.equal(ops.dpp_greedy_map(kernel, k), ref_dpp(kernel, k))


def test_dpp_long_run_on_gpu():
    """320 greedy steps: the Cholesky rows are sums in another order than the reference's, so
    late near-tied gains may pick another item. The pick must then be as good: the chosen
    set's log-determinant within 1e-3 (relative) of the reference's, 95% of the items shared."""
    x = F.normalize(torch.randn(2, 2880, 1024, device="cuda"), dim=-1)
    kernel = x @ x.transpose(1, 2)
    got, expected = ops.dpp_greedy_map(kernel, 320), ref_dpp(kernel, 320)
    for kernel_b, got_b, exp_b in zip(kernel.double(), got, expected, strict=True):
        logdet = [torch.logdet(kernel_b[s][:, s]) for s in (got_b, exp_b)]
        torch.testing.assert_close(logdet[0], logdet[1], rtol=1e-3, atol=0)
        shared = len(set(got_b.tolist()) & set(exp_b.tolist()))
        assert shared >= 0.95 * 320


@pytest.mark.parametrize("spec", ["divprune:20", "tome:r=0.5", "dpp:20", "focus:12"])
def test_reducers_on_cuda_use_the_fast_paths(spec):
    """A reducer on CUDA tensors (fast paths by default) keeps what the plain reference keeps on
    the same device (CPU and GPU round differently, so the device is held fixed)."""
    g = torch.Generator().manual_seed(0)
    tokens = VisualTokens(embeds=torch.randn(2, 196, 64, generator=g).cuda(), grid=(14, 14))
    reducer = build(spec)
    fast = reducer(tokens, None)
    with use("reference"):
        reference = reducer(tokens, None)
    assert torch.equal(fast.index, reference.index)
    torch.testing.assert_close(fast.embeds, reference.embeds, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_on_gpu(gpu_backend, dtype):
    """The fused Triton merge also gives the same bits on every run (no atomics); the torch
    path's ``index_add_`` on CUDA uses atomics, so only its values are checked."""
    b, n, c = 4, 2880, 1024
    x = torch.randn(b, n, c, device="cuda").to(dtype)
    size = torch.randint(1, 4, (b, n), device="cuda")
    tokens = VisualTokens(embeds=x, size=size)
    src = torch.stack([torch.randperm(n // 2, device="cuda")[:700] for _ in range(b)])
    dst = torch.randint(0, 50, (b, 700), device="cuda")  # many sources per partner
    got = ops.merge(tokens, src, dst)
    # the fast merge sums in float32 whatever the input: compare with the float32 reference
    expected = merge_tokens(tokens.replace(embeds=x.float()), src, dst)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-2, "rtol": 1e-2}
    torch.testing.assert_close(got.embeds.float(), expected.embeds, **tol)
    assert torch.equal(got.size, expected.size) and torch.equal(got.index, expected.index)
    if gpu_backend == "triton":
        assert torch.equal(ops.merge(tokens, src, dst).embeds, got.embeds)
