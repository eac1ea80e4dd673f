import torch

from mmllm.reduction import VisualTokens, build


def test_evit_keeps_top_k_and_fuses_the_rest_by_attention():
    x = torch.randn(2, 10, 4)
    attn = torch.rand(2, 10)
    out = build("evit:4")(VisualTokens(embeds=x, attn_to_cls=attn))
    assert out.num_tokens == 5
    for row in range(2):
        order = attn[row].argsort(descending=True).tolist()
        kept, rest = sorted(order[:4]), order[4:]
        w = attn[row, rest] / attn[row, rest].sum()
        fused = (x[row, rest] * w[:, None]).sum(0)
        positions = out.index[row].tolist()
        assert sorted([*kept, rest[0]]) == positions
        torch.testing.assert_close(out.embeds[row, positions.index(rest[0])], fused)
        assert out.size[row, positions.index(rest[0])] == 6
    assert build("evit:10").output_len(10) == 10


def test_recycle_merges_each_pruned_token_into_its_nearest_kept():
    x = torch.randn(1, 12, 6, generator=torch.Generator().manual_seed(3))
    out = build("recycle:4")(VisualTokens(embeds=x))
    norms = x[0].norm(dim=-1)
    kept = sorted(norms.topk(4).indices.tolist())
    unit = torch.nn.functional.normalize(x[0], dim=-1)
    groups = {k: [k] for k in kept}
    for i in range(12):
        if i not in kept:
            groups[max(kept, key=lambda k: float(unit[i] @ unit[k]))].append(i)
    assert out.index[0].tolist() == kept
    for pos, k in enumerate(kept):
        torch.testing.assert_close(out.embeds[0, pos], x[0, groups[k]].mean(0))
        assert out.size[0, pos] == len(groups[k])


def test_kmeans_recovers_separated_clusters():
    torch.manual_seed(0)
    centres = torch.eye(6)[:3] * 5
    members = [c + 0.05 * torch.randn(5, 6) for c in centres]
    x = torch.cat(members)[torch.randperm(15)].unsqueeze(0).repeat(2, 1, 1)
    out = build("kmeans:3")(VisualTokens(embeds=x))
    assert out.size.tolist() == [[5.0, 5.0, 5.0]] * 2
    found = sorted(out.embeds[0].tolist(), key=lambda v: max(range(6), key=lambda i: v[i]))
    expected = sorted(
        (m.mean(0).tolist() for m in members), key=lambda v: max(range(6), key=lambda i: v[i])
    )
    torch.testing.assert_close(torch.tensor(found), torch.tensor(expected), rtol=1e-4, atol=1e-4)
    assert torch.equal(out.index, out.index.sort(1).values)
