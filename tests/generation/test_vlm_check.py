"""The understanding-model judge: questions a prompt implies, and the pass rate plumbing."""

from mmllm.generation.prompts import DrawSpec, draw
from mmllm.generation.vlm_check import questions, vlm_pass_rate


def test_questions_follow_the_spec():
    pair = DrawSpec("pair", [("red", "star"), ("blue", "square")], relation="left of")
    assert questions(pair) == [
        ("relation", "Where is the red star relative to the blue square?", "left"),
        ("shape", "What shape is the red object?", "star"),
        ("shape", "What shape is the blue object?", "square"),
    ]
    count = DrawSpec("count", [("green", "cross")], count=3)
    assert ("count", "How many crosses are there?", "3") in questions(count)
    single = DrawSpec("single", [("pink", "circle")])
    assert ("colour", "What colour is the circle?", "pink") in questions(single)


def test_pass_rate_needs_every_answer(tiny, monkeypatch):
    import mmllm.evaluate
    from mmllm.evaluate import evaluate

    specs = [DrawSpec("single", [("red", "circle")]), DrawSpec("count", [("blue", "star")], 2)]
    seen = {}

    def one_wrong(model, samples, **kwargs):  # the real evaluate, then the 2nd answer flipped
        result = evaluate(model, samples, **kwargs)
        seen["questions"] = [s.question for s in samples]
        for i, p in enumerate(result.predictions):
            p["correct"] = i != 1
        return result

    monkeypatch.setattr(mmllm.evaluate, "evaluate", one_wrong)
    rate, per_task = vlm_pass_rate(tiny.model(), [draw(s) for s in specs], specs)
    assert seen["questions"] == [q for s in specs for _, q, _ in questions(s)]
    assert rate == 50.0  # image 0 lost its colour answer, image 1 kept both
    assert set(per_task) == {"shape", "colour", "count"}
