import pytest
import torch

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers import VectorQuantizer, build_quantizer


def test_nearest_code_and_straight_through():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 16, ema=False).eval()
    z = torch.randn(2, 5, 4, requires_grad=True)
    quantized, ids, aux = q(z)
    brute = torch.cdist(z.detach().reshape(-1, 4), q.codebook.detach()).argmin(-1)
    assert torch.equal(ids.reshape(-1), brute)
    torch.testing.assert_close(quantized.detach(), q.ids_to_codes(ids).detach())
    quantized.sum().backward()
    torch.testing.assert_close(z.grad, torch.ones_like(z))  # identity gradient
    assert aux.loss > 0 and 0 < aux.usage <= 1 and aux.perplexity >= 1


def test_ema_update_follows_the_formula():
    torch.manual_seed(0)
    q = VectorQuantizer(3, 4, decay=0.9, dead_threshold=0).train()
    before_sum, before_size = q.embed_sum.clone(), q.cluster_size.clone()
    z = torch.randn(10, 3)
    ids = q.nearest(z)
    q(z)
    counts = torch.bincount(ids, minlength=4).float()
    sums = torch.zeros(4, 3).index_add_(0, ids, z)
    size = 0.9 * before_size + 0.1 * counts
    embed = 0.9 * before_sum + 0.1 * sums
    n = size.sum()
    expected = embed / ((size + 1e-5) / (n + 4e-5) * n).unsqueeze(1)
    torch.testing.assert_close(q.codebook, expected)


def test_dead_codes_restart_on_batch_vectors():
    torch.manual_seed(0)
    q = VectorQuantizer(2, 8, decay=0.0, dead_threshold=0.5).train()
    z = torch.tensor([[5.0, 5.0]]).repeat(6, 1)  # one code wins, the other seven die
    q(z)
    assert (q.cluster_size >= 0.5).all()
    assert torch.equal(q.codebook[q.cluster_size == 1.0][0], torch.tensor([5.0, 5.0]))


def test_codes_no_input_picks_restart_at_the_first_step_with_default_settings():
    torch.manual_seed(0)
    q = VectorQuantizer(2, 8).train()  # decay 0.99, dead_threshold 0.01
    z = torch.randn(64, 2) * 0.1 + 20  # far from every random initial code
    _, ids, _ = q(z)
    assert ids.unique().numel() == 1
    picked = ids[0]
    restarted = [c for c in range(8) if c != picked]
    # every other code now sits on one of the batch vectors, so the next batch can pick it
    on_batch = (q.codebook[restarted].unsqueeze(1) == z.unsqueeze(0)).all(-1).any(-1)
    assert on_batch.all()
    _, ids, _ = q(z)
    assert ids.unique().numel() > 1


def test_kmeans_init_and_cosine_codes():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 8, kmeans_init=True).train()
    assert not bool(q.initted)
    centres = torch.randn(8, 4) * 5
    z = centres.repeat_interleave(20, 0) + 0.01 * torch.randn(160, 4)
    _, _, aux = q(z)
    assert bool(q.initted)
    assert aux.usage > 0.5  # k-means on the data: most codes used at once
    cos = VectorQuantizer(4, 8, cosine=True).eval()
    quantized, _ids, _ = cos(torch.randn(3, 4))
    torch.testing.assert_close(quantized.norm(dim=-1), torch.ones(3))


def test_bad_input_errors():
    q = VectorQuantizer(4, 8)
    with pytest.raises(MMLLMError, match="channel-last"):
        q(torch.randn(2, 3))
    with pytest.raises(MMLLMError, match="out of codebook range"):
        q.ids_to_codes(torch.tensor([8]))
    with pytest.raises(MMLLMError, match="unknown quantizer 'vqq'"):
        build_quantizer("vqq")
    with pytest.raises(MMLLMError, match="quantizer 'vq'"):
        build_quantizer("vq", dim=4)
