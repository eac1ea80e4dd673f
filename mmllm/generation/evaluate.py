"""How often generated images satisfy their prompts, by prompt kind and attribute.

Scores come from :func:`mmllm.generation.check.check` (colour, shape, count, relation read off
the pixels). Two reference rows make the number interpretable: ``ceiling`` checks the
tokenizer's reconstruction of the canonical image (the best any generator writing these ids can
do) and ``chance`` checks the canonical image of a random other prompt.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from mmllm.generation.check import CheckResult, check
from mmllm.generation.dataset import DrawSample
from mmllm.generation.model import ImageGenerator
from mmllm.vision_tokenizers.images import from_pixels, load_image

ATTRIBUTES = ("colour", "shape", "count", "relation")


def summarise(results: list[CheckResult], samples: list[DrawSample]) -> dict:
    """Pass rate overall, per prompt kind, for seen vs held-out combinations, per attribute."""
    groups: dict[str, list[bool]] = defaultdict(list)
    attributes: dict[str, list[bool]] = defaultdict(list)
    for r, s in zip(results, samples, strict=True):
        for key in ("overall", s.spec.kind, "heldout" if s.spec.uses_heldout() else "seen"):
            groups[key].append(r.passed)
        for a in ATTRIBUTES:
            if getattr(r, a) is not None:
                attributes[a].append(bool(getattr(r, a)))
    rate = {k: round(100 * sum(v) / len(v), 1) for k, v in groups.items()}
    rate["n"] = len(results)
    rate["attributes"] = {k: round(100 * sum(v) / len(v), 1) for k, v in attributes.items()}
    return rate


@torch.no_grad()
def evaluate_generator(
    model: ImageGenerator,
    samples: list[DrawSample],
    batch_size: int = 8,
    references: bool = True,
    **sampling,
) -> tuple[dict, list[Image.Image]]:
    """Generate for every sample's prompt and check it; returns the report and the images."""
    images: list[Image.Image] = []
    start = time.perf_counter()
    for i in tqdm(range(0, len(samples), batch_size), desc="generating", unit="batch"):
        batch = samples[i : i + batch_size]
        images += model.generate([s.prompt for s in batch], seed=i, **sampling)
    seconds = (time.perf_counter() - start) / len(samples)
    report = {
        "generated": summarise(
            [check(im, s.spec) for im, s in zip(images, samples, strict=True)], samples
        )
    }
    if references:
        tok = model.image_tokenizer
        recon = []
        for i in range(0, len(samples), batch_size):
            originals = [load_image(s.image) for s in samples[i : i + batch_size]]
            recon += from_pixels(tok.decode(tok.encode(originals).ids))
        report["ceiling"] = summarise(
            [check(im, s.spec) for im, s in zip(recon, samples, strict=True)], samples
        )
        shuffled = random.Random(0).sample(samples, len(samples))
        report["chance"] = summarise(
            [check(load_image(o.image), s.spec) for o, s in zip(shuffled, samples, strict=True)],
            samples,
        )
    report["overall"] = report["generated"]["overall"]
    report["sampling"] = sampling
    report["seconds_per_image"] = round(seconds, 2)
    return report, images


def save_samples(
    samples: list[DrawSample], images: list[Image.Image], path: Path, n: int = 16
) -> None:
    """A PNG grid of generated images titled with their prompts and verdicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(images))
    cols = min(8, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, sample in zip(axes.flat, images[:n], samples[:n], strict=False):
        ok = check(image, sample.spec).passed
        ax.imshow(image)
        ax.set_title(
            ("✓ " if ok else "✗ ") + sample.prompt,
            fontsize=6,
            color="green" if ok else "red",
            wrap=True,
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
