"""HFVisionEncoder on tiny random configs of real transformers architectures (built offline)."""

import pytest
import torch
from PIL import Image
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Siglip2VisionConfig,
    Siglip2VisionModel,
    SiglipVisionConfig,
    SiglipVisionModel,
    ViTConfig,
    ViTModel,
)

from mmllm.vision_tokenizers import HFVisionEncoder

TINY = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
}


def tiny(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if family == "clip":
        return CLIPVisionModel(CLIPVisionConfig(image_size=32, patch_size=8, **TINY))
    if family == "siglip":
        return SiglipVisionModel(SiglipVisionConfig(image_size=32, patch_size=8, **TINY))
    if family == "siglip2":
        return Siglip2VisionModel(Siglip2VisionConfig(num_patches=16, patch_size=8, **TINY))
    return ViTModel(ViTConfig(image_size=32, patch_size=8, **TINY), add_pooling_layer=False)


IMAGES = [Image.new("RGB", (40, 30), "red"), Image.effect_noise((32, 32), 40).convert("RGB")]


@pytest.mark.parametrize(
    ("family", "has_cls"), [("clip", True), ("vit", True), ("siglip", False), ("siglip2", False)]
)
def test_encode_gives_patch_grid_and_cls_where_it_exists(family, has_cls):
    enc = HFVisionEncoder(tiny(family))
    tokens = enc.encode(IMAGES)
    assert enc.grid == (4, 4) and tokens.grid == (4, 4)
    assert tokens.embeds.shape == (2, 16, 32)
    assert (tokens.cls is not None) == has_cls
    assert tokens.attn_to_cls is None and tokens.keys is None
    assert not torch.allclose(tokens.embeds[0], tokens.embeds[1])


@pytest.mark.parametrize("family", ["clip", "vit"])
def test_attn_to_cls_matches_eager_attention_row(family):
    model = tiny(family)
    enc = HFVisionEncoder(model, attn_to_cls=True, keys=True)
    pixels = enc.preprocess(IMAGES)
    tokens = enc(pixels)
    out = enc.model(pixel_values=pixels, output_attentions=True)
    expected = out.attentions[-1][:, :, 0, 1:].mean(1)
    torch.testing.assert_close(tokens.attn_to_cls, expected)
    assert tokens.attn_to_cls.shape == (2, 16)
    assert tokens.keys.shape == (2, 16, 32)


def test_feature_layer_selects_hidden_state():
    model = tiny("clip")
    enc = HFVisionEncoder(model, feature_layer=-2)
    pixels = enc.preprocess(IMAGES)
    ref = model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(enc(pixels).embeds, ref)


def test_siglip_cannot_give_cls_attention():
    with pytest.raises(ValueError, match="no \\[CLS\\] token"):
        HFVisionEncoder(tiny("siglip"), attn_to_cls=True)


def test_siglip_keys_come_from_last_layer():
    tokens = HFVisionEncoder(tiny("siglip"), keys=True).encode(IMAGES)
    assert tokens.keys.shape == (2, 16, 32)


def test_wrong_pixel_shape_is_a_clear_error():
    enc = HFVisionEncoder(tiny("vit"))
    with pytest.raises(ValueError, match="expects pixels"):
        enc(torch.zeros(1, 3, 16, 16))


def test_from_pretrained_reads_a_local_folder(tmp_path):
    tiny("clip").save_pretrained(tmp_path)
    enc = HFVisionEncoder.from_pretrained(tmp_path)
    assert enc.encode(IMAGES[:1]).embeds.shape == (1, 16, 32)
