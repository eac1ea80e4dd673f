"""The 2D conv and 1D TiTok tokenizers at smoke size: round trip, training, I/O, errors."""

import pytest
import torch

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer, TokenizerConfig, build_tokenizer

SMALL = {"image_size": 32, "channels": 32, "latent_dim": 4, "depth": 1, "num_latents": 8}
QUANTIZERS = [
    {"name": "fsq", "levels": [5, 5, 5, 5]},
    {"name": "vq", "codebook_size": 32},
    {"name": "lfq"},
    {"name": "bsq"},
]


def tokenizer(kind: str, quantizer: dict | None = None) -> DiscreteTokenizer:
    torch.manual_seed(0)
    return build_tokenizer(
        TokenizerConfig(kind=kind, quantizer=quantizer or QUANTIZERS[0], **SMALL)
    )


def batch() -> torch.Tensor:
    torch.manual_seed(1)
    x = torch.zeros(4, 3, 32, 32) - 1
    for i in range(4):  # a coloured square per image
        x[i, i % 3, 4 + 4 * i : 14 + 4 * i, 6:20] = 1
    return x


@pytest.mark.parametrize("kind", ["conv2d", "titok"])
@pytest.mark.parametrize("quantizer", QUANTIZERS, ids=lambda q: q["name"])
def test_training_steps_reduce_reconstruction_error(kind, quantizer):
    model = tokenizer(kind, quantizer).train()
    x = batch()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        out = model(x)
        loss = (out.reconstruction - x).abs().mean() + out.aux.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float((out.reconstruction.detach() - x).abs().mean()))
    assert losses[-1] < 0.7 * losses[0], losses
    assert 0 < out.aux.usage <= 1


@pytest.mark.parametrize("kind", ["conv2d", "titok"])
def test_encode_decode_round_trip_and_save_load(kind, tmp_path):
    model = tokenizer(kind).eval()
    tokens = model.encode(batch())
    expected_n = 16 if kind == "conv2d" else 8
    assert tokens.ids.shape == (4, expected_n) and tokens.embeds.shape == (4, expected_n, 4)
    images = model.decode(tokens.ids)
    assert images.shape == (4, 3, 32, 32) and images.abs().max() <= 1
    model.save_pretrained(tmp_path)
    again = DiscreteTokenizer.from_pretrained(tmp_path)
    assert torch.equal(again.encode(batch()).ids, tokens.ids)
    torch.testing.assert_close(again.decode(tokens.ids), images)


def test_titok_decodes_any_prefix_and_drops_tails_in_training():
    model = tokenizer("titok").eval()
    ids = model.encode(batch()).ids
    for k in (1, 3, 8):
        assert model.decode(ids[:, :k]).shape == (4, 3, 32, 32)
    torch.manual_seed(0)
    model.train()
    a = model(batch()).reconstruction
    model.eval()
    b = model(batch()).reconstruction
    assert not torch.allclose(a, b)  # nested dropout only in training


def test_titok_is_centred_on_its_fitted_mean_image(tmp_path):
    model = tokenizer("titok").eval()
    x = batch()
    model.fit_pixel_mean([x[:3], x[3:]])
    mean = x.mean(0, keepdim=True)
    torch.testing.assert_close(model.pixel_mean, mean)
    plain = tokenizer("titok").eval()
    plain.load_state_dict({**model.state_dict(), "pixel_mean": torch.zeros_like(mean)})
    # the encoder reads x - mean; the decoder predicts x - mean and adds the mean back
    torch.testing.assert_close(model.encode_latents(x), plain.encode_latents(x - mean))
    codes = model.quantizer.ids_to_codes(model.encode(x).ids)
    torch.testing.assert_close(model.decode_latents(codes), plain.decode_latents(codes) + mean)
    model.save_pretrained(tmp_path)
    torch.testing.assert_close(DiscreteTokenizer.from_pretrained(tmp_path).pixel_mean, mean)
    with pytest.raises(MMLLMError, match="at least one image"):
        model.fit_pixel_mean([])
    with pytest.raises(MMLLMError, match=r"pixels \[B, 3, 32, 32\]"):
        model.fit_pixel_mean([torch.zeros(1, 3, 16, 16)])


def test_bad_inputs_are_clear_errors(tmp_path):
    model = tokenizer("conv2d")
    with pytest.raises(MMLLMError, match=r"pixels \[B, 3, 32, 32\]"):
        model.encode(torch.zeros(1, 3, 64, 64))
    with pytest.raises(MMLLMError, match="decodes 16 tokens"):
        model.decode(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(MMLLMError, match="out of codebook range"):
        model.decode(torch.full((1, 16), 10_000))
    with pytest.raises(MMLLMError, match=r"decodes 1\.\.8 tokens"):
        tokenizer("titok").decode(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(MMLLMError, match="unknown tokenizer kind"):
        build_tokenizer(TokenizerConfig(kind="vae"))
    with pytest.raises(MMLLMError, match="power of two"):
        build_tokenizer(TokenizerConfig(downsample=6, image_size=36))
    model.save_pretrained(tmp_path)
    (tmp_path / "extra.pt").write_bytes(b"pickle")
    with pytest.raises(MMLLMError, match="pickled weights"):
        DiscreteTokenizer.from_pretrained(tmp_path)
