"""The README's main job: the default model answers questions about a few images, at full and at a
reduced visual-token budget, with token counts and timings side by side.

The images are generated on the fly (the generator is deterministic, so they are the same on every
machine) plus the bundled photos; nothing is downloaded.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from mmllm.assets import asset_path
from mmllm.reduction import build

#: (task, ...) picked from the generated test split, one per task.
DEMO_TASKS = ("colour", "shape", "count", "position", "text")
PHOTO_QUESTIONS = (
    ("cat.jpg", "What is in the picture?"),
    ("coffee.jpg", "What colour is the cup?"),
)


def _demo_samples(folder: Path) -> list[tuple[Path, str, str | None]]:
    from mmllm.data.dataset import load_dataset
    from mmllm.data.generate import make_dataset

    make_dataset(folder, 45, seed=1234, split="test", progress=False)
    samples = load_dataset(folder)
    picked = [next(s for s in samples if s.task == t) for t in DEMO_TASKS]
    rows = [(s.images[0], s.question, s.answer) for s in picked]
    rows += [(asset_path(name), q, None) for name, q in PHOTO_QUESTIONS]
    return rows


@torch.no_grad()
def _answer(model, image: Path, question: str, max_new_tokens: int) -> tuple[str, float]:
    from mmllm.chat import reply, user_turn

    start = time.perf_counter()
    text = reply(model, [user_turn(question, 1)], [image], max_new_tokens)
    return text, (time.perf_counter() - start) * 1000


def run_demo(
    model_path: Path | None, reduction: str, max_new_tokens: int, console: Console
) -> list[dict]:
    """Answer the demo questions at full tokens and at ``reduction``; print and return them."""
    from mmllm.default_model import load_model

    build(reduction)  # a bad spec fails before loading anything
    with console.status(
        "loading the default model (EfficientNet-lite0 + adapter + SmolLM2 + LoRA)"
    ):
        model = load_model(model_path)
    full_spec = model.config.reduction
    full_tokens = model.num_image_tokens()
    model.set_reduction(reduction)
    reduced_tokens = model.num_image_tokens()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for image, question, reference in _demo_samples(Path(tmp)):
            model.set_reduction(full_spec)
            full, full_ms = _answer(model, image, question, max_new_tokens)
            model.set_reduction(reduction)
            reduced, reduced_ms = _answer(model, image, question, max_new_tokens)
            records.append(
                {
                    "image": image.name,
                    "question": question,
                    "reference": reference,
                    "full": full,
                    "full_ms": full_ms,
                    "reduced": reduced,
                    "reduced_ms": reduced_ms,
                }
            )
    model.set_reduction(full_spec)
    table = Table(
        title=f"default model: {full_tokens} visual tokens vs '{reduction}' "
        f"({reduced_tokens} tokens)"
    )
    for col in (
        "image",
        "question",
        "reference",
        f"answer ({full_tokens} tok)",
        "ms",
        f"answer ({reduced_tokens} tok)",
        "ms ",
    ):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r["image"],
            r["question"],
            r["reference"] or "-",
            r["full"],
            f"{r['full_ms']:.0f}",
            r["reduced"],
            f"{r['reduced_ms']:.0f}",
        )
    console.print(table)
    return records
