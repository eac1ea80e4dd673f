"""Does a trained tokenizer keep what the understanding model reads? Originals vs reconstructions.

    python benchmarks/legibility.py [--tokenizer DIR] [--data data/test] [--per-task 50]
        [--tasks text small_object shape count] [--out benchmarks/results]

Default tokenizer: the one shipped with the generator (``tokenizer:default``); default judge:
the shipped understanding model. Writes ``legibility.md`` and ``legibility.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmllm.data.dataset import load_dataset
from mmllm.default_model import default_generator_path, load_model
from mmllm.tokenizer_legibility import legibility
from mmllm.vision_tokenizers.discrete import DiscreteTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=None, help="default: shipped")
    parser.add_argument("--data", type=Path, default=Path("data/test"))
    parser.add_argument("--per-task", type=int, default=50)
    parser.add_argument("--tasks", nargs="+", default=["text", "small_object", "shape", "count"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    folder = args.tokenizer or default_generator_path() / "image_tokenizer"
    tokenizer = DiscreteTokenizer.from_pretrained(folder)
    pool = load_dataset(args.data)
    samples = [s for t in args.tasks for s in [s for s in pool if s.task == t][: args.per_task]]
    result = legibility(tokenizer, load_model(), samples, tasks=tuple(args.tasks))
    command = "python " + " ".join(sys.argv)
    lines = [
        "# Legibility: the understanding model on originals vs tokenizer reconstructions",
        "",
        f"`{command}`; tokenizer `{args.tokenizer or 'tokenizer:default'}` "
        f"({tokenizer.config.image_size} px, "
        f"{tokenizer.num_tokens} tokens); judge: the shipped understanding model; "
        f"n = {result['n']}. Kept = share of right answers on originals that stay right.",
        "",
        "| task | originals % | reconstructions % |",
        "|---|---|---|",
    ]
    for task in args.tasks:
        lines.append(
            f"| {task} | {result['original'].get(task, '-')} "
            f"| {result['reconstructed'].get(task, '-')} |"
        )
    lines.append(f"| **all** | {result['original_overall']} | {result['reconstructed_overall']} |")
    lines += ["", f"Kept: {result['kept']}%"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "legibility.json").write_text(json.dumps({"command": command, **result}, indent=1))
    (args.out / "legibility.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
