"""Write a generated VQA / captioning data set in mmllm's data format.

Deterministic: the same ``(seed, split, n)`` gives the same files; a larger ``n`` extends a
smaller one. Splits are disjoint by image content: each scene's quantised content hash picks its
split (80% train, 10% val, 10% test) and a scene is only written to the split its hash picks.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

from tqdm.auto import tqdm

from mmllm.data.scenes import Scene, render
from mmllm.data.tasks import TASKS, Phrasings, _Retry, new_scene

SPLITS = ("train", "val", "test")
_SPLIT_OF_BUCKET = ["train"] * 8 + ["val", "test"]


#: Tasks whose scenes hold distinct objects (distinct shapes and distinct colours), so every
#: object can be asked about by its shape or by its colour (``make_dataset(dense=True)``).
DENSE_TASKS = ("shape", "colour")


def _phrase(
    rng: random.Random, options: Phrasings, slots: dict[str, str], phrasings: str
) -> tuple[str, str]:
    """One phrasing of a question (as ``phrasings`` asks) and which kind it was: ``seen``,
    ``heldout`` or ``extra`` (a training-only paraphrase, in ``"wide"`` mode)."""
    pool = [(t, "seen") for t in options.seen] * (phrasings != "heldout")
    pool += [(t, "heldout") for t in options.heldout] * (phrasings in ("heldout", "all"))
    pool += [(t, "extra") for t in options.extra] * (phrasings == "wide")
    template, which = rng.choice(pool)
    return template.format(**slots), which


def _more_turns(
    rng: random.Random, scene: Scene, asked: dict[str, str], phrasings: str
) -> list[dict]:
    """Follow-up turns about every object the first question did not name, in random order."""
    others = [o for o in scene.objects if o.colour != asked.get("colour")]
    others = [o for o in others if o.shape != asked.get("shape")]
    rng.shuffle(others)
    turns = []
    for obj in others:
        by_colour = rng.random() < 0.5
        task = TASKS["shape" if by_colour else "colour"]
        slots = {"colour": obj.colour} if by_colour else {"shape": obj.shape}
        question, _ = _phrase(rng, task.phrasings["open"], slots, phrasings)
        turns.append({"role": "user", "content": [{"type": "text", "text": question}]})
        reply = obj.shape if by_colour else obj.colour
        turns.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})
    return turns


def regions_of(scene: Scene) -> list[dict]:
    """The scene's objects as grounding regions: a box (fractions of the image, rounded to
    1e-4) and the words for what it shows (``"red circle"``); see :mod:`mmllm.grounding`.
    Rendered text is a region too, marked ``"kind": "text"`` and holding what it reads (lower
    case, as the text task answers): stage 0 leaves it out, the reading stage
    (:mod:`mmllm.reading`) trains on it."""
    regions = [
        {"box": [round(v, 4) for v in o.box(scene.width, scene.height)], "text": o.name}
        for o in scene.objects
    ]
    if scene.text is not None:
        box = scene.text.box(scene.width, scene.height)
        regions.append(
            {"box": [round(v, 4) for v in box], "text": scene.text.value.lower(), "kind": "text"}
        )
    return regions


def split_of(scene: Scene) -> str:
    """The split a scene belongs to, from its content hash."""
    return _SPLIT_OF_BUCKET[int(scene.content_key()[:8], 16) % 10]


def make_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    split: str = "train",
    tasks: list[str] | None = None,
    phrasings: str | None = None,
    progress: bool = True,
    dense: bool = False,
) -> Path:
    """Render ``n`` samples into ``out/{split}.jsonl`` and ``out/images/``.

    Args:
        tasks: task names to draw from (default: all), cycled so each gets ``n / len`` samples.
        phrasings: ``"seen"`` (only phrasings used for training), ``"wide"`` (the seen ones
            plus the training-only paraphrases in ``Phrasings.extra``; train split only),
            ``"heldout"`` (only held-out phrasings) or ``"all"`` (seen + held-out); default
            ``"seen"`` for train, ``"all"`` otherwise.
        dense: rows of the tasks in ``DENSE_TASKS`` become multi-turn conversations that ask,
            after the task's own question, the colour or the shape of every other object in the
            scene (one question per object, so no answer can be read off an earlier turn):
            several supervised answers for one pass over the image, for training.
    Returns:
        the JSONL path.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got '{split}'")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    names = list(tasks or TASKS)
    unknown = [t for t in names if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; known: {', '.join(TASKS)}")
    phrasings = phrasings or ("seen" if split == "train" else "all")
    if phrasings not in ("seen", "wide", "heldout", "all"):
        raise ValueError(f"phrasings must be seen, wide, heldout or all, got '{phrasings}'")
    if split == "train" and phrasings not in ("seen", "wide"):
        raise ValueError(
            "the train split uses only seen (or wide) phrasings (held-out ones are for eval)"
        )
    if split != "train" and phrasings == "wide":
        raise ValueError("wide phrasings (training-only paraphrases) are for the train split")

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"mmllm-data/{seed}/{split}")
    jsonl = out / f"{split}.jsonl"
    counts: Counter[str] = Counter()
    with jsonl.open("w") as f:
        for i in tqdm(range(n), desc=f"rendering {split}", disable=not progress, unit="img"):
            task = TASKS[names[i % len(names)]]
            want_yes = (i // len(names)) % 2 == 0
            while True:
                scene = new_scene(rng)
                try:
                    kind, slots, answer = task.make(rng, scene, want_yes)
                except _Retry:
                    continue
                if split_of(scene) == split:
                    break
            question, which = _phrase(rng, task.phrasings[kind], slots, phrasings)
            name = f"images/{split}-{seed}-{i:06d}.png"
            render(scene).save(out / name, optimize=True)
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": question}],
                },
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
            if dense and task.name in DENSE_TASKS:
                messages += _more_turns(rng, scene, slots, phrasings)
                answer = messages[-1]["content"][0]["text"]
            row = {
                "messages": messages,
                "images": [name],
                "answer": answer,
                "task": task.name,
                "phrasing": which,
                "id": f"{split}-{seed}-{i:06d}",
                "content_key": scene.content_key(),
                "regions": [regions_of(scene)],
            }
            f.write(json.dumps(row) + "\n")
            counts[task.name] += 1
    return jsonl
