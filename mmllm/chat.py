"""Chat with an mmllm model: images + text in, text out (greedy by default, deterministic)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmllm.vision_tokenizers.images import ImageLike, load_image


def user_turn(text: str, n_images: int = 0) -> dict:
    """A user message with ``n_images`` image parts before the text."""
    parts = [{"type": "image"} for _ in range(n_images)]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


@torch.no_grad()
def reply(
    model,
    messages: Sequence[dict],
    images: Sequence[ImageLike],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
) -> str:
    """The model's answer to a conversation (images in the order of the image parts)."""
    from mmllm.processor import MMLLMProcessor

    processor = MMLLMProcessor.from_model(model)
    pil = [load_image(im) for im in images]  # clear errors for bad images, before the model runs
    inputs = processor([list(messages)], [pil])
    sampling = (
        {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    )
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    return processor.decode(ids)[0]
