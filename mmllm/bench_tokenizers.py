"""``mmllm bench tokenizers``: quantizers and 1D vs 2D tokenizers, trained the same way.

Every configuration is trained by the same recipe machinery (:func:`train_tokenizer`) for the same
number of steps on the same images, then scored on held-out images: PSNR, SSIM, codebook usage.
The configurations are grouped so that rows with the same ``bits per image`` compare quantizers
(and 2D grid vs 1D latent tokens) at equal information budget. 1D tokenizers, trained with nested
dropout, are also scored on every power-of-two prefix of their tokens (the same model decoding
from fewer tokens). Writes ``tokenizers.md``, ``tokenizers.json`` and ``tokenizers.png`` (PSNR
against tokens per image, prefix curves as lines). ``resume=True`` scores configurations whose
``final`` folder already holds the same recipe instead of training them again.
"""

from __future__ import annotations

import json
import logging
import math
import platform
from pathlib import Path

import torch

from mmllm.recipe import TokenizerRecipe

log = logging.getLogger(__name__)

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
    resume: bool = False,
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
        final = out / "runs" / name / "final"
        if not (resume and _same_recipe(final, recipe)):
            final = train_tokenizer(recipe, smoke=smoke)
        else:
            log.warning("%s: scoring the finished run in %s (resume)", name, final)
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
        if section["kind"] == "titok":
            rows[-1]["prefix_psnr"] = prefix_psnr(tokenizer, eval_data, metrics["n"])
        if detail:
            from mmllm.tokenizer_legibility import legibility

            rows[-1]["legibility"] = legibility(tokenizer, judge, detail)
        _write(rows, out)
    return rows


def _same_recipe(final: Path, recipe: TokenizerRecipe) -> bool:
    """Whether ``final`` holds a finished run of ``recipe`` (its output folder aside)."""
    saved = final / "recipe.yaml"
    if not (saved.is_file() and (final / "metrics.json").is_file()):
        return False
    before = TokenizerRecipe.model_validate_json(saved.read_text()).model_dump()
    now = recipe.model_dump()
    before["train"].pop("output_dir"), now["train"].pop("output_dir")
    return before == now


@torch.no_grad()
def prefix_psnr(tokenizer, eval_data: Path, n: int, batch_size: int = 16) -> list[dict]:
    """PSNR of a 1D tokenizer decoding only its first ``k`` tokens, ``k`` = 1, 2, 4, ..., K:
    ``[{"tokens": k, "psnr": dB}, ...]``."""
    from mmllm.train_tokenizer import image_files
    from mmllm.vision_tokenizers.images import load_image
    from mmllm.vision_tokenizers.metrics import psnr

    tokenizer.eval()
    files = image_files(eval_data)[:n]
    total = 2 ** int(math.log2(tokenizer.num_tokens))
    lengths = [2**i for i in range(int(math.log2(total)) + 1)]
    lengths += [tokenizer.num_tokens] if tokenizer.num_tokens != total else []
    sums = dict.fromkeys(lengths, 0.0)
    for i in range(0, len(files), batch_size):
        pixels = tokenizer.preprocess([load_image(f) for f in files[i : i + batch_size]])
        ids = tokenizer.encode(pixels).ids
        for k in lengths:
            sums[k] += psnr(tokenizer.decode(ids[:, :k]), pixels) * len(pixels)
    return [{"tokens": k, "psnr": round(v / len(files), 3)} for k, v in sums.items()]


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
    prefixes = [r for r in rows if "prefix_psnr" in r]
    if prefixes:
        lines += ["", "1D tokenizers decoding only their first k tokens (nested dropout), PSNR dB:"]
        lines += [""]
        for r in sorted(prefixes, key=lambda r: r["config"]):
            curve = ", ".join(f"{p['tokens']}: {p['psnr']:.2f}" for p in r["prefix_psnr"])
            lines.append(f"- {r['config']}: {curve}")
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
        for r in (r for r in rows if kind == "titok" and "prefix_psnr" in r):
            curve = r["prefix_psnr"]
            ax.plot(
                [p["tokens"] for p in curve],
                [p["psnr"] for p in curve],
                lw=1,
                alpha=0.6,
                label=f"{r['config']}: first k tokens",
            )
    ax.set_xscale("log", base=2)
    if any("prefix_psnr" in r for r in rows):
        ax.legend(fontsize=7, loc="upper left")
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
