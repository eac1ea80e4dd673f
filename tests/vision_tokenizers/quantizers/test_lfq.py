import itertools

import pytest
import torch

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers import BSQ, LFQ


def brute_force_entropy_loss(h: torch.Tensor, scale: float, tau: float, gamma: float):
    codes = torch.tensor(list(itertools.product([-scale, scale], repeat=h.shape[1])))
    codes = codes.flip(-1)  # bit i = channel i: itertools varies the last position fastest
    p = torch.softmax(-torch.cdist(h, codes).pow(2) / tau, dim=-1)
    per_sample = -(p * p.log()).sum(-1).mean()
    mean_p = p.mean(0)
    return per_sample - gamma * -(mean_p * mean_p.log()).sum()


def test_ids_are_sign_bits():
    q = LFQ(3).eval()
    z = torch.tensor([[1.0, -1.0, 1.0], [-0.5, 0.2, 0.3], [-1.0, -1.0, -1.0]])
    quantized, ids, _ = q(z)
    assert ids.tolist() == [0b101, 0b110, 0]
    torch.testing.assert_close(quantized, torch.sign(z))
    torch.testing.assert_close(q.ids_to_codes(ids), quantized)


@pytest.mark.parametrize("cls", [LFQ, BSQ])
def test_entropy_loss_equals_brute_force_softmax(cls):
    torch.manual_seed(0)
    q = cls(4, tau=0.5, gamma=0.7)
    h = torch.randn(32, 4)
    if cls is BSQ:
        h = torch.nn.functional.normalize(h, dim=-1)
    expected = brute_force_entropy_loss(h, q.scale, 0.5, 0.7)
    torch.testing.assert_close(q.entropy_loss(h), expected, rtol=1e-4, atol=1e-4)


def test_bsq_codes_are_unit_vectors_and_wide_codes_work():
    q = BSQ(48).train()
    z = torch.randn(4, 10, 48, requires_grad=True)
    quantized, ids, aux = q(z)
    torch.testing.assert_close(quantized.norm(dim=-1), torch.ones(4, 10))
    torch.testing.assert_close(q.ids_to_codes(ids), quantized.detach())
    aux.loss.backward()  # factorised entropy for 48 bits: finite, differentiable
    assert torch.isfinite(z.grad).all()
    with pytest.raises(MMLLMError, match=r"1\.\.62 bits"):
        LFQ(64)
