"""``mmllm bench reduction``: every reducer at 50%, 25%, 11.1% and 5.6% of the full visual tokens.

For each (method, budget): exact-match accuracy per task and overall, retention (% of the
full-token accuracy), the reference answer's negative log-likelihood per token and its paired
change against full tokens (mean and standard error over the same samples), agreement of the
answers with the full-token answers, prefill time per sample, the reducer's own time per image,
and peak resident memory. On a weak model exact match moves in steps of one sample; the paired
likelihood change separates methods with far fewer samples. Full tokens and every reduced run
are measured in the same process, one after another, so ratios are comparable (see
BENCHMARKING.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import resource
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from mmllm.data.normalize import exact_match
from mmllm.errors import MMLLMError
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
    "dpp": lambda k, n, g: f"dpp:{k}",
    "tome": lambda k, n, g: _merge_chain("tome", n, k),
    "pitome": lambda k, n, g: _merge_chain("pitome", n, k),
    "evit": lambda k, n, g: f"evit:{k - 1},score=norm" if k > 1 else None,
    "recycle": lambda k, n, g: f"recycle:{k}",
    "kmeans": lambda k, n, g: f"kmeans:{k}",
    "fastv": lambda k, n, g: f"fastv:layer=2,keep={k}",
    "pdrop": lambda k, n, g: (
        f"pdrop:layers=2/8/16,ratios={min(1, 4 * k / n):.3f}/{min(1, 2 * k / n):.3f}/{k / n:.3f}"
    ),
    "todre": lambda k, n, g: f"todre:{k},layer=8",
    "coverage": lambda k, n, g: f"coverage:{k}",
    "focus": lambda k, n, g: f"focus:{k}",
}

#: The ablation of mmllm's own method (``--methods`` picks them like any method).
ABLATIONS = {
    "coverage-no-spatial": lambda k, n, g: f"coverage:{k},spatial=0",
    "coverage-no-lloyd": lambda k, n, g: f"coverage:{k},iters=0",
    "coverage-spatial-2": lambda k, n, g: f"coverage:{k},spatial=2",
    "divprune+coverage-seeds": lambda k, n, g: f"coverage:{k},spatial=0,iters=0",
    "focus-no-floor": lambda k, n, g: f"focus:{k},floor=0",
    "focus-spatial": lambda k, n, g: f"focus:{k},spatial=0.25",
    "focus-no-distinct": lambda k, n, g: f"focus:{k},distinct=0",
    "focus-cover": lambda k, n, g: f"focus:{k},cover=1",
    "focus-cover-half": lambda k, n, g: f"focus:{k},cover=0.5",
}


#: Reference row: full tokens of the wrong image, the floor a reduction can fall to.
WRONG_IMAGE = "wrong-image"


def swap_images(samples: list) -> list:
    """Each sample with the next sample's images: what the model scores without its own image.

    Its accuracy is the image-blind floor (answers guessed from the question), and its likelihood
    change against full tokens is all the image information the model uses; a reduction's
    change is read as a fraction of it ("image info kept").
    """
    n = len(samples)
    if n < 2:
        raise MMLLMError("the wrong-image reference needs at least 2 samples")
    counts = {len(s.images) for s in samples}
    if len(counts) != 1:
        raise MMLLMError("the wrong-image reference needs the same number of images per sample")
    return [
        dataclasses.replace(s, images=samples[(i + 1) % n].images) for i, s in enumerate(samples)
    ]


def _merge_chain(name: str, n: int, k: int) -> str:
    """ToMe/PiToMe stages (each merges at most half) that take n tokens down to exactly k."""
    stages = []
    while n > k:
        r = min(n // 2, n - k)
        stages.append(f"{name}:r={r}")
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
    if reducer.uses_text:
        model.set_reduction(spec)  # the prompt's placeholders must match this budget
    processor = MMLLMProcessor.from_model(model)
    inputs = processor([s.prompt_messages() for s in samples], [s.images for s in samples])
    with torch.no_grad():
        tokens = model.encoder(inputs["pixel_values"])
        text = None
        if reducer.uses_text:  # time it with the prompt it reads, as in the model's prefill
            ids = inputs["input_ids"]
            text = model.text_context(
                model.llm.get_input_embeddings()(ids),
                ids == model.image_token_id,
                inputs.get("attention_mask"),
            )
        reducer(tokens, text)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            reducer(tokens, text)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / len(samples)


def run_reduction_bench(
    model, samples, methods: list[str], out: Path, batch_size: int = 8, append: bool = False
) -> list[dict]:
    """Run the benchmark; writes ``reduction.md``, ``reduction.json`` and ``reduction.png``.

    With ``append`` the methods are added to the result already in ``out`` (rows of the same
    methods are replaced): the full-token pass is re-run first and must reproduce the stored
    one, so the paired columns still compare like with like. Timings of the added rows are
    against this run's full-token pass.
    """
    out.mkdir(parents=True, exist_ok=True)
    n_full = model.num_image_tokens()
    side = model.encoder.grid[0]
    base_spec = model.config.reduction
    full = evaluate(model, samples, base_spec, batch_size, answer_nll=True)
    full_row = _row("full", base_spec, full, full, 0.0) | {"batch_size": batch_size}
    if append:
        rows = [r for r in _stored_rows(out, full_row) if r["method"] not in methods]
    else:
        blind = evaluate(model, swap_images(samples), base_spec, batch_size, answer_nll=True)
        rows = [full_row, _row(WRONG_IMAGE, base_spec, blind, full, 0.0)]
    for method in methods:
        for frac in FRACTIONS:
            k = max(1, round(frac * n_full))
            spec = {**METHODS, **ABLATIONS}[method](k, n_full, side)
            if spec is None:
                continue
            result = evaluate(model, samples, spec, batch_size, answer_nll=True)
            rows.append(
                _row(method, spec, result, full, _time_reducer(model, samples[:8], spec), frac)
            )
            _write(rows, out, samples)
    model.set_reduction(base_spec)
    _write(rows, out, samples)
    return rows


def _stored_rows(out: Path, full_row: dict) -> list[dict]:
    """The rows of ``out/reduction.json``, after checking that its full-token row is the one
    this model gives on these samples (same n, accuracy and answer likelihood)."""
    path = out / "reduction.json"
    if not path.is_file():
        raise MMLLMError(f"--append needs an earlier result to add to, and {path} does not exist")
    rows = json.loads(path.read_text())
    stored = next((r for r in rows if r["method"] == "full"), None)
    same = (
        stored is not None
        and stored["n"] == full_row["n"]
        and stored.get("batch_size", 8) == full_row["batch_size"]
        and stored["overall"] == full_row["overall"]
        and abs(stored["answer_nll"] - full_row["answer_nll"]) < 1e-3
        and all(
            abs(a - b) < 1e-3
            for a, b in zip(stored.get("sample_nll", []), full_row["sample_nll"], strict=False)
        )
    )
    if not same:
        raise MMLLMError(
            f"{path} was made with another model or other samples (its full-token row does not "
            "match this run's); use the same --model, --data, --limit and --batch-size, "
            "or a new --out"
        )
    return rows


def paired_change(values: list[float], base: list[float]) -> tuple[float, float]:
    """Mean and standard error of ``values - base`` over the same samples."""
    diffs = [v - b for v, b in zip(values, base, strict=True)]
    mean = sum(diffs) / len(diffs)
    var = sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)
    return mean, math.sqrt(var / len(diffs))


def compare_predictions(predictions: list[dict], baseline: list[dict]) -> dict:
    """Paired exact-match change of ``predictions`` over ``baseline`` on the same questions.

    Both are per-sample rows as ``mmllm eval`` writes them (``task``, ``answer``, ``correct``),
    in the same order. Returns the overall and per-task change (mean and standard error in
    points, paired per sample) and how many questions were gained and lost, so two checkpoints
    are compared with the noise of their *difference*, not of each accuracy.
    """
    if len(predictions) != len(baseline):
        raise MMLLMError(
            f"cannot pair {len(predictions)} predictions with {len(baseline)} baseline rows: "
            "evaluate both on the same split and --limit"
        )
    for i, (new, old) in enumerate(zip(predictions, baseline, strict=True)):
        if (new["task"], new["answer"]) != (old["task"], old["answer"]):
            raise MMLLMError(
                f"row {i} differs from the baseline ({new['task']!r}/{new['answer']!r} vs "
                f"{old['task']!r}/{old['answer']!r}): not the same questions in the same order"
            )

    def change(rows: list[int]) -> dict:
        new = [float(predictions[i]["correct"]) for i in rows]
        old = [float(baseline[i]["correct"]) for i in rows]
        mean, se = paired_change(new, old)
        return {
            "change": 100 * mean,
            "se": 100 * se,
            "new": 100 * sum(new) / len(new),
            "baseline": 100 * sum(old) / len(old),
            "gained": sum(n > o for n, o in zip(new, old, strict=True)),
            "lost": sum(n < o for n, o in zip(new, old, strict=True)),
            "n": len(rows),
        }

    tasks: dict[str, list[int]] = {}
    for i, row in enumerate(predictions):
        tasks.setdefault(row["task"], []).append(i)
    return {
        "overall": change(list(range(len(predictions)))),
        "per_task": {task: change(rows) for task, rows in sorted(tasks.items())},
    }


def reading_breakdown(predictions: list[dict]) -> dict | None:
    """Where the text task's answers go wrong: words against numbers, and for numbers whether
    the right digits are there (recall of the reference's digits as a multiset), in the right
    places (per-position match over the reference's length) and how many (length).

    Exact match alone cannot tell "7773" -> "7775" (one digit off) from "7773" -> "12"; these
    scores can, so a reading change is measured even while exact match on numbers stays low.
    ``None`` when ``predictions`` hold no text question.
    """
    rows = [p for p in predictions if p["task"] == "text"]
    if not rows:
        return None
    words = [p for p in rows if not p["answer"].isdigit()]
    numbers = [p for p in rows if p["answer"].isdigit()]
    out: dict = {
        "words": {"n": len(words), "correct": sum(p["correct"] for p in words)},
        "numbers": {"n": len(numbers), "correct": sum(p["correct"] for p in numbers)},
    }
    if numbers:
        recall = in_place = length = 0.0
        for p in numbers:
            ref, got = p["answer"], "".join(c for c in p["prediction"] if c.isdigit())
            recall += sum((Counter(ref) & Counter(got)).values()) / len(ref)
            in_place += sum(a == b for a, b in zip(ref, got, strict=False)) / len(ref)
            length += len(ref) == len(got)
        out["numbers"].update(
            digit_recall=recall / len(numbers),
            digits_in_place=in_place / len(numbers),
            length_right=length / len(numbers),
        )
    return out


def _row(
    method: str, spec: str, r: EvalResult, full: EvalResult, reducer_ms: float, frac: float = 1.0
):
    from mmllm.reduction import build
    from mmllm.reduction.in_llm import split_in_llm

    llm_ms, full_llm_ms = r.prefill_ms - r.vision_ms, full.prefill_ms - full.vision_ms
    before_llm = split_in_llm(build(spec))[1] is None
    ideal = full.prompt_tokens / r.prompt_tokens if r.prompt_tokens else 0.0
    mean_delta, se_delta = paired_change(
        [p["answer_nll"] for p in r.predictions], [p["answer_nll"] for p in full.predictions]
    )
    agree = [
        exact_match(r_pred["prediction"], f_pred["prediction"])
        for r_pred, f_pred in zip(r.predictions, full.predictions, strict=True)
    ]
    return {
        "method": method,
        "spec": spec,
        "fraction": frac,
        "visual_tokens": r.visual_tokens,
        "overall": r.overall,
        "retention": r.overall / full.overall if full.overall else 0.0,
        "per_task": r.per_task,
        "answer_nll": r.answer_nll,
        "per_task_nll": r.per_task_nll,
        "nll_delta": mean_delta,
        "nll_delta_se": se_delta,
        "agreement": sum(agree) / len(agree),
        "sample_nll": [round(pred["answer_nll"], 5) for pred in r.predictions],
        "prefill_ms": r.prefill_ms,
        "llm_prefill_ms": llm_ms,
        "vision_ms": r.vision_ms,
        "prompt_tokens": r.prompt_tokens,
        "speedup": full.prefill_ms / r.prefill_ms if r.prefill_ms else 0.0,
        "llm_speedup": full_llm_ms / llm_ms if llm_ms > 0 else 0.0,
        "ideal_speedup": ideal if before_llm else None,
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
        "answer NLL",
        "ΔNLL vs full (± SE)",
        "image info kept %",
        "agrees with full %",
        "prompt tokens",
        "prefill ms",
        "LLM prefill ms",
        "speed-up (LLM) / ideal",
        "reducer ms",
        "peak RSS MB",
    ]
    blind = next((r for r in rows if r["method"] == WRONG_IMAGE), None)
    lines = [
        f"Command (the latest run; `--append` runs add rows): `{_command()}`  ",
        f"Machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"n = {rows[0]['n']} held-out samples, {rows[0].get('batch_size', 8)} per forward "
        "(batches of similar prompt length).",
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
            f"{r['answer_nll']:.3f}",
            f"{r['nll_delta']:+.3f} ± {r['nll_delta_se']:.3f}",
            _info_kept(r, blind),
            f"{100 * r['agreement']:.0f}",
            f"{r['prompt_tokens']:.0f}",
            f"{r['prefill_ms']:.0f}",
            f"{r['llm_prefill_ms']:.0f}",
            _speedup_cell(r),
            f"{r['reducer_ms']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (out / "reduction.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "reduction.png")


def _command() -> str:
    """How this run was started, for the table's header (``mmllm ...`` when run by the CLI)."""
    if Path(sys.argv[0]).name == "mmllm":
        return shlex.join(["mmllm", *sys.argv[1:]])
    return shlex.join([Path(sys.executable).name, *sys.argv])


def _info_kept(row: dict, blind: dict | None) -> str:
    """100 x (1 - row's NLL change / the wrong image's): the share of the image's information
    (as the model uses it) that survives the reduction."""
    if blind is None or blind["nll_delta"] <= 0:
        return "-"
    return f"{100 * (1 - row['nll_delta'] / blind['nll_delta']):.0f}"


def _speedup_cell(row: dict) -> str:
    """``1.9x (2.3x) / 2.4x``: prefill and LLM-only speed-up over full tokens, then the ideal."""
    if row["method"] in ("full", WRONG_IMAGE):
        return "1x" if row["method"] == "full" else "-"
    ideal = "-" if row["ideal_speedup"] is None else f"{row['ideal_speedup']:.1f}x"
    return f"{row['speedup']:.1f}x ({row['llm_speedup']:.1f}x) / {ideal}"


def _plot_tokens(row: dict, n_full: int) -> int:
    """x position: tokens the LLM reads (in-LLM methods: the count kept after their drop)."""
    if row["ideal_speedup"] is None and row["method"] not in ("full", WRONG_IMAGE):
        return max(1, round(row["fraction"] * n_full))
    return row["visual_tokens"]


def _plot(rows: list[dict], path: Path) -> None:
    """Accuracy (left) and answer NLL change (right) against visual tokens, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, (acc_ax, nll_ax) = plt.subplots(1, 2, figsize=(13, 5))
    full = rows[0]
    n_full = full["visual_tokens"]
    acc_ax.axhline(100 * full["overall"], color="grey", ls="--", label=f"full ({n_full} tokens)")
    nll_ax.axhline(0, color="grey", ls="--")
    blind = next((r for r in rows if r["method"] == WRONG_IMAGE), None)
    if blind is not None:
        acc_ax.axhline(100 * blind["overall"], color="black", ls=":", label="wrong image")
        nll_ax.axhline(blind["nll_delta"], color="black", ls=":")
    methods = list(dict.fromkeys(r["method"] for r in rows[1:] if r["method"] != WRONG_IMAGE))
    colours = plt.cm.tab20.colors
    ticks = set()
    for i, method in enumerate(methods):
        mine = sorted(
            (r for r in rows if r["method"] == method), key=lambda r: _plot_tokens(r, n_full)
        )
        tokens = [_plot_tokens(r, n_full) for r in mine]
        ticks.update(tokens)
        style = {
            "color": colours[i % len(colours)],
            "marker": "osD^v<>"[i % 7],
            "ls": "--" if method in ABLATIONS else "-",
            "ms": 4,
        }
        acc_ax.plot(tokens, [100 * r["overall"] for r in mine], label=method, **style)
        nll_ax.errorbar(
            tokens,
            [r["nll_delta"] for r in mine],
            yerr=[r["nll_delta_se"] for r in mine],
            capsize=2,
            **style,
        )
    for ax in (acc_ax, nll_ax):
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks | {n_full}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("visual tokens the LLM reads (in-LLM methods: after the drop)")
        ax.grid(alpha=0.3)
    acc_ax.set_ylabel("exact-match accuracy (%)")
    nll_ax.set_ylabel("answer NLL - full-token answer NLL (lower is better)")
    acc_ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
