"""Request checks in front of vLLM's OpenAI server (an ASGI middleware, ``--middleware``).

vLLM already answers most bad requests with a 4xx (malformed base64, non-image bytes, truncated
files, too many images, unknown part types). This closes the gaps it leaves, before a request
reaches the engine:

- a body over ``MMLLM_SERVE_MAX_BODY_MB`` (default 32) -> 413 at once, read no further;
- an image URL that is neither ``data:`` nor http(s) (``file:``, ``ftp:``...) -> 400 (vLLM
  answers 500 for local files);
- a conversation with no text and no image anywhere -> 400 (vLLM would run it).

The checks are pure functions of the body (:func:`chat_body_problem`), tested without a server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_ENV = "MMLLM_SERVE_MAX_BODY_MB"
DEFAULT_MAX_BODY_MB = 32
IMAGE_SCHEMES = ("data:", "http://", "https://")


def _part_is_empty(part: Any) -> bool:
    if not isinstance(part, dict):
        return False  # malformed parts are vLLM's to refuse, with its own message
    if part.get("type") == "text":
        return not str(part.get("text", "")).strip()
    return False


def chat_body_problem(body: bytes) -> str | None:
    """Why a ``/v1/chat/completions`` body must be refused, or None to pass it to vLLM."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # vLLM answers malformed JSON with a 400 itself
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        return None  # vLLM's own validation covers a missing or empty list
    empty = True
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            empty &= not content.strip()
            continue
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                image = part.get("image_url")
                url = image.get("url", "") if isinstance(image, dict) else image
                if not isinstance(url, str) or not url.startswith(IMAGE_SCHEMES):
                    return (
                        "image_url must be a data: URL (base64) or an http(s) URL; "
                        "the server does not read local files"
                    )
            empty &= _part_is_empty(part)
    if empty:
        return "empty conversation: every message is empty; send text or an image"
    return None


async def _send_error(send: Send, status: int, message: str) -> None:
    kind = "PayloadTooLarge" if status == 413 else "BadRequestError"
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": status}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: size limit on every POST body, content checks on chat completions."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]):
        self.app = app
        self.max_body = int(float(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY_MB)) * 2**20)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        too_big = f"request body over {self.max_body // 2**20} MB ({MAX_BODY_ENV})"
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _send_error(send, 413, too_big)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_error(send, 413, too_big)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if scope.get("path", "").endswith("/chat/completions"):
            problem = chat_body_problem(body)
            if problem is not None:
                await _send_error(send, 400, problem)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
