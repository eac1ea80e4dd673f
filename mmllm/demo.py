"""The README's main job: encoder -> reducer -> LLM on a few images, full vs reduced tokens.

Until the trained adapter ships, the LLM does not see the visual tokens directly: the encoder's
own ImageNet classifier reads the (full or reduced) tokens, and SmolLM2 is asked about the label.
This still exercises every real pretrained part and shows what a reducer keeps, and at what cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from mmllm.assets import asset_path
from mmllm.reduction import build

DEFAULT_IMAGES = ("cat.jpg", "coffee.jpg")


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


@torch.no_grad()
def run_demo(
    images: list[Path] | None,
    reduction: str,
    image_size: int,
    max_new_tokens: int,
    console: Console,
) -> list[dict]:
    """Run the demo and print a table; returns one record per image."""
    from mmllm.llm import chat_text, load_llm
    from mmllm.vision_tokenizers import EfficientNetLiteEncoder

    reducer = build(reduction)  # fail on a bad spec before loading anything
    paths = [Path(p) for p in images] if images else [asset_path(n) for n in DEFAULT_IMAGES]
    with console.status("loading EfficientNet-lite0 and SmolLM2-135M-Instruct..."):
        encoder = EfficientNetLiteEncoder(image_size=image_size)
        reducer.output_len(encoder.num_tokens, encoder.grid)  # budget check before encoding
        llm, tokenizer = load_llm()
    records = []
    for path in paths:
        pixels = encoder.preprocess(path)
        start = time.perf_counter()
        tokens = encoder(pixels)
        encode_ms = _ms(start)
        start = time.perf_counter()
        reduced = reducer(tokens)
        reduce_ms = _ms(start)
        (full_label, full_p), *_ = encoder.classify_tokens(tokens, 1)[0]
        (red_label, red_p), *_ = encoder.classify_tokens(reduced, 1)[0]
        start = time.perf_counter()
        answer = chat_text(
            llm, tokenizer, f"In one short sentence, what is a {full_label}?", max_new_tokens
        )
        llm_ms = _ms(start)
        records.append(
            {
                "image": path.name,
                "tokens": tokens.num_tokens,
                "label": full_label,
                "p": full_p,
                "reduced_tokens": reduced.num_tokens,
                "reduced_label": red_label,
                "reduced_p": red_p,
                "encode_ms": encode_ms,
                "reduce_ms": reduce_ms,
                "llm_ms": llm_ms,
                "answer": answer,
            }
        )
    table = Table(title=f"EfficientNet-lite0 @ {image_size}px -> '{reducer.spec}' -> SmolLM2-135M")
    for col in (
        "image",
        "full tokens",
        "label (full)",
        f"tokens ({reduction})",
        "label (reduced)",
        "encode ms",
        "reduce ms",
    ):
        table.add_column(col)
    for r in records:
        table.add_row(
            r["image"],
            str(r["tokens"]),
            f"{r['label']} ({r['p']:.2f})",
            str(r["reduced_tokens"]),
            f"{r['reduced_label']} ({r['reduced_p']:.2f})",
            f"{r['encode_ms']:.0f}",
            f"{r['reduce_ms']:.2f}",
        )
    console.print(table)
    for r in records:
        console.print(
            f"[bold]{r['image']}[/bold] -> SmolLM2 on '{r['label']}' "
            f"({r['llm_ms']:.0f} ms): {r['answer']}"
        )
    return records
