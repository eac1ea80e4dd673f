"""benchmarks/prefill_scaling.py: every (model, spec) is timed, speed-ups are against each
model's own full-token row, and the table and plot are written."""

import json

import pytest

from mmllm.data.dataset import load_dataset
from mmllm.data.generate import make_dataset


@pytest.fixture(scope="module")
def scaling(load_script):
    return load_script("prefill_scaling")


def test_rows_per_model_and_spec_against_their_own_base(scaling, tiny, tmp_path):
    make_dataset(tmp_path / "data", 4, seed=0, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    models = {"merged": tiny.model("llama"), "unmerged": tiny.model("llama")}
    rows = scaling.measure(models, samples, ["identity", "random:4"], [2], repeats=1)
    assert [(r["lora"], r["spec"]) for r in rows] == [
        ("merged", "identity"),
        ("merged", "random:4"),
        ("unmerged", "identity"),
        ("unmerged", "random:4"),
    ]
    for base, reduced in (rows[:2], rows[2:]):
        assert base["llm_speedup"] == 1.0 and base["ideal_speedup"] == 1.0
        assert reduced["prompt_tokens"] == base["prompt_tokens"] - 12  # 16 -> 4 visual tokens
        assert reduced["ideal_speedup"] == base["prompt_tokens"] / reduced["prompt_tokens"]
        assert reduced["llm_share_of_ideal"] == pytest.approx(
            reduced["llm_speedup"] / reduced["ideal_speedup"]
        )
    scaling.write(rows, tmp_path / "out" / "scaling", len(samples))
    assert len(json.loads((tmp_path / "out" / "scaling.json").read_text())) == 4
    table = (tmp_path / "out" / "scaling.md").read_text()
    assert "| 2 | unmerged | random:4 |" in table
    assert (tmp_path / "out" / "scaling.png").is_file()


def test_specs_keep_their_own_options(scaling):
    text = "identity,focus:5,distinct=1,divprune:5,pdrop:layers=2/8/16,ratios=1/0.5/0.2"
    assert scaling.split_specs(text) == [
        "identity",
        "focus:5,distinct=1",
        "divprune:5",
        "pdrop:layers=2/8/16,ratios=1/0.5/0.2",
    ]
