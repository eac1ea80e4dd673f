"""Linear probe: how well do an encoder's tokens tell an object's colour?

Single-object caption images ("a teal star") of a generated split give (image, colour) pairs; a
logistic-regression probe on max-pooled tokens is trained on the train split and scored on the
test split, once per channel group (the 1280 head channels, the folded detail blocks, both).
It shows whether colour reaches the adapter at all, separately from whether the LLM learns to
use it. With ``--model`` the same probe also reads a checkpoint's adapter output (what the LLM
receives), to show whether the trained adapter passes the colour on.

    python benchmarks/colour_probe.py --train data/train --test data/test
    python benchmarks/colour_probe.py --test data/test data/val --model runs/default_stage7/final
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from mmllm.encoders import build_encoder
from mmllm.vision_tokenizers.images import to_pixels

SINGLE_OBJECT = re.compile(r"an? (\w+) \w+")


def single_object_rows(folder: Path, limit: int) -> list[tuple[Path, str]]:
    """(image path, colour) of caption rows whose answer names exactly one object."""
    rows = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            match = SINGLE_OBJECT.fullmatch(row["answer"]) if row["task"] == "caption" else None
            if match:
                rows.append((folder / row["images"][0], match.group(1)))
    return rows[:limit]


@torch.no_grad()
def pooled_tokens(encoder, paths: list[Path], batch: int = 32, adapter=None) -> torch.Tensor:
    """Max-pooled encoder tokens (or, given ``adapter``, max-pooled adapter outputs)."""
    chunks = []
    for start in range(0, len(paths), batch):
        pixels = to_pixels(
            paths[start : start + batch], encoder.image_size, encoder.mean, encoder.std
        )
        tokens = encoder(pixels)
        chunks.append((tokens.embeds if adapter is None else adapter(tokens)).amax(1))
    return torch.cat(chunks)


def probe_accuracy(x_train, y_train, x_test, y_test, classes: int, steps: int = 300) -> float:
    mean, std = x_train.mean(0), x_train.std(0) + 1e-5
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    weight = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    opt = torch.optim.Adam([weight], lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(x_train @ weight, y_train) + 1e-3 * weight.pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(((x_test @ weight).argmax(1) == y_test).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=Path("data/train"))
    parser.add_argument("--test", type=Path, nargs="+", default=[Path("data/test")])
    parser.add_argument("--encoder", default="efficientnet_lite0:detail=4,7")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n-train", type=int, default=400)
    parser.add_argument(
        "--model",
        default=None,
        help="a checkpoint (or 'default'): probe its encoder and its adapter output instead",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    adapter = None
    if args.model:
        from mmllm.default_model import load_model

        model = load_model(None if args.model == "default" else args.model).eval()
        encoder, adapter, args.encoder = model.encoder, model.adapter, model.config.encoder
    else:
        encoder = build_encoder(args.encoder, args.image_size)
    train = single_object_rows(args.train, args.n_train)
    test = [row for folder in args.test for row in single_object_rows(folder, 10_000)]
    colours = sorted({c for _, c in train + test})
    y_train = torch.tensor([colours.index(c) for _, c in train])
    y_test = torch.tensor([colours.index(c) for _, c in test])
    x_train = pooled_tokens(encoder, [p for p, _ in train])
    x_test = pooled_tokens(encoder, [p for p, _ in test])
    head = getattr(encoder, "head_size", x_train.shape[1])
    groups = {"head": slice(0, head), "detail": slice(head, None), "all": slice(None)}
    print(f"{args.encoder}: {len(train)} train / {len(test)} test images, {len(colours)} colours")
    print("| channels | dims | test accuracy |\n|---|---|---|")
    for name, cols in groups.items():
        dims = x_train[:, cols].shape[1]
        if dims == 0:
            continue
        acc = probe_accuracy(x_train[:, cols], y_train, x_test[:, cols], y_test, len(colours))
        print(f"| {name} | {dims} | {acc:.1%} |")
    if adapter is not None:
        a_train = pooled_tokens(encoder, [p for p, _ in train], adapter=adapter)
        a_test = pooled_tokens(encoder, [p for p, _ in test], adapter=adapter)
        acc = probe_accuracy(a_train, y_train, a_test, y_test, len(colours))
        print(f"| adapter output ({args.model}) | {a_train.shape[1]} | {acc:.1%} |")
    print(f"chance: {1 / len(colours):.1%}")


if __name__ == "__main__":
    main()
