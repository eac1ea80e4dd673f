import pytest

from mmllm.data.dataset import load_dataset
from mmllm.data.generate import make_dataset
from mmllm.evaluate import evaluate, length_sorted_batches


def testlength_sorted_batches_sort_by_length_and_keep_ties_in_order():
    lengths = [5, 3, 9, 3, 5, 1]
    assert length_sorted_batches(lengths, 2) == [[5, 1], [3, 0], [4, 2]]
    assert sorted(i for b in length_sorted_batches(lengths, 4) for i in b) == list(range(6))
    assert length_sorted_batches([], 8) == []


def test_predictions_come_back_in_sample_order_whatever_the_batching(tmp_path, tiny):
    make_dataset(tmp_path / "data", 6, seed=3, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    model = tiny.model("llama")
    lengths = [
        len(model.tokenizer(s.question)["input_ids"]) for s in samples
    ]  # the generated questions differ in length, so sorting reorders them
    assert len(set(lengths)) > 1
    one = evaluate(model, samples, batch_size=1, progress=False, answer_nll=True)
    three = evaluate(model, samples, batch_size=3, progress=False, answer_nll=True)
    assert [p["answer"] for p in three.predictions] == [s.answer for s in samples]
    assert [p["task"] for p in three.predictions] == [s.task for s in samples]
    for a, b in zip(one.predictions, three.predictions, strict=True):
        assert a["prediction"] == b["prediction"]
        assert a["answer_nll"] == pytest.approx(b["answer_nll"], abs=1e-4)
    assert one.overall == three.overall and one.prompt_tokens == three.prompt_tokens
    assert three.prefill_ms > 0 and three.total_ms > 0


def test_a_reducer_that_needs_the_question_runs_in_every_timed_call(tmp_path, tiny):
    """``focus:3,space=llm`` refuses to run without the prompt's text; the vision timing call
    must give it the question as prefill does (it used to encode the images alone)."""
    make_dataset(tmp_path / "data", 4, seed=3, split="test", progress=False)
    samples = load_dataset(tmp_path / "data")
    model = tiny.model("llama")
    model.set_reduction("focus:3,space=llm")
    result = evaluate(model, samples, batch_size=2, progress=False)
    assert result.visual_tokens == 3 and result.vision_ms > 0
