import math

import pytest
import torch

from mmllm.errors import MissingSideInfoError, SpecError
from mmllm.reduction import VisualTokens, build


def test_cls_score_keeps_top_attended_in_order():
    attn = torch.tensor([[0.1, 0.5, 0.05, 0.3, 0.05], [0.3, 0.1, 0.2, 0.25, 0.15]])
    tokens = VisualTokens(embeds=torch.randn(2, 5, 3), attn_to_cls=attn)
    out = build("importance:2,score=cls")(tokens)
    assert out.index.tolist() == [[1, 3], [0, 3]]
    torch.testing.assert_close(out.attn_to_cls, attn.gather(1, out.index))


def test_norm_score_against_reference():
    x = torch.randn(2, 10, 4, generator=torch.Generator().manual_seed(1))
    out = build("importance:3,score=norm")(VisualTokens(embeds=x))
    for row in range(2):
        ref = sorted(sorted(range(10), key=lambda i: -float(x[row, i].norm()))[:3])
        assert out.index[row].tolist() == ref


def test_mean_sim_drops_the_redundant_background():
    torch.manual_seed(0)
    background = torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.01 * torch.randn(12, 4)
    distinct = torch.eye(4)[1:] * 3  # three tokens unlike the rest and unlike each other
    x = torch.cat([background, distinct]).unsqueeze(0)
    out = build("importance:3,score=mean_sim")(VisualTokens(embeds=x))
    assert out.index.tolist() == [[12, 13, 14]]


def test_entropy_score_against_reference():
    x = torch.randn(2, 9, 5, generator=torch.Generator().manual_seed(2))

    def entropy(v):
        p = [abs(float(c)) for c in v]
        total = sum(p)
        return -sum(q / total * math.log(q / total) for q in p if q > 0)

    out = build("importance:4,score=entropy")(VisualTokens(embeds=x))
    for row in range(2):
        ref = sorted(sorted(range(9), key=lambda i: -entropy(x[row, i]))[:4])
        assert out.index[row].tolist() == ref


def test_cls_score_without_cls_attention_names_the_field():
    tokens = VisualTokens(embeds=torch.randn(1, 4, 2), source="EfficientNet-lite0")
    with pytest.raises(MissingSideInfoError, match="attn_to_cls"):
        build("importance:2")(tokens)
    assert build("importance:2,score=norm")(tokens).num_tokens == 2


def test_unknown_score():
    with pytest.raises(SpecError, match="score must be one of"):
        build("importance:2,score=magic")
