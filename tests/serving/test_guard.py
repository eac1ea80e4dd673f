"""The request guard in front of vLLM: pure body checks and the ASGI behaviour, no server."""

import asyncio
import json

import pytest

from mmllm.serving.guard import RequestGuard, chat_body_problem

PNG = "data:image/png;base64,iVBORw0KGgo="


def chat(*messages) -> bytes:
    return json.dumps({"model": "mmllm", "messages": list(messages)}).encode()


def user(*parts):
    return {"role": "user", "content": list(parts)}


def image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def text(t):
    return {"type": "text", "text": t}


@pytest.mark.parametrize(
    "body",
    [
        chat(user(image(PNG), text("What colour?"))),
        chat(user(image("https://example.com/a.png"), text("hi"))),  # vLLM's allow-list decides
        chat({"role": "user", "content": "hello"}),
        chat(user(image(PNG))),  # an image alone is a question
        b"{not json",  # vLLM answers malformed JSON itself
        chat(),  # and an empty list
    ],
)
def test_passes_what_vllm_handles(body):
    assert chat_body_problem(body) is None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (chat(user(image("file:///etc/passwd"), text("hi"))), "local files"),
        (chat(user(image("/etc/passwd"), text("hi"))), "local files"),
        (chat(user(image("ftp://x/a.png"), text("hi"))), "data: URL"),
        (chat({"role": "user", "content": "   "}), "empty conversation"),
        (chat(user(text("")), {"role": "assistant", "content": ""}), "empty conversation"),
    ],
)
def test_refuses_with_a_reason(body, words):
    problem = chat_body_problem(body)
    assert problem is not None and words in problem


class Recorder:
    """A stand-in for vLLM's app: records the body it received, answers 200."""

    def __init__(self):
        self.body = None

    async def __call__(self, scope, receive, send):
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        self.body = b"".join(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def call(
    guard,
    body: bytes,
    *,
    chunk: int = 1 << 20,
    length: int | None = None,
    path="/v1/chat/completions",
):
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, payload


def test_good_request_reaches_the_app_unchanged(monkeypatch):
    app = Recorder()
    body = chat(user(image(PNG), text("What colour?")))
    status, _ = call(RequestGuard(app), body, chunk=7)  # arrives in many small pieces
    assert status == 200 and app.body == body


def test_refused_request_never_reaches_the_app():
    app = Recorder()
    status, payload = call(RequestGuard(app), chat(user(image("file:///etc/passwd"))))
    assert status == 400 and app.body is None
    assert json.loads(payload)["error"]["code"] == 400


def test_oversize_body_is_413_by_header_and_by_stream(monkeypatch):
    monkeypatch.setenv("MMLLM_SERVE_MAX_BODY_MB", "0.001")  # ~1 KB
    app = Recorder()
    big = chat({"role": "user", "content": "a" * 5000})
    assert call(RequestGuard(app), big, length=len(big))[0] == 413  # refused before reading
    assert call(RequestGuard(app), big, chunk=100)[0] == 413  # no header: counted while read
    assert app.body is None


def test_other_endpoints_only_get_the_size_limit():
    app = Recorder()
    body = json.dumps({"model": "mmllm", "prompt": "   "}).encode()
    assert call(RequestGuard(app), body, path="/v1/completions")[0] == 200
