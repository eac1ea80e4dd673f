"""How often generated images satisfy their prompts (held-out prompt set), per sampling setting.

    python benchmarks/generation.py [--model DIR] [--data data/draw/test] [--n 96]
        [--settings 0:1 0:3 1:3] [--top-k 50] [--vlm] [--out benchmarks/results]

For each sampling setting (TEMPERATURE:CFG_SCALE): pass rate overall, by prompt kind, for seen
vs held-out colour/shape combinations, and per attribute (pixel checker), with the tokenizer
ceiling and a chance row; ``--vlm`` adds the understanding model's verdict on generated and on
canonical images. Writes ``generation.md``, ``generation.json`` and ``generation_samples.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
from pathlib import Path

import torch

from mmllm.generation.dataset import load_draw_dataset
from mmllm.generation.evaluate import evaluate_generator, save_samples
from mmllm.generation.model import ImageGenerator
from mmllm.vision_tokenizers.images import load_image

ROWS = ("overall", "single", "pair", "count", "seen", "heldout")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="default: shipped generator")
    parser.add_argument("--data", type=Path, default=Path("data/draw/test"))
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=["0:1", "0:3", "1:3"],
        help="sampling settings TEMPERATURE:CFG_SCALE (temperature 0 = greedy)",
    )
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--vlm", action="store_true", help="also score with the default VLM")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = ImageGenerator.from_pretrained(args.model)
    samples = load_draw_dataset(args.data)[: args.n]
    vlm = None
    if args.vlm:
        from mmllm.default_model import load_model
        from mmllm.generation.vlm_check import vlm_pass_rate

        vlm = load_model()
    runs, best_images = [], None
    for setting in args.settings:
        temperature, scale = (float(v) for v in setting.split(":"))
        report, images = evaluate_generator(
            generator,
            samples,
            references=not runs,
            temperature=temperature,
            top_k=args.top_k,
            cfg_scale=scale,
        )
        if vlm is not None:
            specs = [s.spec for s in samples]
            report["vlm_generated"] = vlm_pass_rate(vlm, images, specs)
            if not runs:
                canonical = [load_image(s.image) for s in samples]
                report["vlm_canonical"] = vlm_pass_rate(vlm, canonical, specs)
                # another prompt's image (the pixel checker's chance row shuffles the same way)
                other = random.Random(0).sample(canonical, len(canonical))
                report["vlm_chance"] = vlm_pass_rate(vlm, other, specs)
        run = {"temperature": temperature, "cfg_scale": scale, **report}
        if not runs or report["overall"] > max(r["overall"] for r in runs):
            best_images, best_run = images, run
        runs.append(run)
        print(json.dumps({"setting": setting, "overall": report["overall"]}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    save_samples(samples, best_images, args.out / "generation_samples.png", n=24)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "device": platform.processor() or platform.machine(),
        "n": len(samples),
        "top_k": args.top_k,
        "samples_png": f"temperature {best_run['temperature']:g}, CFG {best_run['cfg_scale']:g}",
    }
    (args.out / "generation.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    (args.out / "generation.md").write_text(markdown(meta, runs))
    print(markdown(meta, runs))


def markdown(meta: dict, runs: list[dict]) -> str:
    lines = [
        "# Text-to-image: does the image satisfy the prompt?",
        "",
        f"`{meta['command']}` — {meta['n']} held-out prompts (half use colour/shape combinations "
        f"never seen in training), top-k {meta['top_k']}, pixel checker "
        "(`mmllm.generation.check`). Pass = every asked attribute right and nothing extra drawn. "
        f"`generation_samples.png`: the best setting ({meta['samples_png']}).",
        "",
        "| images | " + " | ".join(ROWS) + " | colour | shape | count | relation | s/image |",
        "|---" * (len(ROWS) + 6) + "|",
    ]

    def row(label: str, r: dict, seconds: str = "") -> str:
        a = r["attributes"]
        cells = [str(r.get(k, "-")) for k in ROWS]
        attrs = [str(a.get(k, "-")) for k in ("colour", "shape", "count", "relation")]
        return f"| {label} | " + " | ".join(cells + attrs) + f" | {seconds} |"

    for run in runs:
        lines.append(
            row(
                f"generated, T {run['temperature']:g}, CFG {run['cfg_scale']:g}",
                run["generated"],
                str(run["seconds_per_image"]),
            )
        )
    if "ceiling" in runs[0]:
        ceiling = runs[0]["ceiling"]
        lines.append(row("tokenizer ceiling (canonical image encoded + decoded)", ceiling))
        lines.append(row("chance (canonical image of another prompt)", runs[0]["chance"]))
    vlm = [r for r in runs if "vlm_generated" in r]
    if vlm:
        lines += [
            "",
            "Understanding model (shipped default VLM) as judge, pass rate % "
            "(per-question accuracy by task):",
            "",
        ]
        for r in vlm:
            lines.append(
                f"- generated, CFG {r['cfg_scale']:g}: {r['vlm_generated'][0]} "
                f"({r['vlm_generated'][1]})"
            )
        if "vlm_canonical" in vlm[0]:
            lines.append(
                f"- canonical images (the judge's own ceiling): "
                f"{vlm[0]['vlm_canonical'][0]} ({vlm[0]['vlm_canonical'][1]})"
            )
        if "vlm_chance" in vlm[0]:
            lines.append(
                f"- another prompt's canonical image (the judge's chance): "
                f"{vlm[0]['vlm_chance'][0]} ({vlm[0]['vlm_chance'][1]})"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
