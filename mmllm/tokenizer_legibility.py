"""Does fine detail survive a tokenizer? Ask the understanding model, not PSNR.

PSNR averages over pixels, so a reconstruction can score well while the word in the image or a
small object among distractors is gone. :func:`legibility` runs the understanding model on the
same questions twice -- on the original images and on the tokenizer's reconstructions (decoded,
then resized back to the original size) -- and reports accuracy per task on both, and the share
of originally right answers that stay right ("kept").
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from mmllm.data.dataset import Sample
from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer
from mmllm.vision_tokenizers.images import from_pixels, load_image

DETAIL_TASKS = ("text", "small_object")


def reconstruct(tokenizer: DiscreteTokenizer, image: Image.Image) -> Image.Image:
    """Encode and decode one image; the result is resized back to the input size."""
    [decoded] = from_pixels(tokenizer.decode(tokenizer.encode([image]).ids))
    return decoded.resize(image.size, Image.BICUBIC)


def legibility(
    tokenizer: DiscreteTokenizer,
    model,
    samples: list[Sample],
    tasks: tuple[str, ...] = DETAIL_TASKS,
    batch_size: int = 8,
) -> dict:
    """Understanding accuracy (%) per task on originals vs reconstructions, and ``kept``."""
    from mmllm.evaluate import evaluate

    chosen = [s for s in samples if s.task in tasks and len(s.images) == 1]
    if not chosen:
        raise MMLLMError(f"no single-image samples of tasks {', '.join(tasks)} in the data")
    original = evaluate(model, chosen, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        rebuilt = []
        for i, s in enumerate(chosen):
            path = Path(tmp) / f"{i}.png"
            reconstruct(tokenizer, load_image(s.images[0])).save(path)
            rebuilt.append(Sample(s.messages, [path], s.answer, s.task, s.extra))
        recon = evaluate(model, rebuilt, batch_size=batch_size)
    right_before = [p["correct"] for p in original.predictions]
    right_after = [p["correct"] for p in recon.predictions]
    kept = sum(a and b for a, b in zip(right_before, right_after, strict=True))
    return {
        "n": len(chosen),
        "original": {k: round(100 * v, 1) for k, v in original.per_task.items()},
        "reconstructed": {k: round(100 * v, 1) for k, v in recon.per_task.items()},
        "original_overall": round(100 * original.overall, 1),
        "reconstructed_overall": round(100 * recon.overall, 1),
        "kept": round(100 * kept / max(1, sum(right_before)), 1),
    }
