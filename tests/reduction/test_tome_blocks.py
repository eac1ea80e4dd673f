"""ToMe inside HF vision transformer blocks (tiny random CLIP/SigLIP, built offline)."""

import copy

import pytest
import torch
from test_tome import reference_tome  # loop ToMe reference, shared
from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

from mmllm.errors import MMLLMError
from mmllm.reduction.tome_blocks import ToMeBlock, ToMeState, apply_tome
from mmllm.vision_tokenizers import HFVisionEncoder
from mmllm.vision_tokenizers.encoders.hf import _encoder_layers

TINY = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
}


def tiny(family: str, attn: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    config_cls, model_cls = (
        (CLIPVisionConfig, CLIPVisionModel)
        if family == "clip"
        else (SiglipVisionConfig, SiglipVisionModel)
    )
    config = config_cls(image_size=48, patch_size=8, **TINY)
    config._attn_implementation = attn
    return model_cls(config).eval()


def reference_block(layer, x: torch.Tensor, size: torch.Tensor, r: int, prefix: int, heads: int):
    """One block written out by hand: proportional attention, loop ToMe merge, MLP."""
    attn = layer.self_attn
    h = layer.layer_norm1(x)
    b, t, d = h.shape
    q, k, v = (
        p(h).view(b, t, heads, -1).transpose(1, 2) for p in (attn.q_proj, attn.k_proj, attn.v_proj)
    )
    full_size = torch.cat([torch.ones(b, prefix), size], 1)
    logits = q @ k.transpose(-1, -2) * attn.scale + full_size.log()[:, None, None, :]
    out = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
    x = x + attn.out_proj(out)
    metric = k.transpose(1, 2).mean(2)  # head-mean keys [B, T, d_head]
    rows, sizes = [], []
    for row in range(b):
        patches = x[row, prefix:]
        _, merged, new_size = reference_tome(metric[row, prefix:], size[row], r, feats=patches)
        rows.append(torch.cat([x[row, :prefix].double(), merged]))
        sizes.append(new_size)
    x = torch.stack(rows).float()
    return x + layer.mlp(layer.layer_norm2(x)), sizes


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_block_matches_hand_written_reference(attn):
    model = tiny("clip", attn)
    layer = _encoder_layers(model)[0]
    state = ToMeState(r=3, prefix=1, num_heads=4)
    block = ToMeBlock(copy.deepcopy(layer), state)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1 + 10, 32, generator=gen)
    size = torch.randint(1, 4, (2, 10), generator=gen).float()
    state.size, state.index = size, torch.arange(10).expand(2, 10)
    with torch.no_grad():
        got = block(x)
        expected, sizes = reference_block(layer, x, size, 3, 1, 4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert state.size.tolist() == sizes


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_encoder_merges_in_every_block(family):
    model = tiny(family)
    plain = HFVisionEncoder(copy.deepcopy(model))
    enc = HFVisionEncoder(model)
    apply_tome(enc, r=5)
    assert enc.num_tokens == 36 - 5 * 3
    pixels = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        tokens = enc(pixels)
        again = enc(pixels)  # state resets between calls
    assert tokens.num_tokens == enc.num_tokens == again.num_tokens
    assert tokens.size.sum(1).tolist() == [36.0, 36.0]
    assert len(set(tokens.index[0].tolist())) == tokens.num_tokens
    assert plain(pixels).num_tokens == 36


def test_r_zero_changes_nothing():
    model = tiny("clip")
    plain = HFVisionEncoder(copy.deepcopy(model))
    enc = HFVisionEncoder(model)
    apply_tome(enc, r=0)
    pixels = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(enc(pixels).embeds, plain(pixels).embeds)


def test_side_information_and_layout_errors():
    with pytest.raises(MMLLMError, match="feature_layer=-1"):
        apply_tome(HFVisionEncoder(tiny("clip"), keys=True), r=2)
    with pytest.raises(MMLLMError, match="layer layout"):
        ToMeBlock(torch.nn.Linear(2, 2), ToMeState(r=1, prefix=0, num_heads=1))
