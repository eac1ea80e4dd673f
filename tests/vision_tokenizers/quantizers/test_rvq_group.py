import torch

from mmllm.vision_tokenizers.quantizers import LFQ, GroupLFQ, build_quantizer


def test_more_residual_stages_reconstruct_better():
    torch.manual_seed(0)
    z = torch.randn(256, 4)
    errors = []
    for stages in (1, 2, 4):
        torch.manual_seed(1)
        q = build_quantizer("rvq", stage="fsq", num_stages=stages, levels=[5, 5, 5, 5]).eval()
        quantized, ids, _aux = q(z)
        assert ids.shape == (256, stages)
        torch.testing.assert_close(q.ids_to_codes(ids), quantized)
        errors.append(float((quantized - z).pow(2).mean()))
    assert errors[0] > errors[1] > errors[2]


def test_rvq_of_vq_trains_every_stage():
    torch.manual_seed(0)
    q = build_quantizer("rvq", stage="vq", num_stages=3, dim=4, codebook_size=8).train()
    z = torch.randn(64, 4, requires_grad=True)
    quantized, ids, aux = q(z)
    (quantized.sum() + aux.loss).backward()
    assert z.grad is not None and ids.shape == (64, 3)


def test_group_lfq_is_independent_lfq_per_group():
    torch.manual_seed(0)
    q = GroupLFQ(8, groups=2).eval()
    z = torch.randn(5, 8)
    quantized, ids, _ = q(z)
    first = LFQ(4).eval()(z[:, :4])
    assert torch.equal(ids[:, 0], first[1])
    torch.testing.assert_close(q.ids_to_codes(ids), quantized)
