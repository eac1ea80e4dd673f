import pytest
import torch

from mmllm.errors import BudgetError, MissingSideInfoError
from mmllm.reduction import VisualTokens, build


def reference_visionzip(x, keys, attn, d, c):
    """Plain VisionZip on one row: top-D by attention; stride targets; argmax-similarity merge."""
    n = x.shape[0]
    order = sorted(range(n), key=lambda i: (-float(attn[i]), i))
    dominant = sorted(order[:d])
    rest = sorted(order[d:])
    step = max(1, len(rest) // c)
    targets = [rest[i] for i in range(0, len(rest), step)][:c]
    others = [i for i in rest if i not in targets]
    unit = keys / keys.norm(dim=-1, keepdim=True)
    groups = {t: [t] for t in targets}
    for o in others:
        best = max(targets, key=lambda t: (float(unit[o] @ unit[t]), -targets.index(t)))
        groups[best].append(o)
    out = {i: x[i] for i in dominant}
    out.update({t: torch.stack([x[j] for j in g]).mean(0) for t, g in groups.items()})
    sizes = {i: 1 for i in dominant} | {t: len(g) for t, g in groups.items()}
    keep = sorted(out)
    return keep, torch.stack([out[i] for i in keep]), [sizes[i] for i in keep]


@pytest.mark.parametrize(("n", "d", "c"), [(16, 4, 3), (25, 10, 5), (12, 0, 4), (9, 5, 4)])
def test_matches_reference(n, d, c):
    gen = torch.Generator().manual_seed(n * 10 + d)
    x, keys = torch.randn(2, n, 5, generator=gen), torch.randn(2, n, 3, generator=gen)
    attn = torch.rand(2, n, generator=gen)
    out = build(f"visionzip:dominant={d},contextual={c}")(
        VisualTokens(embeds=x, keys=keys, attn_to_cls=attn)
    )
    for row in range(2):
        keep, feats, sizes = reference_visionzip(x[row], keys[row], attn[row], d, c)
        assert out.index[row].tolist() == keep
        torch.testing.assert_close(out.embeds[row], feats)
        assert out.size[row].tolist() == sizes
    assert out.size.sum(1).tolist() == [n, n]


def test_dominant_set_is_top_d_by_score():
    x = torch.randn(1, 20, 4)
    out = build("visionzip:dominant=6,score=norm")(VisualTokens(embeds=x))
    assert out.index[0].tolist() == sorted(x[0].norm(dim=-1).topk(6).indices.tolist())


def test_cls_free_encoders_need_another_score():
    tokens = VisualTokens(embeds=torch.randn(1, 16, 4), source="EfficientNet-lite0")
    with pytest.raises(MissingSideInfoError, match="attn_to_cls"):
        build("visionzip:dominant=4,contextual=2")(tokens)
    assert build("visionzip:dominant=4,contextual=2,score=norm")(tokens).num_tokens == 6


def test_budget():
    with pytest.raises(BudgetError, match="need more than the 16"):
        build("visionzip:dominant=10,contextual=7,score=norm").output_len(16)
