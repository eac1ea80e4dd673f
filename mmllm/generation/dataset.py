"""Folders of (prompt, image) pairs for training and scoring a generator.

``out/draw.jsonl`` rows: ``{"prompt": ..., "image": "images/00001.png", "spec": {...}}``; the
images are the canonical renders of each spec. The train split never names a held-out
(colour, shape) combination; the test split is half held-out, half seen combinations.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from mmllm.errors import MMLLMError
from mmllm.generation.prompts import DrawSpec, draw, sample_spec

FILE = "draw.jsonl"
_SPLIT_SEED = {"train": 0, "test": 10_000}


@dataclass
class DrawSample:
    prompt: str
    image: Path
    spec: DrawSpec


def make_draw_dataset(out: str | Path, n: int, seed: int = 0, split: str = "train") -> Path:
    """Render ``n`` prompts with their canonical images into ``out``; returns the JSONL path."""
    if split not in _SPLIT_SEED:
        raise MMLLMError(f"split must be one of {', '.join(_SPLIT_SEED)}, got '{split}'")
    if n <= 0:
        raise MMLLMError(f"n must be positive, got {n}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + _SPLIT_SEED[split])
    with (out / FILE).open("w") as f:
        for i in tqdm(range(n), desc=f"draw {split}", unit="image"):
            spec = sample_spec(rng, heldout=False if split == "train" else i % 2 == 1)
            name = f"images/{i:06d}.png"
            draw(spec).save(out / name)
            f.write(json.dumps({"prompt": spec.prompt, "image": name, "spec": spec.to_dict()}))
            f.write("\n")
    return out / FILE


def load_draw_dataset(folder: str | Path) -> list[DrawSample]:
    """Read ``draw.jsonl`` of a folder, with clear errors for bad rows."""
    folder = Path(folder)
    path = folder / FILE if folder.is_dir() else folder
    if not path.is_file():
        raise MMLLMError(f"{path}: no {FILE} (make one with `mmllm data make-draw`)")
    samples = []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            sample = DrawSample(
                row["prompt"], path.parent / row["image"], DrawSpec.from_dict(row["spec"])
            )
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise MMLLMError(f"{path}:{line_no}: malformed row ({err})") from None
        samples.append(sample)
    if not samples:
        raise MMLLMError(f"{path}: no rows")
    return samples
