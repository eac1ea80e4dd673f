import itertools

import torch

from mmllm.vision_tokenizers.quantizers import FSQ


def test_every_code_is_reachable_and_round_trips():
    q = FSQ([3, 4, 5])
    assert q.codebook_size == 60
    # a dense sweep of inputs hits every grid point
    axis = torch.linspace(-4, 4, 41)
    z = torch.tensor(list(itertools.product(axis, axis, axis)))
    quantized, ids, aux = q(z)
    assert ids.unique().numel() == 60 and aux.usage == 1.0
    torch.testing.assert_close(q.ids_to_codes(ids), quantized)
    assert aux.loss == 0


def test_levels_give_symmetric_grids_and_straight_through():
    q = FSQ([5, 4])
    z = torch.randn(100, 2, requires_grad=True)
    quantized, _, _ = q(z)
    assert set(quantized[:, 0].detach().unique().tolist()) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert set(quantized[:, 1].detach().unique().tolist()) <= {-1.0, -0.5, 0.0, 0.5}
    quantized.sum().backward()
    assert (z.grad != 0).all()  # gradient flows through tanh + round (straight-through)


def test_projection_when_dim_differs():
    q = FSQ([8, 8], dim=16)
    quantized, ids, _ = q(torch.randn(2, 3, 16))
    assert quantized.shape == (2, 3, 16) and ids.shape == (2, 3)
    torch.testing.assert_close(q.ids_to_codes(ids), quantized)
