import pytest
import torch
import torch.nn.functional as F

from mmllm.errors import MissingSideInfoError
from mmllm.reduction import TextContext, VisualTokens, build
from mmllm.reduction.divprune import divprune_select


def naive_focus(
    x: torch.Tensor,
    words: torch.Tensor,
    k: int,
    alpha: float,
    floor: float,
    distinct: float = 1.0,
    cover: float = 0.0,
) -> list[int]:
    """Plain reference for one image: ``x [N, D]`` tokens, ``words [T, D]`` text embeddings."""
    n, n_words = x.shape[0], words.shape[0]
    unit = F.normalize(x, dim=-1)
    dist = [[1.0 - float(unit[i] @ unit[j]) for j in range(n)] for i in range(n)]
    wunit = F.normalize(words, dim=-1)
    relevance = []  # relevance[i][t]: how far word t singles out token i, above the floor
    for i in range(n):
        row = []
        for t in range(n_words):
            mean = sum(float(unit[m] @ wunit[t]) for m in range(n)) / n
            row.append(alpha * max(float(unit[i] @ wunit[t]) - mean - floor, 0.0))
        relevance.append(row)
    mean_dist = [sum(row) / n for row in dist]
    base = [(m / max(mean_dist)) ** distinct for m in mean_dist]

    def weight(i: int, chosen: list[int]) -> float:
        shown = [max((relevance[c][t] for c in chosen), default=0.0) for t in range(n_words)]
        return base[i] + max(max(relevance[i][t] - cover * shown[t], 0.0) for t in range(n_words))

    isolation = [min(dist[i][j] for j in range(n) if j != i) * weight(i, []) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (isolation[i], -i))]
    while len(chosen) < k:
        gains = {
            i: min(dist[i][c] for c in chosen) * weight(i, chosen)
            for i in range(n)
            if i not in chosen
        }
        chosen.append(max(gains, key=lambda i: (gains[i], -i)))
    return sorted(chosen)


@pytest.mark.parametrize(
    ("n", "k", "alpha", "floor", "distinct", "cover"),
    [
        (9, 3, 1.0, 0.0, 0.0, 0.0),
        (16, 5, 3.0, 0.15, 0.0, 0.0),
        (12, 12, 0.5, 0.3, 0.0, 0.0),
        (16, 4, 2.0, 0.1, 3.0, 0.0),
        (16, 5, 3.0, 0.0, 1.0, 1.0),
        (20, 6, 10.0, 0.1, 0.0, 0.5),
    ],
)
def test_matches_plain_reference(n, k, alpha, floor, distinct, cover):
    gen = torch.Generator().manual_seed(n * k)
    x = torch.randn(2, n, 8, generator=gen, dtype=torch.float64)
    words = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64)
    spec = f"focus:{k},alpha={alpha},floor={floor},distinct={distinct},cover={cover}"
    out = build(spec)(VisualTokens(embeds=x), TextContext(embeds=words))
    for row in range(2):
        expected = naive_focus(x[row], words[row], k, alpha, floor, distinct, cover)
        assert out.index[row].tolist() == expected


def test_cover_keeps_the_second_named_object_not_a_second_cell_of_the_first():
    """Six background cells; object A fills two cells that differ (its centre and an edge);
    object B looks like A (same shape, another colour: ``e1 + 0.7 e2``). Word 0 names A, word 1
    names B. Without ``cover`` the second pick is A's other cell: it is further from A's first
    cell than B is, and word 0 weighs it up as much. With ``cover=1`` word 0 is already shown,
    so only B keeps a word pulling for it, and B is kept."""
    background = torch.zeros(6, 8)
    background[:, 0] = 1.0
    background[torch.arange(6), torch.arange(6) % 2 + 6] = 0.05
    a_cells = torch.zeros(2, 8)
    a_cells[:, 1] = 1.0
    a_cells[1, 3] = 0.8
    b_cell = torch.zeros(1, 8)
    b_cell[0, 1], b_cell[0, 2] = 1.0, 0.7
    tokens = VisualTokens(embeds=torch.cat([background, a_cells, b_cell]).unsqueeze(0))
    words = torch.zeros(1, 2, 8)
    words[0, 0, 1] = 1.0
    words[0, 1, 2] = 1.0
    text = TextContext(embeds=words)
    assert build("focus:2,distinct=0,floor=0")(tokens, text).index.tolist() == [[6, 7]]
    assert build("focus:2,distinct=0,floor=0,cover=1")(tokens, text).index.tolist() == [[6, 8]]


def test_distinct_spends_a_small_budget_on_objects_not_a_second_background_cell():
    """Twelve background cells spread on a small circle and three look-alike objects: plain
    max-min takes a second background cell for its spread; ``distinct`` takes the objects."""
    angle = torch.arange(12) * torch.pi / 6
    background = torch.zeros(12, 8)
    background[:, 0] = 1.0
    background[:, 5], background[:, 6] = 0.35 * angle.cos(), 0.35 * angle.sin()
    objects = torch.zeros(3, 8)
    objects[:, 2] = 1.0  # alike to each other, orthogonal to the background
    objects[[0, 1, 2], [3, 4, 7]] = 0.4
    tokens = VisualTokens(embeds=torch.cat([background, objects]).unsqueeze(0))
    plain = build("focus:3,distinct=0")(tokens).index[0].tolist()
    assert len(set(plain) & {12, 13, 14}) == 1  # one object, then two background cells
    assert build("focus:3,distinct=4")(tokens).index.tolist() == [[12, 13, 14]]


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_llm_space_measures_distances_on_the_projected_tokens(alpha):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 6, generator=gen, dtype=torch.float64)
    weight = torch.randn(6, 8, generator=gen, dtype=torch.float64)
    words = torch.randn(2, 3, 8, generator=gen, dtype=torch.float64)
    text = TextContext(embeds=words, project=lambda v: torch.tanh(v @ weight))
    out = build(f"focus:5,alpha={alpha},floor=0,space=llm")(VisualTokens(embeds=x), text)
    for row in range(2):
        mapped = torch.tanh(x[row] @ weight)
        assert out.index[row].tolist() == naive_focus(mapped, words[row], 5, alpha, 0.0)
    encoder_space = build(f"focus:5,alpha={alpha},floor=0")(VisualTokens(embeds=x), text)
    assert not torch.equal(out.index, encoder_space.index)  # the setting changes the picks
    with pytest.raises(MissingSideInfoError, match="space=llm"):
        build("focus:5,space=llm")(VisualTokens(embeds=x))


def test_without_distinct_and_text_or_alpha_it_is_divprune():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 49, 16, generator=gen)
    tokens = VisualTokens(embeds=x, grid=(7, 7))
    expected = divprune_select(x, 6)
    assert torch.equal(build("focus:6,distinct=0")(tokens).index, expected)
    text = TextContext(embeds=torch.randn(3, 5, 16, generator=gen))
    assert torch.equal(build("focus:6,alpha=0,distinct=0")(tokens, text).index, expected)


def test_the_question_word_picks_its_cell_and_template_tokens_do_not():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 20, 8, generator=gen)
    template = x.mean(dim=1, keepdim=True).expand(1, 6, 8)  # alike to every cell
    text = TextContext(embeds=torch.cat([template, x[:, 13:14]], dim=1))
    out = build("focus:1,alpha=1")(VisualTokens(embeds=x), text)
    assert out.index.tolist() == [[13]]


def test_a_duplicate_of_a_chosen_token_is_never_taken():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 10, 8, generator=gen)
    x[0, 4] = x[0, 3]  # token 4 is token 3 again, and both are the most relevant
    text = TextContext(embeds=x[:, 3:4].clone())
    out = build("focus:5,alpha=10")(VisualTokens(embeds=x), text)
    picked = set(out.index[0].tolist())
    assert len(picked & {3, 4}) == 1


def test_spatial_term_spreads_look_alikes_by_place():
    x = torch.zeros(1, 9, 4)
    x[..., 0] = 1.0  # every cell looks the same
    tokens = VisualTokens(embeds=x, grid=(3, 3))
    out = build("focus:2,spatial=1")(tokens)
    assert out.index.tolist() == [[0, 8]]  # opposite corners


def test_keeps_index_size_and_dtype():
    x = torch.randn(2, 16, 8).bfloat16()
    tokens = VisualTokens(embeds=x, grid=(4, 4), size=torch.full((2, 16), 2))
    text = TextContext(embeds=torch.randn(2, 3, 8).bfloat16())
    out = build("focus:4,spatial=0.5")(tokens, text)
    assert out.embeds.dtype == torch.bfloat16 and out.num_tokens == 4
    assert torch.equal(out.embeds, x.gather(1, out.index.unsqueeze(-1).expand(-1, -1, 8)))
    assert bool((out.size == 2).all()) and bool((out.index.diff(dim=1) > 0).all())


def test_bad_settings_and_missing_projection_are_clear_errors():
    with pytest.raises(ValueError, match="space"):
        build("focus:3,space=pixels")
    for bad in ("alpha=-1", "distinct=-0.5"):
        with pytest.raises(ValueError, match="alpha, spatial, distinct and cover"):
            build(f"focus:4,{bad}")
    with pytest.raises(ValueError, match="budget 20 is larger than the 16"):
        build("focus:20").output_len(16)
    tokens = VisualTokens(embeds=torch.randn(1, 10, 8))
    with pytest.raises(MissingSideInfoError, match="width 5"):
        build("focus:3")(tokens, TextContext(embeds=torch.randn(1, 4, 5)))
