import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmllm.errors import BudgetError, SpecError
from mmllm.reduction import (
    REDUCERS,
    BaseReducer,
    Chain,
    Reducer,
    VisualTokens,
    build,
    describe,
    register,
)


def test_positional_and_keyword_forms_are_equal():
    assert build("random:8").spec == build("random:k=8").spec == "random:k=8,seed=0"
    assert build("random:8,seed=3").seed == 3
    assert build("pool:3x3").window == (3, 3)


def test_spec_round_trips():
    for spec in (
        "identity",
        "random:k=5,seed=1",
        "pool:window=2x2",
        "pool:window=2x2+random:k=3,seed=0",
    ):
        assert build(spec).spec == spec


def test_chain_is_a_reducer():
    chain = build("pool:2x2+random:10")
    assert isinstance(chain, Chain) and isinstance(chain, Reducer)
    assert chain.output_len(196, (14, 14)) == 10


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("divprun:64", "unknown reducer 'divprun'"),
        ("radnom:4", "Did you mean 'random'"),
        ("random", "needs parameter"),
        ("random:abc", "expects int"),
        ("random:4,colour=1", "has no parameter 'colour'"),
        ("random:4,5,6", "at most 2 positional"),
        ("random:k=4,4", "positional value"),
        ("pool:2y2", "expects SxS"),
        ("", "empty reducer spec"),
        ("random:4+", "unknown reducer ''"),
    ],
)
def test_bad_specs_give_clear_errors(spec, message):
    with pytest.raises(SpecError, match=message):
        build(spec)


def test_unknown_reducer_lists_known_ones():
    with pytest.raises(SpecError) as err:
        build("nope:1")
    for name in REDUCERS:
        assert name in str(err.value)


def test_budget_larger_than_tokens():
    with pytest.raises(BudgetError, match="larger than the 49 tokens"):
        build("random:50").output_len(49)
    with pytest.raises(BudgetError, match="positive"):
        build("random:0").output_len(49)


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):

        @register("random")
        @dataclasses.dataclass
        class Again(BaseReducer):  # pragma: no cover - never used
            def output_len(self, n_in, grid=None):
                return n_in

            def reduce(self, tokens, text):
                return tokens


def test_describe_lists_params_paper_and_needs():
    rows = {r["name"]: r for r in describe()}
    assert {"identity", "random", "pool"} <= rows.keys()
    assert [p["name"] for p in rows["random"]["params"]] == ["k", "seed"]
    assert rows["random"]["params"][0]["required"]
    assert all(r["paper"] for r in rows.values())


#: A spec for each registered reducer: {k} is a keep budget <= n, {half} a count <= n // 2.
#: A newly registered reducer must be added here, so the contract test covers it.
CONTRACT_SPECS = {
    "identity": "identity",
    "random": "random:{k}",
    "pool": "pool:2x2",
    "divprune": "divprune:{k}",
    "importance": "importance:{k},score=norm",
    "tome": "tome:r={half}",
    "pitome": "pitome:r={half}",
    "visionzip": "visionzip:dominant={half},contextual={half},score=norm",
    "evit": "evit:{k},score=norm",
    "recycle": "recycle:{k}",
    "kmeans": "kmeans:{k}",
    "coverage": "coverage:{k}",
    "focus": "focus:{k}",
    "dpp": "dpp:{k}",
    "fastv": "fastv:layer=1,keep={k}",
    "pdrop": "pdrop:layers=1/2,ratios=0.5/0.25",
    "todre": "todre:{k},layer=1",
}


def test_every_reducer_is_covered_by_the_contract_test():
    assert set(CONTRACT_SPECS) == set(REDUCERS)


@pytest.mark.parametrize("name", sorted(REDUCERS))
@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 3), side=st.integers(2, 9), dim=st.integers(1, 5), frac=st.floats(0, 1))
def test_output_len_equals_real_length(name, batch, side, dim, frac):
    """The contract vLLM relies on: output_len(n) is the real output count, for any shape."""
    n = side * side
    reducer = build(
        CONTRACT_SPECS[name].format(k=max(1, round(frac * n)), half=max(1, int(frac * (n // 2))))
    )
    tokens = VisualTokens(embeds=torch.randn(batch, n, dim))
    out = reducer(tokens)
    assert out.num_tokens == reducer.output_len(n, (side, side))
    assert out.embeds.shape == (batch, out.num_tokens, dim)
    assert out.index.shape == out.size.shape == (batch, out.num_tokens)


@pytest.mark.parametrize("name", sorted(REDUCERS))
def test_bf16_batched_and_deterministic(name):
    """Every reducer keeps bf16, handles B > 1 with different rows, and repeats itself exactly."""
    gen = torch.Generator().manual_seed(0)
    embeds = torch.randn(3, 49, 8, generator=gen).to(torch.bfloat16)
    reducer = build(CONTRACT_SPECS[name].format(k=7, half=12))
    first, second = reducer(VisualTokens(embeds=embeds)), reducer(VisualTokens(embeds=embeds))
    assert first.embeds.dtype == torch.bfloat16 and torch.isfinite(first.embeds.float()).all()
    assert torch.equal(first.embeds, second.embeds) and torch.equal(first.index, second.index)
    if name != "random":  # random draws per row position, by design
        alone = reducer(VisualTokens(embeds=embeds[1:2]))  # rows do not depend on neighbours
        assert torch.equal(alone.index[0], first.index[1])
