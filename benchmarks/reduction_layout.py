"""Packed tokens vs source positions + proportional attention, paired per sample.

Re-scores the given reducer specs of a ``mmllm bench reduction`` result with the reduced tokens
packed (``mmllm.layout.packed_layout``, the layout before ``mmllm.layout`` existed) and compares
each sample's answer NLL with the one the bench stored (source positions + proportional
attention, the default). Same model, same samples as the bench (``--limit``).

    python benchmarks/reduction_layout.py --bench benchmarks/results/reduction.json \\
        --data data/test --limit 108 --specs "coverage:5;evit:4,score=norm" \\
        --out benchmarks/results/reduction_layout.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmllm.bench import paired_change
from mmllm.data.dataset import load_dataset
from mmllm.default_model import load_model
from mmllm.evaluate import evaluate
from mmllm.layout import packed_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="reduction.json of the bench")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, required=True, help="the bench's --limit")
    parser.add_argument("--specs", required=True, help="';'-separated specs of the bench")
    parser.add_argument("--out", type=Path, required=True, help="markdown table to write")
    args = parser.parse_args()

    rows = json.loads(args.bench.read_text())
    by_spec = {r["spec"]: r for r in rows}
    blind = next(r for r in rows if r["method"] == "wrong-image")["nll_delta"]
    model = load_model()
    samples = load_dataset(args.data)[: args.limit]
    lines = [
        f"Command: `python benchmarks/reduction_layout.py --bench {args.bench} --data {args.data} "
        f'--limit {args.limit} --specs "{args.specs}"`',
        "",
        "| spec | tokens | kept, packed % | kept, source + proportional % "
        "| ΔNLL new - packed (± SE) |",
        "|---|---|---|---|---|",
    ]
    for spec in args.specs.split(";"):
        if spec not in by_spec or "sample_nll" not in by_spec[spec]:
            raise SystemExit(f"{spec!r} has no per-sample scores in {args.bench}")
        new = by_spec[spec]
        with packed_layout(model):
            packed = evaluate(model, samples, spec, answer_nll=True, progress=False)
        delta, se = paired_change(new["sample_nll"], [p["answer_nll"] for p in packed.predictions])
        kept_packed = 100 * (1 - (new["nll_delta"] - delta) / blind)
        kept_new = 100 * (1 - new["nll_delta"] / blind)
        lines.append(
            f"| `{spec}` | {new['visual_tokens']} | {kept_packed:.0f} | {kept_new:.0f} "
            f"| {delta:+.4f} ± {se:.4f} |"
        )
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
