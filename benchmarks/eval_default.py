"""Evaluate a checkpoint on a held-out split: per task, per phrasing (seen vs held out), and a few
answers on natural photos. Writes default_model.{json,md} and every answer (predictions.jsonl)
into ``--out`` (benchmarks/results).

    python benchmarks/eval_default.py --model runs/default_final --data data/test

With ``--baseline runs/eval15/predictions.jsonl`` (another checkpoint's answers on the same
split) it also reports the paired change per task: mean, standard error, questions gained/lost.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch

from mmllm.assets import asset_path
from mmllm.bench import compare_predictions, reading_breakdown
from mmllm.chat import reply, user_turn
from mmllm.data.dataset import load_dataset
from mmllm.default_model import load_model
from mmllm.evaluate import evaluate

PHOTOS = [
    ("cat.jpg", "What is in the picture?"),
    ("cat.jpg", "What colour is the cat?"),
    ("coffee.jpg", "What is in the picture?"),
    ("coffee.jpg", "What colour is the cup?"),
]


def paired_table(paired: dict) -> list[str]:
    """Markdown lines of a ``compare_predictions`` result."""
    lines = [
        f"Paired against `{paired['baseline']}` (same questions; change in points +/- one SE):",
        "",
        "| task | baseline % | this % | change | gained / lost |",
        "|---|---|---|---|---|",
    ]
    rows = [*paired["per_task"].items(), ("**overall**", paired["overall"])]
    lines += [
        f"| {task} | {c['baseline']:.1f} | {c['new']:.1f} | {c['change']:+.1f} +/- {c['se']:.1f} "
        f"| {c['gained']} / {c['lost']} |"
        for task, c in rows
    ]
    return lines


def reading_lines(reading: dict) -> list[str]:
    """One markdown line on the text task: words, numbers and how near the number answers are."""
    w, n = reading["words"], reading["numbers"]
    line = f"Text: {w['correct']} / {w['n']} words, {n['correct']} / {n['n']} numbers exact"
    if n["n"]:
        line += (
            f"; number answers hold {100 * n['digit_recall']:.0f}% of the right digits, "
            f"{100 * n['digits_in_place']:.0f}% in the right place, the right length in "
            f"{100 * n['length_right']:.0f}%"
        )
    return [line + "."]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--baseline", default=None, help="predictions.jsonl of another checkpoint, same split"
    )
    args = parser.parse_args()
    baseline = None
    if args.baseline:  # read first: a bad path fails before minutes of evaluation
        with open(args.baseline) as f:
            baseline = [json.loads(line) for line in f]
    model = load_model(args.model)
    samples = load_dataset(args.data)[: args.limit]
    start = time.perf_counter()
    result = evaluate(model, samples, batch_size=8)
    by_phrasing = defaultdict(list)
    for p in result.predictions:
        by_phrasing[p.get("phrasing", "seen")].append(p["correct"])
    photos = [
        {
            "image": img,
            "question": q,
            "answer": reply(model, [user_turn(q, 1)], [asset_path(img)], 16),
        }
        for img, q in PHOTOS
    ]
    report = {
        **result.summary(),
        "per_phrasing": {k: sum(v) / len(v) for k, v in by_phrasing.items()},
        "n_per_phrasing": {k: len(v) for k, v in by_phrasing.items()},
        "chance_note": "yes/no tasks: 50%; count: ~1/7; position: 1/9",
        "reading": reading_breakdown(result.predictions),
        "photos": photos,
        "examples": result.predictions[:20],
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "seconds": round(time.perf_counter() - start, 1),
        "command": f"python benchmarks/eval_default.py --model {args.model} --data {args.data}"
        + (f" --baseline {args.baseline}" if args.baseline else ""),
    }
    if baseline is not None:
        report["paired"] = {"baseline": args.baseline}
        report["paired"].update(compare_predictions(result.predictions, baseline))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "default_model.json").write_text(json.dumps(report, indent=1))
    with (out / "predictions.jsonl").open("w") as f:  # every answer, for error analysis
        f.writelines(json.dumps(p) + "\n" for p in result.predictions)
    lines = [
        f"# Default model on `{args.data}` (n = {result.n})",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}",
        "",
        "| task | exact match % |",
        "|---|---|",
    ]
    lines += [f"| {t} | {100 * a:.1f} |" for t, a in result.per_task.items()]
    lines += [f"| **overall** | **{100 * result.overall:.1f}** |", ""]
    lines += ["| phrasing | n | exact match % |", "|---|---|---|"]
    lines += [
        f"| {k} | {report['n_per_phrasing'][k]} | {100 * v:.1f} |"
        for k, v in report["per_phrasing"].items()
    ]
    if report["reading"] is not None:
        lines += ["", *reading_lines(report["reading"])]
    lines += [
        "",
        f"Visual tokens per image: {result.visual_tokens}; prefill {result.prefill_ms:.0f} ms, "
        f"total {result.total_ms:.0f} ms per sample (batch 8).",
        "",
        "Natural photos (CC0):",
        "",
    ]
    lines += [f"- {p['image']} — {p['question']} -> *{p['answer']}*" for p in photos]
    if baseline is not None:
        lines += ["", *paired_table(report["paired"])]
    (out / "default_model.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
