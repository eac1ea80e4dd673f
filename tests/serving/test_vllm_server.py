"""The real vLLM server (`mmllm serve`, the shipped model, reduction inside): answers, agreement
with local chat, bad requests, the openai client, and a bounded load test."""

import base64
import io
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

QUESTION = "What shapes are in the image?"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    from mmllm.data.dataset import load_dataset
    from mmllm.data.generate import make_dataset

    out = tmp_path_factory.mktemp("heldout")
    make_dataset(out, 12, seed=11, split="test", progress=False)
    return load_dataset(out)


def png_bytes(size=(96, 96), colour="red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def data_url(raw: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(raw).decode()}"


def chat_body(urls, text=QUESTION, max_tokens=8):
    parts = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {
        "model": "mmllm",
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
    }


def post(server, body, timeout=300):
    import requests

    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{server}/v1/chat/completions",
        data=data,
        headers={"content-type": "application/json"},
        timeout=timeout,
    )


def test_openai_client_and_reduced_placeholders(server, served_reduction):
    """The official client works; the prompt holds the reducer's output_len placeholders."""
    from openai import OpenAI

    from mmllm.reduction import build

    client = OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)
    reply = client.chat.completions.create(
        model="mmllm",
        messages=chat_body([data_url(png_bytes())])["messages"],
        max_tokens=8,
        temperature=0,
    )
    assert reply.choices[0].message.content.strip()
    text_only = client.chat.completions.create(
        model="mmllm", messages=[{"role": "user", "content": QUESTION}], max_tokens=1
    )
    visual = reply.usage.prompt_tokens - text_only.usage.prompt_tokens
    assert visual == build(served_reduction).output_len(49, (7, 7)) == 16


def test_served_answers_agree_with_local_chat(server, served_reduction, samples):
    """Greedy answers of the server equal local chat's at the same reduction."""
    from mmllm.default_model import load_model
    from mmllm.serving.compare import served_agreement

    result = served_agreement(server, samples, load_model(reduction=served_reduction), 16, False)
    assert result.rate >= 0.9, result.mismatches


def test_chat_cli_talks_to_the_server(server, samples, capsys):
    from mmllm.cli import main

    argv = ["chat", "--server", server, "--image", str(samples[0].images[0]), samples[0].question]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip()


def fuzz_cases() -> dict[str, bytes | dict]:
    png = png_bytes()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(jpeg, "JPEG")
    jpg = jpeg.getvalue()
    return {
        "malformed base64": chat_body(["data:image/png;base64,AAAA!!!"]),
        "non-image bytes": chat_body([data_url(b"hello, world" * 10)]),
        "truncated png": chat_body([data_url(png[: len(png) // 2])]),
        "truncated jpeg": chat_body([data_url(jpg[: len(jpg) // 2], "image/jpeg")]),
        "10k x 10k image": chat_body([data_url(png_bytes((10000, 10000)))]),
        "too many images": chat_body([data_url(png)] * 5),
        "unknown part type": {
            "model": "mmllm",
            "messages": [{"role": "user", "content": [{"type": "hologram"}]}],
        },
        "http image url": chat_body(["https://example.com/cat.png"]),
        "file image url": chat_body(["file:///etc/passwd"]),
        "empty messages": {"model": "mmllm", "messages": []},
        "empty message": {"model": "mmllm", "messages": [{"role": "user", "content": ""}]},
        "oversize body": b'{"model": "mmllm", "messages": [{"role": "user", "content": "'
        + b"a" * (40 * 2**20)
        + b'"}]}',
        "not json": b"{this is not json",
    }


@pytest.mark.parametrize("case", list(fuzz_cases()))
def test_bad_request_gets_a_4xx_json_error(server, case):
    body = fuzz_cases()[case]
    start = time.monotonic()
    response = post(server, body)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text[:300])
    assert "error" in response.json()
    assert time.monotonic() - start < 30  # refused at once, not after a download attempt


def test_server_keeps_serving_after_bad_requests(server):
    for body in fuzz_cases().values():
        post(server, body)
    response = post(server, chat_body([data_url(png_bytes())]))
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"].strip()


def rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20


def test_load_mixed_valid_and_invalid(server, server_pid):
    """32 concurrent clients for a bounded time, valid and invalid requests mixed: every valid
    request answers 200, every invalid one a 4xx, nothing hangs, memory stays flat."""
    import os

    seconds = float(os.environ.get("MMLLM_LOAD_SECONDS", "60"))
    valid = [chat_body([data_url(png_bytes(colour=c))], max_tokens=4) for c in ("red", "green")]
    invalid = [b for k, b in fuzz_cases().items() if k not in ("10k x 10k image", "oversize body")]
    for body in valid:  # warm up, then take the memory baseline
        assert post(server, body).status_code == 200
    before = rss_mb(server_pid)
    deadline = time.monotonic() + seconds
    failures: list[str] = []
    counts = {"valid": 0, "invalid": 0}
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            is_valid = rng.random() < 0.5
            body = rng.choice(valid if is_valid else invalid)
            try:
                r = post(server, body, timeout=180)
                ok = r.status_code == 200 if is_valid else 400 <= r.status_code < 500
                problem = None if ok else f"{'valid' if is_valid else 'invalid'}: {r.status_code}"
            except Exception as err:  # a timeout or a dropped connection is a failure too
                problem = f"{type(err).__name__}: {err}"
            with lock:
                counts["valid" if is_valid else "invalid"] += 1
                if problem:
                    failures.append(problem)

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(client, range(32)))
    after = rss_mb(server_pid)
    assert not failures, failures[:5]
    assert counts["valid"] >= 32 and counts["invalid"] >= 32, counts
    assert after < before * 1.25 + 200, (before, after)
