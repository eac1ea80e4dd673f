"""Drawing requests in chat, and writing generated images to disk.

``drawing_request("Please draw a red circle left of a blue square")`` -> ``"a red circle left of
a blue square"``; anything that is not a request to draw returns ``None`` and goes to the
understanding model as usual.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image

from mmllm.errors import MMLLMError

_REQUEST = re.compile(
    r"^\s*(?:please\s+|can you\s+|could you\s+)?"
    r"(?:draw|paint|sketch|"
    r"(?:generate|make|create|render|show me)\s+(?:me\s+)?(?:an?\s+)?(?:image|picture|drawing)"
    r"\s+(?:of|with|showing))"
    r"\s*:?\s+(?P<what>.+?)[\s.!?]*$",
    re.IGNORECASE,
)


def drawing_request(message: str) -> str | None:
    """The thing to draw when ``message`` asks for an image, else ``None``."""
    match = _REQUEST.match(message)
    return match.group("what").strip() if match else None


def save_images(images: list[Image.Image], out: str | Path, size: int | None = 256) -> list[Path]:
    """Save images (upscaled to ``size`` px, nearest-free bicubic; ``None`` keeps the decoded
    size); several images get ``_0``, ``_1``... suffixes before the extension."""
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise MMLLMError(f"{out}: give an image file name (.png, .jpg, .webp)")
    if size is not None and size < 1:
        raise MMLLMError(f"size must be positive, got {size}")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = (
        [out]
        if len(images) == 1
        else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(images))]
    )
    for image, path in zip(images, paths, strict=True):
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        image.save(path)
    return paths
