import math

import pytest
import torch

from mmllm.errors import BudgetError
from mmllm.reduction import VisualTokens, build


def reference_coverage(x: torch.Tensor, grid: tuple[int, int], k: int, spatial: float, iters: int):
    """Plain loops: k-center seeds on the joint distance, Lloyd steps, size-weighted merge."""
    h, w = grid
    n = x.shape[0]
    unit = [v / v.norm() for v in x.double()]
    pos = [(i // w / max(h - 1, w - 1), i % w / max(h - 1, w - 1)) for i in range(n)]

    def dist(u, p, c, cp):
        return 1 - float(u @ c) + spatial * math.dist(p, cp)

    d = [[dist(unit[i], pos[i], unit[j], pos[j]) for j in range(n)] for i in range(n)]
    first = max(range(n), key=lambda i: (min(d[i][j] for j in range(n) if j != i), -i))
    seeds = [first]
    while len(seeds) < k:
        seeds.append(
            max(
                (i for i in range(n) if i not in seeds),
                key=lambda i: (min(d[i][s] for s in seeds), -i),
            )
        )
    seeds.sort()
    centres = [(unit[s], pos[s]) for s in seeds]
    for _ in range(iters):
        assign = [
            min(range(k), key=lambda c: (dist(unit[i], pos[i], *centres[c]), c)) for i in range(n)
        ]
        new = []
        for c in range(k):
            members = [i for i in range(n) if assign[i] == c]
            if not members:
                new.append(centres[c])
                continue
            s = sum(unit[i] for i in members)
            p = tuple(sum(pos[i][a] for i in members) / len(members) for a in range(2))
            new.append((s / s.norm(), p))
        centres = new
    assign = [
        min(range(k), key=lambda c: (dist(unit[i], pos[i], *centres[c]), c)) for i in range(n)
    ]
    for c, s in enumerate(seeds):
        assign[s] = c
    groups = [[i for i in range(n) if assign[i] == c] for c in range(k)]
    out = []
    for c, g in enumerate(groups):
        to_centre = {i: dist(unit[i], pos[i], *centres[c]) for i in g}
        nearest = min(to_centre.values())
        rep = min(i for i in g if to_centre[i] <= nearest + 1e-6)  # ties: the first member
        out.append((rep, x[g].double().mean(0), len(g)))
    return sorted(out, key=lambda e: e[0])


@pytest.mark.parametrize(
    ("side", "k", "spatial", "iters"), [(4, 5, 0.5, 3), (5, 3, 2.0, 0), (3, 4, 0.0, 2)]
)
def test_matches_reference(side, k, spatial, iters):
    gen = torch.Generator().manual_seed(side * 10 + k)
    x = torch.randn(2, side * side, 6, generator=gen)
    out = build(f"coverage:{k},spatial={spatial},iters={iters}")(VisualTokens(embeds=x))
    for row in range(2):
        expected = reference_coverage(x[row], (side, side), k, spatial, iters)
        assert out.index[row].tolist() == [e[0] for e in expected]
        torch.testing.assert_close(
            out.embeds[row].double(), torch.stack([e[1] for e in expected]), rtol=1e-5, atol=1e-5
        )
        assert out.size[row].tolist() == [e[2] for e in expected]


def test_far_apart_look_alikes_stay_separate():
    """Two identical objects in opposite corners of a uniform background: coverage keeps them
    apart (the count survives), feature-only k-means merges them into one token."""
    side, dim = 6, 8
    gen = torch.Generator().manual_seed(0)
    background, obj = torch.randn(dim, generator=gen), torch.randn(dim, generator=gen)
    x = background.repeat(1, side * side, 1) + 0.01 * torch.randn(
        1, side * side, dim, generator=gen
    )
    x[0, 0] = x[0, side * side - 1] = obj
    tokens = VisualTokens(embeds=x)
    cov = build("coverage:3")(tokens)
    objects = [
        i
        for i, e in zip(cov.index[0].tolist(), cov.embeds[0], strict=True)
        if torch.allclose(e, obj)
    ]
    assert objects == [0, side * side - 1]
    km = build("kmeans:3")(tokens)
    assert sum(torch.allclose(e, obj) for e in km.embeds[0]) == 1


def test_spatial_zero_is_kmeans_and_size_is_conserved():
    x = torch.randn(3, 49, 5)
    size = torch.randint(1, 3, (3, 49)).float()
    cov = build("coverage:7,spatial=0,iters=10")(VisualTokens(embeds=x, size=size))
    km = build("kmeans:7")(VisualTokens(embeds=x, size=size))
    assert torch.equal(cov.index, km.index)
    torch.testing.assert_close(cov.embeds, km.embeds)
    assert torch.equal(cov.size.sum(1), size.sum(1))


def test_budget_errors():
    with pytest.raises(BudgetError, match="larger than the 49 tokens"):
        build("coverage:50").output_len(49)
