"""``mmllm bench tokenizers``: quantizers and 1D vs 2D tokenizers, trained the same way.

Every configuration is trained by the same recipe machinery (:func:`train_tokenizer`) for the same
number of steps on the same images, then scored on held-out images: PSNR, SSIM, codebook usage.
The configurations are grouped so that rows with the same ``bits per image`` compare quantizers
(and 2D grid vs 1D latent tokens) at equal information budget. Writes ``tokenizers.md``,
``tokenizers.json`` and ``tokenizers.png`` (PSNR against tokens per image).
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import torch

from mmllm.recipe import TokenizerRecipe

FSQ_10_BITS = {"name": "fsq", "levels": [8, 8, 4, 4]}

#: name -> tokenizer section (64 px images). 640 bits per image: the 64-token 2D grids, 1d-fsq-64
#: and 1d-bsq-32; 160 bits: 2d-fsq-16 and 1d-fsq-16.
CONFIGS: dict[str, dict] = {
    "2d-fsq-64": {"kind": "conv2d", "latent_dim": 4, "quantizer": FSQ_10_BITS},
    "2d-vq-64": {
        "kind": "conv2d",
        "latent_dim": 8,
        "quantizer": {"name": "vq", "codebook_size": 1024},
    },
    "2d-lfq-64": {"kind": "conv2d", "latent_dim": 10, "quantizer": {"name": "lfq"}},
    "2d-bsq-64": {"kind": "conv2d", "latent_dim": 10, "quantizer": {"name": "bsq"}},
    "2d-rvq-64": {
        "kind": "conv2d",
        "latent_dim": 4,
        "quantizer": {"name": "rvq", "stage": "fsq", "num_stages": 2, "levels": [4, 2, 2, 2]},
    },
    "2d-fsq-16": {"kind": "conv2d", "downsample": 16, "latent_dim": 4, "quantizer": FSQ_10_BITS},
    "1d-fsq-64": {"kind": "titok", "num_latents": 64, "latent_dim": 4, "quantizer": FSQ_10_BITS},
    "1d-fsq-32": {"kind": "titok", "num_latents": 32, "latent_dim": 4, "quantizer": FSQ_10_BITS},
    "1d-bsq-32": {
        "kind": "titok",
        "num_latents": 32,
        "latent_dim": 20,
        "quantizer": {"name": "bsq"},
    },
    "1d-fsq-16": {"kind": "titok", "num_latents": 16, "latent_dim": 4, "quantizer": FSQ_10_BITS},
}


def run_tokenizer_bench(
    train: Path,
    eval_data: Path,
    out: Path,
    names: list[str],
    steps: int,
    batch_size: int = 32,
    smoke: bool = False,
    channels: int = 64,
    legibility_data: Path | None = None,
    legibility_n: int = 40,
    judge=None,
) -> list[dict]:
    """Train and score each configuration; returns the rows it writes.

    With ``legibility_data`` (a data folder with ``text`` / ``small_object`` questions) each
    tokenizer is also scored by the understanding model ``judge`` (default: the shipped one) on
    originals vs reconstructions (:mod:`mmllm.tokenizer_legibility`).
    """
    from mmllm.train_tokenizer import train_tokenizer
    from mmllm.vision_tokenizers.discrete import DiscreteTokenizer

    out.mkdir(parents=True, exist_ok=True)
    detail = None
    if legibility_data is not None:
        from mmllm.data.dataset import load_dataset
        from mmllm.tokenizer_legibility import DETAIL_TASKS

        pool = load_dataset(legibility_data)
        per_task = legibility_n // len(DETAIL_TASKS)
        detail = [s for t in DETAIL_TASKS for s in [s for s in pool if s.task == t][:per_task]]
        if judge is None:
            from mmllm.default_model import load_model

            judge = load_model()
    rows = []
    for name in names:
        section = CONFIGS[name]
        recipe = TokenizerRecipe.model_validate(
            {
                "name": f"bench-{name}",
                "tokenizer": {"image_size": 64, "channels": channels, "depth": 2, **section},
                "data": {"train": str(train), "eval": str(eval_data)},
                "losses": {"l1": 1.0, "l2": 1.0},
                "train": {
                    "output_dir": str(out / "runs" / name),
                    "max_steps": steps,
                    "batch_size": batch_size,
                    "save_steps": max(steps, 1),
                },
                "smoke": {"max_steps": steps, "train_samples": 8, "batch_size": 2},
            }
        )
        final = train_tokenizer(recipe, smoke=smoke)
        tokenizer = DiscreteTokenizer.from_pretrained(final)
        bits = bits_per_token(tokenizer.quantizer)
        metrics = json.loads((final / "metrics.json").read_text())
        tokens = metrics["tokens_per_image"]
        rows.append(
            {
                "config": name,
                "kind": section["kind"],
                "quantizer": section["quantizer"]["name"],
                "tokens_per_image": tokens,
                "bits_per_token": bits,
                "bits_per_image": round(tokens * bits),
                **{k: metrics[k] for k in ("psnr", "ssim", "codebook_usage", "n")},
                "steps": steps,
                "batch_size": batch_size,
                "channels": channels,
            }
        )
        if detail:
            from mmllm.tokenizer_legibility import legibility

            rows[-1]["legibility"] = legibility(tokenizer, judge, detail)
        _write(rows, out)
    return rows


def _write(rows: list[dict], out: Path) -> None:
    (out / "tokenizers.json").write_text(json.dumps(rows, indent=1))
    head = ["config", "kind", "quantizer", "tokens", "bits/token", "bits/image"]
    head += ["PSNR dB", "SSIM", "usage %"]
    legible = "legibility" in rows[0]
    if legible:
        head += ["judge on originals %", "judge on reconstructions %", "kept %"]
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads; {rows[0]['steps']} training steps of batch {rows[0]['batch_size']} each, "
        f"width {rows[0]['channels']}; n = {rows[0]['n']} held-out images.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in sorted(rows, key=lambda r: (-r["bits_per_image"], r["config"])):
        lines.append(
            f"| {r['config']} | {r['kind']} | {r['quantizer']} | {r['tokens_per_image']} | "
            f"{r['bits_per_token']:g} | {r['bits_per_image']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.3f} | {100 * r['codebook_usage']:.1f} |"
            + (
                f" {r['legibility']['original_overall']} | "
                f"{r['legibility']['reconstructed_overall']} | {r['legibility']['kept']} |"
                if legible
                else ""
            )
        )
    if legible:
        leg = rows[0]["legibility"]
        lines += [
            "",
            f"Legibility: the shipped understanding model answers {leg['n']} text-reading and "
            "small-object questions on the original images and on each tokenizer's "
            "reconstructions (resized back); 'kept' = share of its right answers that stay right.",
        ]
    (out / "tokenizers.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "tokenizers.png")


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for kind, marker in (("conv2d", "s"), ("titok", "o")):
        for r in (r for r in rows if r["kind"] == kind):
            ax.scatter(r["tokens_per_image"], r["psnr"], marker=marker, s=40)
            ax.annotate(
                r["config"],
                (r["tokens_per_image"], r["psnr"]),
                fontsize=7,
                xytext=(4, 3),
                textcoords="offset points",
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens per image (squares: 2D grid, circles: 1D latent tokens)")
    ax.set_ylabel("PSNR (dB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bits_per_token(quantizer) -> float:
    """Information per token: log2 of the codebook, times the stages or groups it stacks."""
    stacked = len(getattr(quantizer, "stages", None) or getattr(quantizer, "parts", None) or [0])
    return math.log2(quantizer.codebook_size) * stacked
