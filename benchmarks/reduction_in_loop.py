"""What training with the reducer in the loop adds on top of the training-free reducer.

Scores several checkpoints at the same budgets on the same held-out samples: exact match and the
reference answer's NLL per token (teacher forced), each paired against the *shipped* model at
full tokens, so every number shares one baseline. Writes ``reduction_in_loop.{md,json,png}``.

    python benchmarks/reduction_in_loop.py --data data/test --limit 108 \\
        --model shipped= --model control=runs/default_budgets_control/final \\
        --model in-loop=runs/default_budgets/final \\
        --reduction identity --reduction coverage:24 --reduction coverage:12 \\
        --reduction coverage:5 --reduction coverage:3

``NAME=`` (empty path) is the shipped default model. The control is the same continuation as the
in-loop run at full tokens only, so extra training and reducer-awareness are told apart.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from mmllm.bench import paired_change
from mmllm.data.dataset import load_dataset
from mmllm.default_model import load_model
from mmllm.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH (repeat)")
    parser.add_argument("--reduction", action="append", required=True, help="spec (repeat)")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    samples = load_dataset(args.data)[: args.limit]
    rows, base = [], None
    for item in args.model:
        name, _, path = item.partition("=")
        model = load_model(path or None)
        for spec in args.reduction:
            r = evaluate(model, samples, spec, answer_nll=True)
            nll = [p["answer_nll"] for p in r.predictions]
            correct = [float(p["correct"]) for p in r.predictions]
            if base is None:  # the first model at the first spec is the baseline
                base = (nll, correct)
            d_nll, se_nll = paired_change(nll, base[0])
            d_acc, se_acc = paired_change(correct, base[1])
            rows.append(
                {
                    "model": name,
                    "path": path or "shipped",
                    "reduction": spec,
                    "visual_tokens": r.visual_tokens,
                    "overall": r.overall,
                    "per_task": r.per_task,
                    "answer_nll": r.answer_nll,
                    "per_task_nll": r.per_task_nll,
                    "nll_delta": d_nll,
                    "nll_delta_se": se_nll,
                    "acc_delta": d_acc,
                    "acc_delta_se": se_acc,
                    "n": r.n,
                    "sample_nll": [round(x, 5) for x in nll],
                }
            )
            _write(rows, Path(args.out), args)


def _write(rows: list[dict], out: Path, args) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "reduction_in_loop.json").write_text(json.dumps(rows, indent=1))
    first = rows[0]
    lines = [
        "# Reducer in the loop vs training-free",
        "",
        f"n = {first['n']} held-out samples; machine: {platform.machine()}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}. Every change is paired "
        f"against `{first['model']}` at `{first['reduction']}` on the same samples (mean ± SE).",
        "",
        "| model | reduction | tokens | exact match % | Δ exact match (pts) | answer NLL | ΔNLL |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | `{r['reduction']}` | {r['visual_tokens']} | "
            f"{100 * r['overall']:.1f} | "
            f"{100 * r['acc_delta']:+.1f} ± {100 * r['acc_delta_se']:.1f} | "
            f"{r['answer_nll']:.3f} | {r['nll_delta']:+.3f} ± {r['nll_delta_se']:.3f} |"
        )
    (out / "reduction_in_loop.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "reduction_in_loop.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["visual_tokens"])
        ax.errorbar(
            [r["visual_tokens"] for r in mine],
            [r["nll_delta"] for r in mine],
            yerr=[r["nll_delta_se"] for r in mine],
            fmt="o-",
            ms=4,
            capsize=2,
            label=name,
        )
    ax.axhline(0, color="grey", ls="--")
    ax.set_xscale("log")
    ax.set_xticks(sorted({r["visual_tokens"] for r in rows}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("visual tokens per image")
    ax.set_ylabel(f"answer NLL - {rows[0]['model']} at full tokens")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
