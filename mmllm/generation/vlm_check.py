"""Scoring generated images with the project's own understanding model.

Each prompt becomes the questions the understanding model was trained on (shape and colour of
the object, how many, where one object is relative to the other), and an image passes when
every answer matches the prompt. The same questions on the canonical images give the model's
own ceiling: a weak understanding model caps this score whatever the generator does, so both
numbers are reported together.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from mmllm.data.dataset import Sample
from mmllm.data.scenes import PLURALS
from mmllm.generation.prompts import DrawSpec

_WHERE = {"left of": "left", "right of": "right", "above": "above", "below": "below"}


def questions(spec: DrawSpec) -> list[tuple[str, str, str]]:
    """``(task, question, expected answer)`` for what a spec asks."""
    if spec.kind == "pair":
        (c1, s1), (c2, s2) = spec.objects
        return [
            (
                "relation",
                f"Where is the {c1} {s1} relative to the {c2} {s2}?",
                _WHERE[spec.relation],
            ),
            ("shape", f"What shape is the {c1} object?", s1),
            ("shape", f"What shape is the {c2} object?", s2),
        ]
    colour, shape = spec.objects[0]
    asked = [("shape", f"What shape is the {colour} object?", shape)]
    if spec.kind == "count":
        asked.append(("count", f"How many {PLURALS[shape]} are there?", str(spec.count)))
    else:
        asked.append(("colour", f"What colour is the {shape}?", colour))
    return asked


def vlm_pass_rate(model, images: list[Image.Image], specs: list[DrawSpec], batch_size: int = 8):
    """Share of images whose every question the understanding model answers as the prompt says;
    returns ``(pass rate in %, per-question accuracy in % by task)``."""
    from mmllm.evaluate import evaluate

    samples, owner = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (image, spec) in enumerate(zip(images, specs, strict=True)):
            path = Path(tmp) / f"{i}.png"
            image.save(path)
            for task, question, answer in questions(spec):
                messages = [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": question}],
                    }
                ]
                samples.append(Sample(messages, [path], answer, task))
                owner.append(i)
        result = evaluate(model, samples, batch_size=batch_size, progress=True)
    ok = [True] * len(images)
    for i, prediction in zip(owner, result.predictions, strict=True):
        ok[i] = ok[i] and prediction["correct"]
    per_task = {k: round(100 * v, 1) for k, v in result.per_task.items()}
    return round(100 * sum(ok) / len(ok), 1), per_task
