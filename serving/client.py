"""Talk to ``mmllm serve`` (or any OpenAI-compatible server) with the official ``openai`` client.

Images travel as base64 ``data:`` URLs, read from disk as they are (the server decodes them
with the same preprocessing local chat uses, so greedy answers agree).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path

from mmllm.errors import MMLLMError
from mmllm.serving.server import SERVED_NAME
from mmllm.vision_tokenizers.images import ImageLike, load_image

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def image_data_url(image: ImageLike) -> str:
    """A ``data:`` URL for an image file (checked first: bad images fail here, not remotely)."""
    load_image(image)
    if isinstance(image, str | Path) and Path(image).suffix.lower() in MIME:
        raw = Path(image).read_bytes()
        mime = MIME[Path(image).suffix.lower()]
    else:
        import io

        buf = io.BytesIO()
        load_image(image).save(buf, format="PNG")
        raw, mime = buf.getvalue(), "image/png"
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def to_openai_messages(messages: Sequence[dict], images: Sequence[ImageLike]) -> list[dict]:
    """mmllm chat messages (``{"type": "image"}`` parts) -> OpenAI ``image_url`` parts, in order."""
    queue = list(images)
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            out.append({"role": message["role"], "content": content})
            continue
        parts = []
        for part in content:
            if part.get("type") == "image":
                if not queue:
                    raise MMLLMError("more image parts than images")
                url = image_data_url(queue.pop(0))
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    if queue:
        raise MMLLMError(f"{len(queue)} image(s) left over: more images than image parts")
    return out


def client(server: str, timeout: float = 120.0):
    try:
        from openai import OpenAI
    except ImportError:
        raise MMLLMError("talking to a server needs `pip install openai`") from None
    base = server.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return OpenAI(base_url=base, api_key="not-needed", timeout=timeout, max_retries=0)


def remote_reply(
    server: str,
    messages: Sequence[dict],
    images: Sequence[ImageLike],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    model: str = SERVED_NAME,
) -> str:
    """The served model's answer to a conversation (greedy at temperature 0)."""
    import openai

    try:
        response = client(server).chat.completions.create(
            model=model,
            messages=to_openai_messages(messages, images),
            max_tokens=max_new_tokens,
            temperature=temperature,
        )
    except openai.APIConnectionError as err:
        raise MMLLMError(f"cannot reach {server}: is `mmllm serve` running?") from err
    except openai.APIStatusError as err:
        raise MMLLMError(f"server answered {err.status_code}: {err.message}") from err
    return (response.choices[0].message.content or "").strip()
