import json

import pytest

from mmllm.bench import (
    ABLATIONS,
    METHODS,
    _merge_chain,
    compare_predictions,
    reading_breakdown,
    run_reduction_bench,
    swap_images,
)
from mmllm.data.dataset import load_dataset
from mmllm.data.generate import make_dataset
from mmllm.errors import MMLLMError
from mmllm.reduction import build


def test_every_method_builds_at_every_budget_of_the_default_grid():
    n, side = 49, 7
    for method, spec_for in {**METHODS, **ABLATIONS}.items():
        for frac in (0.5, 0.25, 0.111, 0.056):
            k = max(1, round(frac * n))
            spec = spec_for(k, n, side)
            if spec is None:
                continue
            reducer = build(spec)
            assert reducer.output_len(n, (side, side)) <= n, (method, spec)


def test_merge_chains_reach_exactly_k():
    for name in ("tome", "pitome"):
        for k in (1, 3, 12, 24, 48):
            assert build(_merge_chain(name, 49, k)).output_len(49) == k


def test_bench_writes_table_json_and_plot(tmp_path, tiny):
    make_dataset(tmp_path / "data", 4, seed=0, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    model = tiny.model("llama")
    rows = run_reduction_bench(
        model, samples, ["random", "divprune"], tmp_path / "out", batch_size=2
    )
    assert len(rows) == 2 + 2 * 4
    assert rows[0]["method"] == "full" and rows[0]["visual_tokens"] == 16
    assert rows[1]["method"] == "wrong-image" and rows[1]["visual_tokens"] == 16
    assert rows[1]["agreement"] < 1 or rows[1]["nll_delta"] != 0  # other images change things
    assert [r["visual_tokens"] for r in rows[2:6]] == [8, 4, 2, 1]
    saved = json.loads((tmp_path / "out" / "reduction.json").read_text())
    assert len(saved) == len(rows)
    assert (tmp_path / "out" / "reduction.png").is_file()
    table = (tmp_path / "out" / "reduction.md").read_text()
    assert "| divprune |" in table
    assert table.startswith("Command (the latest run") and "Machine:" in table
    assert "2 per forward" in table and rows[0]["batch_size"] == 2
    half = rows[2]  # random at 50%: fewer prompt tokens, an ideal speed-up above 1
    assert half["prompt_tokens"] < rows[0]["prompt_tokens"]
    assert half["ideal_speedup"] == rows[0]["prompt_tokens"] / half["prompt_tokens"] > 1
    assert 0 < rows[0]["vision_ms"] < rows[0]["prefill_ms"]
    # full tokens against themselves: no likelihood change, every answer agrees
    assert rows[0]["nll_delta"] == 0 and rows[0]["agreement"] == 1
    assert rows[0]["answer_nll"] > 0 and set(rows[0]["per_task_nll"]) == set(rows[0]["per_task"])
    one = rows[5]  # random:1 keeps one of 16 tokens: the answers' likelihood must move
    assert one["nll_delta"] == one["answer_nll"] - rows[0]["answer_nll"] != 0
    assert one["nll_delta_se"] > 0 and 0 <= one["agreement"] <= 1
    assert "ΔNLL vs full" in table and "image info kept" in table


def test_swap_images_gives_each_sample_another_ones_image(tmp_path):
    make_dataset(tmp_path / "data", 3, seed=0, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    swapped = swap_images(samples)
    assert [s.images for s in swapped] == [samples[1].images, samples[2].images, samples[0].images]
    assert [s.messages for s in swapped] == [s.messages for s in samples]
    with pytest.raises(MMLLMError, match="at least 2"):
        swap_images(samples[:1])


def test_append_adds_methods_to_a_stored_result_of_the_same_model(tmp_path, tiny):
    make_dataset(tmp_path / "data", 4, seed=0, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    model = tiny.model("llama")
    out = tmp_path / "out"
    with pytest.raises(MMLLMError, match="does not exist"):
        run_reduction_bench(model, samples, ["random"], out, batch_size=2, append=True)
    first = run_reduction_bench(model, samples, ["random", "pool"], out, batch_size=2)
    rows = run_reduction_bench(model, samples, ["pool", "divprune"], out, batch_size=2, append=True)
    methods = [r["method"] for r in rows]
    assert methods[:2] == ["full", "wrong-image"]
    assert methods.count("random") == 4 and methods.count("divprune") == 4
    assert methods.count("pool") == len([r for r in first if r["method"] == "pool"])
    assert rows[:6] == first[:6]  # full, wrong image and random kept as stored
    assert len(json.loads((out / "reduction.json").read_text())) == len(rows)
    assert "| divprune |" in (out / "reduction.md").read_text()
    # a stored result from another model (here: another accuracy) is refused
    stored = json.loads((out / "reduction.json").read_text())
    stored[0]["answer_nll"] += 0.5
    (out / "reduction.json").write_text(json.dumps(stored))
    with pytest.raises(MMLLMError, match="another model or other samples"):
        run_reduction_bench(model, samples, ["random"], out, batch_size=2, append=True)


def _rows(task_correct: list[tuple[str, bool]]) -> list[dict]:
    return [{"task": t, "answer": str(i), "correct": c} for i, (t, c) in enumerate(task_correct)]


def test_compare_predictions_pairs_per_sample():
    base = _rows([("count", False), ("count", True), ("count", False), ("shape", True)])
    new = _rows([("count", True), ("count", False), ("count", True), ("shape", True)])
    out = compare_predictions(new, base)
    count = out["per_task"]["count"]
    assert (count["gained"], count["lost"], count["n"]) == (2, 1, 3)
    assert count["change"] == pytest.approx(100 / 3)
    # paired differences +1, -1, +1: sample SD sqrt(4/3), SE = SD / sqrt(3)
    assert count["se"] == pytest.approx(100 * (4 / 3) ** 0.5 / 3**0.5)
    assert out["per_task"]["shape"]["se"] == 0.0
    assert out["overall"]["change"] == pytest.approx(25.0)
    assert (out["overall"]["baseline"], out["overall"]["new"]) == (50.0, 75.0)


def test_compare_predictions_refuses_other_questions():
    base = _rows([("count", False), ("shape", True)])
    with pytest.raises(MMLLMError, match="cannot pair 1 predictions with 2"):
        compare_predictions(base[:1], base)
    swapped = [base[1], base[0]]
    with pytest.raises(MMLLMError, match="row 0 differs"):
        compare_predictions(swapped, base)


def test_reading_breakdown_scores_numbers_digit_by_digit():
    rows = [
        {"task": "text", "answer": "7773", "prediction": "7775", "correct": False},
        {"task": "text", "answer": "1034", "prediction": "1041", "correct": False},
        {"task": "text", "answer": "52", "prediction": "52", "correct": True},
        {"task": "text", "answer": "sun", "prediction": "sun", "correct": True},
        {"task": "text", "answer": "milk", "prediction": "jump", "correct": False},
        {"task": "count", "answer": "3", "prediction": "3", "correct": True},
    ]
    out = reading_breakdown(rows)
    assert out["words"] == {"n": 2, "correct": 1}
    numbers = out["numbers"]
    assert (numbers["n"], numbers["correct"]) == (3, 1)
    # digits present (multiset): 3/4, 3/4 ("1041" has one 1 of 1034's one), 2/2
    assert numbers["digit_recall"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    # same place: 777_ 3/4, 10__ 2/4, 52 2/2
    assert numbers["digits_in_place"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert numbers["length_right"] == 1.0
    assert reading_breakdown(rows[-1:]) is None
