"""``mmllm bench serve``: request throughput, time to first token and tokens/s of the vLLM server
at several client concurrencies, full visual tokens against reduced budgets.

One exported folder (same weights, same vLLM build) is served once per reduction, overridden at
launch; every server runs on the same machine in the same run, one at a time, so the ratios are
side by side. Requests stream (TTFT = first content chunk) and ask for a fixed number of new
tokens (``ignore_eos``), so decode work is equal across budgets and only the prompt differs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from mmllm.errors import MMLLMError

START_TIMEOUT_S = 600


@dataclass
class ServeBenchRow:
    reduction: str
    visual_tokens: int
    concurrency: int
    requests: int
    seconds: float
    requests_per_s: float
    ttft_ms_mean: float
    ttft_ms_p50: float
    tokens_per_s: float
    errors: int


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`mmllm serve` in a child process group, stopped on exit."""

    def __init__(self, folder: Path, reduction: str | None, log: Path, extra: Sequence[str] = ()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "mmllm.cli", "serve", str(folder), "--port", str(self.port),
               "--max-model-len", "1024", *(["--reduction", reduction] if reduction else []),
               *extra]  # fmt: skip
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        with open(log, "w") as fh:
            self.proc = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )

    def wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MMLLMError(f"server exited ({self.proc.returncode}); see {self.log}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(2)
        raise MMLLMError(f"server not up after {START_TIMEOUT_S} s; see {self.log}")

    def __enter__(self) -> ServerProcess:
        try:
            self.wait_ready()
        except BaseException:
            self.__exit__()  # a server that never came up is stopped too
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # the whole group is gone already
            return
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def _one_request(client, messages: list[dict], max_tokens: int) -> tuple[float, int]:
    """(time to first token in s, completion tokens) of one streamed chat completion."""
    start = time.perf_counter()
    first = None
    tokens = 0
    stream = client.chat.completions.create(
        model="mmllm",
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True, "min_tokens": max_tokens},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return (first if first is not None else time.perf_counter() - start), tokens


def measure(
    url: str, prompts: Sequence[list[dict]], concurrency: int, n_requests: int, max_tokens: int
) -> tuple[float, list[float], int, int]:
    """Send ``n_requests`` with ``concurrency`` clients: wall seconds, TTFTs, tokens, errors."""
    from mmllm.serving.client import client as make_client

    clients = [make_client(url, timeout=600) for _ in range(concurrency)]
    ttfts: list[float] = []
    tokens = errors = 0
    lock = threading.Lock()
    counter = iter(range(n_requests))

    def worker(i: int) -> None:
        nonlocal tokens, errors
        while True:
            with lock:
                k = next(counter, None)
            if k is None:
                return
            try:
                ttft, n = _one_request(clients[i], prompts[k % len(prompts)], max_tokens)
            except Exception:  # counted and reported, never hidden
                with lock:
                    errors += 1
                continue
            with lock:
                ttfts.append(ttft)
                tokens += n

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return time.perf_counter() - start, ttfts, tokens, errors


def bench_prompts(data: Path | None, n: int) -> list[list[dict]]:
    """OpenAI-format questions about held-out images (generated when no data folder is given)."""
    import tempfile

    from mmllm.data.dataset import load_dataset
    from mmllm.serving.client import to_openai_messages

    if data is None:
        from mmllm.data.generate import make_dataset

        data = Path(tempfile.mkdtemp(prefix="mmllm-bench-serve-"))
        make_dataset(data, n, seed=5, split="test", progress=False)
    samples = load_dataset(data)[:n]
    return [to_openai_messages(s.messages[:-1], s.images) for s in samples]


def run_serve_bench(
    reductions: Sequence[str],
    concurrencies: Sequence[int] = (1, 8, 32),
    model: str | None = None,
    data: Path | None = None,
    requests_per_client: int = 4,
    min_requests: int = 16,
    max_tokens: int = 16,
    log_dir: Path = Path("."),
    progress: bool = True,
) -> list[ServeBenchRow]:
    """One server per reduction, the concurrencies in turn; returns one row per pair."""
    from mmllm.reduction import build
    from mmllm.serving.server import served_folder
    from mmllm.serving.spec import ServedSpec, check_servable_reduction

    for spec in reductions:
        if spec != "identity":
            check_servable_reduction(spec)
    folder = served_folder(model)
    config = json.loads((folder / "config.json").read_text())
    served = ServedSpec.from_config(config)
    prompts = bench_prompts(data, 64)
    rows: list[ServeBenchRow] = []
    log_dir.mkdir(parents=True, exist_ok=True)
    for spec in reductions:
        build(spec)
        visual = ServedSpec(**{**served.to_dict(), "reduction": spec}).image_seq_len(
            config["hidden_size"]
        )
        log = log_dir / f"serve-{spec.replace(':', '_').replace(',', '_')}.log"
        with ServerProcess(folder, spec, log) as server:
            measure(server.url, prompts, 2, 4, max_tokens)  # warm-up, not reported
            for c in concurrencies:
                n = max(min_requests, requests_per_client * c)
                seconds, ttfts, tokens, errors = measure(server.url, prompts, c, n, max_tokens)
                done = len(ttfts)
                row = ServeBenchRow(
                    reduction=spec,
                    visual_tokens=visual,
                    concurrency=c,
                    requests=done,
                    seconds=seconds,
                    requests_per_s=done / seconds,
                    ttft_ms_mean=1000 * statistics.fmean(ttfts) if ttfts else float("nan"),
                    ttft_ms_p50=1000 * statistics.median(ttfts) if ttfts else float("nan"),
                    tokens_per_s=tokens / seconds,
                    errors=errors,
                )
                rows.append(row)
                if progress:
                    print(json.dumps(asdict(row)), file=sys.stderr, flush=True)
    return rows


def speedups(rows: Sequence[ServeBenchRow]) -> dict[tuple[str, int], float]:
    """Request throughput of each (reduction, concurrency) over the full-token server's."""
    full = {r.concurrency: r.requests_per_s for r in rows if r.reduction == "identity"}
    return {
        (r.reduction, r.concurrency): r.requests_per_s / full[r.concurrency]
        for r in rows
        if r.concurrency in full
    }


def plot_serve_bench(rows: Sequence[ServeBenchRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for spec in dict.fromkeys(r.reduction for r in rows):
        sel = [r for r in rows if r.reduction == spec]
        label = f"{spec} ({sel[0].visual_tokens} visual tokens)"
        ax1.plot([r.concurrency for r in sel], [r.requests_per_s for r in sel], "o-", label=label)
        ax2.plot([r.concurrency for r in sel], [r.ttft_ms_p50 for r in sel], "o-", label=label)
    for ax, title in ((ax1, "requests / s"), (ax2, "time to first token, p50 (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_serve_results(rows: Sequence[ServeBenchRow], out: Path, command: str) -> Path:
    """``serve.md`` (table + command + machine), ``serve.json`` and ``serve.png`` under ``out``."""
    import platform

    out.mkdir(parents=True, exist_ok=True)
    ratio = speedups(rows)
    lines = [
        "# Serving benchmark (vLLM, `mmllm serve`)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.system()}; one server at a time, same exported weights.",
        "",
        "| reduction | visual tokens | clients | requests | req/s | vs full | TTFT p50 ms "
        "| TTFT mean ms | tokens/s | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        vs_full = ratio.get((r.reduction, r.concurrency), float("nan"))
        lines.append(
            f"| `{r.reduction}` | {r.visual_tokens} | {r.concurrency} | {r.requests} "
            f"| {r.requests_per_s:.2f} | {vs_full:.2f}x "
            f"| {r.ttft_ms_p50:.0f} | {r.ttft_ms_mean:.0f} | {r.tokens_per_s:.1f} | {r.errors} |"
        )
    (out / "serve.md").write_text("\n".join(lines) + "\n")
    (out / "serve.json").write_text(json.dumps([asdict(r) for r in rows], indent=2))
    plot_serve_bench(rows, out / "serve.png")
    return out / "serve.md"
