"""Prefill speed-up of a reduction against the ideal, at several batch sizes.

The ideal prefill speed-up of a reduction is the ratio of prompt lengths (full over reduced).
A forward pass also has a cost that does not grow with the tokens (every weight is read once per
forward, and per-layer overheads), which a small batch of short prompts cannot hide; this measures
how far the real speed-up is from the ideal as the batch grows. Same model, samples and
length-sorted batches (``mmllm.evaluate.length_sorted_batches``) as ``mmllm eval``; every spec is
timed side by side in each repetition, and the minimum over repetitions is kept. ``--lora both``
also times the model with its LoRA kept apart (peft wrappers) next to the merged one.

    python benchmarks/prefill_scaling.py --data data/test --limit 96 \\
        --specs identity,focus:12,focus:5 --batch-sizes 1,8,32 \\
        --out benchmarks/results/prefill_scaling
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmllm.data.dataset import load_dataset
from mmllm.default_model import load_model
from mmllm.evaluate import length_sorted_batches
from mmllm.processor import MMLLMProcessor


@torch.no_grad()
def time_prefill(model, samples, spec: str, batch_size: int) -> dict:
    """Per-sample prefill and vision milliseconds (one pass over ``samples``) and prompt tokens."""
    model.set_reduction(spec)
    processor = MMLLMProcessor.from_model(model)
    lengths = [processor.prompt_length(s.prompt_messages()) for s in samples]
    batches = []
    for rows in length_sorted_batches(lengths, batch_size):
        batch = [samples[j] for j in rows]
        batches.append(processor([s.prompt_messages() for s in batch], [s.images for s in batch]))
    warm = batches[0]
    model.prefill_logits(warm["input_ids"], warm["attention_mask"], warm["pixel_values"])
    prefill = vision = 0.0
    for inputs in batches:
        start = time.perf_counter()
        model.prefill_logits(inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
        prefill += time.perf_counter() - start
        start = time.perf_counter()
        model.encode_images(inputs["pixel_values"])
        vision += time.perf_counter() - start
    n = len(samples)
    return {
        "prefill_ms": 1000 * prefill / n,
        "vision_ms": 1000 * vision / n,
        "prompt_tokens": sum(lengths) / n,
    }


def measure(
    models: dict[str, object], samples, specs: list[str], batch_sizes: list[int], repeats: int
) -> list[dict]:
    """Best-of-``repeats`` timings of every (model, spec), all side by side in each repetition;
    each model's speed-ups are against its own first spec."""
    rows = []
    for bs in batch_sizes:
        best: dict[tuple[str, str], dict] = {}
        for _ in tqdm(range(repeats), desc=f"batch {bs}"):
            for lora, model in models.items():
                for spec in specs:  # side by side in each repetition
                    r = time_prefill(model, samples, spec, bs)
                    key = (lora, spec)
                    if key not in best or r["prefill_ms"] < best[key]["prefill_ms"]:
                        best[key] = r
        for lora in models:
            rows += _speedups(best, lora, specs, bs)
    return rows


def _speedups(best: dict, lora: str, specs: list[str], bs: int) -> list[dict]:
    full = best[lora, specs[0]]
    full_llm = full["prefill_ms"] - full["vision_ms"]
    rows = []
    for spec in specs:
        r = best[lora, spec]
        llm = r["prefill_ms"] - r["vision_ms"]
        ideal = full["prompt_tokens"] / r["prompt_tokens"]
        rows.append(
            {
                "batch_size": bs,
                "lora": lora,
                "spec": spec,
                **r,
                "llm_prefill_ms": llm,
                "speedup": full["prefill_ms"] / r["prefill_ms"],
                "llm_speedup": full_llm / llm,
                "ideal_speedup": ideal,
                "llm_share_of_ideal": full_llm / llm / ideal,
            }
        )
    return rows


def write(rows: list[dict], out: Path, n: int) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        f"Command: `{shlex.join(['python', *sys.argv])}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}; n = {n} held-out samples; min of repeats.",
        "",
        "| batch | LoRA | spec | prompt tokens | prefill ms | vision ms | LLM prefill ms "
        "| speed-up (LLM) | ideal | LLM speed-up / ideal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['lora']} | {r['spec']} | {r['prompt_tokens']:.1f} | "
            f"{r['prefill_ms']:.1f} | {r['vision_ms']:.1f} | {r['llm_prefill_ms']:.1f} | "
            f"{r['speedup']:.2f}x ({r['llm_speedup']:.2f}x) | {r['ideal_speedup']:.2f}x | "
            f"{100 * r['llm_share_of_ideal']:.0f}% |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    plot(rows, out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    curves = dict.fromkeys((r["lora"], r["spec"]) for r in rows if r["spec"] != rows[0]["spec"])
    several = len({lora for lora, _ in curves}) > 1
    for lora, spec in curves:
        mine = [r for r in rows if (r["lora"], r["spec"]) == (lora, spec)]
        ax.plot(
            [r["batch_size"] for r in mine],
            [100 * r["llm_share_of_ideal"] for r in mine],
            marker="o",
            ls="--" if lora == "unmerged" else "-",
            label=f"{spec}{f' LoRA {lora}' if several else ''} "
            f"(ideal {mine[0]['ideal_speedup']:.2f}x)",
        )
    ax.axhline(90, color="grey", ls="--", lw=1, label="target 90%")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per forward")
    ax.set_ylabel("LLM prefill speed-up, % of ideal")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def split_specs(text: str) -> list[str]:
    """``"identity,focus:5,distinct=1,divprune:5"`` -> the three specs: a comma piece that is a
    ``key=value`` option (no ``name:``) belongs to the spec before it."""
    specs: list[str] = []
    for piece in (p.strip() for p in text.split(",")):
        if specs and "=" in piece and ":" not in piece:
            specs[-1] += f",{piece}"
        else:
            specs.append(piece)
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=96)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument(
        "--specs",
        default="identity,focus:12,focus:5",
        help="comma-separated, first is the base; a spec's own options stay with it",
    )
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/prefill_scaling"))
    parser.add_argument(
        "--lora",
        choices=("merged", "unmerged", "both"),
        default="merged",
        help="LoRA folded into the weights (as load_model serves it), kept apart, or both",
    )
    args = parser.parse_args()
    samples = load_dataset(args.data)[: args.limit]
    kinds = ("merged", "unmerged") if args.lora == "both" else (args.lora,)
    models = {kind: load_model(args.model, merge_lora=kind == "merged") for kind in kinds}
    specs = split_specs(args.specs)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = measure(models, samples, specs, sizes, args.repeats)
    write(rows, args.out, len(samples))
    print(args.out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
