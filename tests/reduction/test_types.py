import pytest
import torch

from mmllm.errors import MissingSideInfoError
from mmllm.reduction import VisualTokens


def test_defaults_fill_index_size_and_square_grid():
    t = VisualTokens(embeds=torch.randn(2, 16, 4))
    assert t.grid == (4, 4)
    assert torch.equal(t.index, torch.arange(16).expand(2, 16))
    assert torch.equal(t.size, torch.ones(2, 16))
    assert t.is_full_grid


def test_gather_keeps_every_per_token_field_aligned():
    embeds = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    t = VisualTokens(embeds=embeds, keys=embeds * 2, attn_to_cls=embeds[..., 0], grid=(2, 3))
    keep = torch.tensor([[0, 5], [4, 1]])
    g = t.gather(keep)
    assert torch.equal(g.index, keep)
    assert torch.equal(g.embeds[1, 0], embeds[1, 4])
    assert torch.equal(g.keys[1, 1], embeds[1, 1] * 2)
    assert torch.equal(g.attn_to_cls, embeds[..., 0].gather(1, keep))
    assert not g.is_full_grid


def test_missing_side_info_names_field_and_provider():
    t = VisualTokens(embeds=torch.randn(1, 4, 2), source="EfficientNet-lite0")
    with pytest.raises(MissingSideInfoError, match=r"'attn_to_cls'.*EfficientNet-lite0.*CLS-free"):
        t.require("attn_to_cls", by="reducer 'x'")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"embeds": torch.randn(4, 3)},
        {"embeds": torch.randn(1, 4, 3), "index": torch.zeros(1, 5, dtype=torch.long)},
        {"embeds": torch.randn(1, 4, 3), "cls": torch.randn(2, 3)},
        {},
    ],
)
def test_bad_shapes_are_refused(kwargs):
    with pytest.raises(ValueError):
        VisualTokens(**kwargs)
