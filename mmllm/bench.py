"""``mmllm bench reduction``: every reducer at 50%, 25%, 11.1% and 5.6% of the full visual tokens.

For each (method, budget): exact-match accuracy per task and overall, retention (% of the
full-token accuracy), prefill time per sample, the reducer's own time per image, and peak
resident memory. Full tokens and every reduced run are measured in the same process, one after
another, so ratios are comparable (see BENCHMARKING.md).
"""

from __future__ import annotations

import json
import math
import platform
import resource
import time
from pathlib import Path

import torch

from mmllm.evaluate import EvalResult, evaluate

FRACTIONS = (0.5, 0.25, 0.111, 0.056)

#: Spec for each method at a keep-count k out of n (grid side g); None = cannot hit this budget.
METHODS = {
    "random": lambda k, n, g: f"random:{k}",
    "pool": lambda k, n, g: f"pool:{math.ceil(g / math.sqrt(k))}x{math.ceil(g / math.sqrt(k))}",
    "importance": lambda k, n, g: f"importance:{k},score=norm",
    "visionzip": lambda k, n, g: (
        f"visionzip:dominant={max(1, round(0.8 * k))},"
        f"contextual={k - max(1, round(0.8 * k))},score=norm"
    ),
    "divprune": lambda k, n, g: f"divprune:{k}",
    "dpp": lambda k, n, g: f"dpp:{k},theta=0",
    "tome": lambda k, n, g: _tome_chain(n, k),
    "evit": lambda k, n, g: f"evit:{k - 1},score=norm" if k > 1 else None,
    "recycle": lambda k, n, g: f"recycle:{k}",
    "kmeans": lambda k, n, g: f"kmeans:{k}",
    "fastv": lambda k, n, g: f"fastv:layer=2,keep={k}",
    "pdrop": lambda k, n, g: (
        f"pdrop:layers=2/8/16,ratios={min(1, 4 * k / n):.3f}/{min(1, 2 * k / n):.3f}/{k / n:.3f}"
    ),
    "todre": lambda k, n, g: f"todre:{k},layer=8",
}


def _tome_chain(n: int, k: int) -> str:
    """ToMe stages (each merges at most half) that take n tokens down to exactly k."""
    stages = []
    while n > k:
        r = min(n // 2, n - k)
        stages.append(f"tome:r={r}")
        n -= r
    return "+".join(stages)


def _time_reducer(model, samples, spec: str, repeats: int = 3) -> float:
    """Milliseconds per image of the reducer alone, on encoded tokens of a few samples."""
    from mmllm.processor import MMLLMProcessor
    from mmllm.reduction import build
    from mmllm.reduction.in_llm import InLLMReducer

    reducer = build(spec)
    if isinstance(reducer, InLLMReducer) and type(reducer).__name__ != "ToDRE":
        return 0.0  # its work happens inside prefill
    processor = MMLLMProcessor.from_model(model)
    pixels = processor([s.prompt_messages() for s in samples], [s.images for s in samples])[
        "pixel_values"
    ]
    with torch.no_grad():
        tokens = model.encoder(pixels)
        reducer(tokens)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            reducer(tokens)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / len(samples)


def run_reduction_bench(
    model, samples, methods: list[str], out: Path, batch_size: int = 8
) -> list[dict]:
    """Run the benchmark; writes ``reduction.md``, ``reduction.json`` and ``reduction.png``."""
    out.mkdir(parents=True, exist_ok=True)
    n_full = model.num_image_tokens()
    side = model.encoder.grid[0]
    base_spec = model.config.reduction
    full = evaluate(model, samples, base_spec, batch_size)
    rows = [_row("full", base_spec, full, full, 0.0)]
    for method in methods:
        for frac in FRACTIONS:
            k = max(1, round(frac * n_full))
            spec = METHODS[method](k, n_full, side)
            if spec is None:
                continue
            result = evaluate(model, samples, spec, batch_size)
            rows.append(
                _row(method, spec, result, full, _time_reducer(model, samples[:8], spec), frac)
            )
            _write(rows, out, samples)
    model.set_reduction(base_spec)
    _write(rows, out, samples)
    return rows


def _row(
    method: str, spec: str, r: EvalResult, full: EvalResult, reducer_ms: float, frac: float = 1.0
):
    return {
        "method": method,
        "spec": spec,
        "fraction": frac,
        "visual_tokens": r.visual_tokens,
        "overall": r.overall,
        "retention": r.overall / full.overall if full.overall else 0.0,
        "per_task": r.per_task,
        "prefill_ms": r.prefill_ms,
        "total_ms": r.total_ms,
        "reducer_ms": reducer_ms,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "n": r.n,
    }


def _write(rows: list[dict], out: Path, samples) -> None:
    (out / "reduction.json").write_text(json.dumps(rows, indent=1))
    tasks = sorted({t for r in rows for t in r["per_task"]})
    head = [
        "method",
        "spec",
        "tokens",
        "overall %",
        "retention %",
        *tasks,
        "prefill ms",
        "reducer ms",
        "peak RSS MB",
    ]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"n = {rows[0]['n']} held-out samples.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["method"],
            f"`{r['spec']}`",
            str(r["visual_tokens"]),
            f"{100 * r['overall']:.1f}",
            f"{100 * r['retention']:.0f}",
            *[f"{100 * r['per_task'].get(t, 0):.0f}" for t in tasks],
            f"{r['prefill_ms']:.0f}",
            f"{r['reducer_ms']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "reduction.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "reduction.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    full = rows[0]
    ax.axhline(
        100 * full["overall"], color="grey", ls="--", label=f"full ({full['visual_tokens']} tokens)"
    )
    for method in dict.fromkeys(r["method"] for r in rows[1:]):
        pts = sorted(
            (r["visual_tokens"], 100 * r["overall"]) for r in rows if r["method"] == method
        )
        ax.plot(*zip(*pts, strict=True), "o-", label=method, ms=4)
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens per image")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
