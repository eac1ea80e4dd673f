"""Per-task exact match of several evaluated checkpoints side by side, as a grouped bar chart.

Reads the ``default_model.json`` that ``benchmarks/eval_default.py --out DIR`` writes for each
model and draws one group of bars per task (plus overall), e.g. single stages against their
weight average::

    python benchmarks/compare_models.py --out benchmarks/results/default_average_val.png \\
        "stage 23=runs/val_default_stage23_final" "average 23-25=runs/val_soup_23_25_r16"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def load(spec: str) -> tuple[str, dict[str, float]]:
    """``LABEL=DIR`` -> (label, {task: accuracy %, "overall": %})."""
    if "=" not in spec:
        raise SystemExit(f"expected LABEL=DIR, got '{spec}'")
    label, folder = spec.split("=", 1)
    path = Path(folder) / "default_model.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: run benchmarks/eval_default.py --out {folder} first")
    report = json.loads(path.read_text())
    scores = {task: 100 * acc for task, acc in report["per_task"].items()}
    scores["overall"] = 100 * report["overall"]
    return label, scores


def plot(models: list[tuple[str, dict[str, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [*sorted(t for t in models[0][1] if t != "overall"), "overall"]
    width = 0.8 / len(models)
    fig, ax = plt.subplots(figsize=(1.1 * len(tasks) + 2, 4))
    for i, (label, scores) in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [scores.get(t, 0.0) for t in tasks], width, label=label)
    ax.set_xticks(range(len(tasks)), tasks, rotation=30, ha="right")
    ax.set_ylabel("exact match (%)")
    ax.set_ylim(0, 105)
    ax.set_title(title)
    ax.legend(fontsize=8, ncols=min(len(models), 4), loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="LABEL=DIR of an eval_default.py run")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write")
    parser.add_argument("--title", default="exact match per task")
    args = parser.parse_args()
    plot([load(spec) for spec in args.models], args.out, args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
