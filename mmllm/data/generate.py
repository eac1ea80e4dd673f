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
from mmllm.data.tasks import TASKS, _Retry, new_scene

SPLITS = ("train", "val", "test")
_SPLIT_OF_BUCKET = ["train"] * 8 + ["val", "test"]


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
) -> Path:
    """Render ``n`` samples into ``out/{split}.jsonl`` and ``out/images/``.

    Args:
        tasks: task names to draw from (default: all), cycled so each gets ``n / len`` samples.
        phrasings: ``"seen"`` (only phrasings used for training), ``"heldout"`` (only held-out
            phrasings) or ``"all"``; default ``"seen"`` for train, ``"all"`` otherwise.
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
    if phrasings not in ("seen", "heldout", "all"):
        raise ValueError(f"phrasings must be seen, heldout or all, got '{phrasings}'")
    if split == "train" and phrasings != "seen":
        raise ValueError("the train split uses only seen phrasings (held-out ones are for eval)")

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
            options = task.phrasings[kind]
            pool = [(t, "seen") for t in options.seen] * (phrasings != "heldout")
            pool += [(t, "heldout") for t in options.heldout] * (phrasings != "seen")
            template, which = rng.choice(pool)
            question = template.format(**slots)
            name = f"images/{split}-{seed}-{i:06d}.png"
            render(scene).save(out / name, optimize=True)
            row = {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": question}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
                "images": [name],
                "answer": answer,
                "task": task.name,
                "phrasing": which,
                "id": f"{split}-{seed}-{i:06d}",
                "content_key": scene.content_key(),
            }
            f.write(json.dumps(row) + "\n")
            counts[task.name] += 1
    return jsonl
