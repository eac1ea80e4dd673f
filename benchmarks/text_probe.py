"""Can the frozen encoder's tokens be read as text? A linear probe on text-task images.

Renders text-task images (words and 0-9999 numbers, data seed 99, never used in training),
encodes them with the default model's frozen encoder (or, with ``--encoder-weights``, a
checkpoint's fine-tuned one), and fits an L2-regularised logistic
regression on the mean and max of each image's tokens (80/20 split, standardised features) for
three targets: the word (words only), the number's length, and the first digit of 4-digit
numbers. Chance is the most
frequent class of the test part. If a linear readout of pooled tokens cannot name the word, LoRA
steps on text questions at that resolution are unlikely to teach reading either.

``--finetune EPOCHS`` asks the next question: can the encoder *learn* to read at this resolution?
It fine-tunes the encoder's token weights (BatchNorm statistics frozen, as ``train.encoder_lr``
does in a recipe) with a linear head on the same pooled tokens, for the word target, on the
same 80/20 split, and reports the held-out accuracy after each epoch.

    python benchmarks/text_probe.py --image-size 224 --n 3000
    python benchmarks/text_probe.py --image-size 224 --n 3000 --finetune 4
    python benchmarks/text_probe.py --encoder-weights runs/default_stage18/final/encoder.safetensors
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from tqdm import tqdm

from mmllm.data.generate import make_dataset
from mmllm.encoders import build_encoder

ENCODER = "efficientnet_lite0:detail=4,7"
TARGETS: dict[str, tuple[Callable[[str], bool], Callable[[str], str]]] = {
    "word": (lambda a: not a.isdigit(), lambda a: a),
    "number length": (lambda a: a.isdigit(), lambda a: str(len(a))),
    "first digit (4-digit numbers)": (lambda a: a.isdigit() and len(a) == 4, lambda a: a[0]),
}


def pool(tokens: torch.Tensor) -> torch.Tensor:
    """Mean and max over the visual tokens, ``[B, N, D] -> [B, 2 * D]``."""
    tokens = tokens.float()
    return torch.cat([tokens.mean(1), tokens.amax(1)], -1)


def load_rows(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "train.jsonl").open()]


def load_pixels(encoder, root: Path, rows: list[dict]) -> torch.Tensor:
    images = [Image.open(root / r["images"][0]).convert("RGB") for r in rows]
    return encoder.preprocess(images)


def load_encoder(image_size: int, weights: Path | None = None):
    """The default model's encoder, with a checkpoint's fine-tuned ``encoder.safetensors``."""
    encoder = build_encoder(ENCODER, image_size=image_size).eval()
    if weights is not None:
        unexpected = encoder.load_state_dict(load_file(weights), strict=False).unexpected_keys
        if unexpected:
            raise SystemExit(f"{weights} is not {ENCODER}'s: unexpected {unexpected[:3]}")
    return encoder


@torch.no_grad()
def pooled_tokens(
    root: Path, image_size: int, weights: Path | None = None, batch: int = 32
) -> tuple[torch.Tensor, list[str]]:
    """Mean and max over each image's visual tokens, ``[n, 2 * D]``, and the answers."""
    encoder = load_encoder(image_size, weights)
    rows = load_rows(root)
    pooled = []
    for i in tqdm(range(0, len(rows), batch), desc=f"encoding at {image_size} px"):
        pooled.append(pool(encoder(load_pixels(encoder, root, rows[i : i + batch])).embeds))
    return torch.cat(pooled), [r["answer"] for r in rows]


def finetune_word_probe(
    root: Path, image_size: int, epochs: int, lr: float = 3e-4, batch: int = 32
) -> list[dict[str, float]]:
    """Fine-tune the encoder's token weights (lr) and a LayerNorm + linear head (10 x lr) to name
    the word on the first 80% of the word images; per epoch, the mean training loss and the
    held-out (last 20%) accuracy. The encoder stays in eval mode: BatchNorm statistics frozen."""
    encoder = load_encoder(image_size)
    names = set(encoder.trainable_state_names())
    for name, p in encoder.named_parameters():
        p.requires_grad_(name in names)
    rows = [r for r in load_rows(root) if not r["answer"].isdigit()]
    classes = sorted({r["answer"] for r in rows})
    labels = torch.tensor([classes.index(r["answer"]) for r in rows])
    train = int(0.8 * len(rows))
    pixels = torch.cat(
        [load_pixels(encoder, root, rows[i : i + 64]) for i in range(0, len(rows), 64)]
    )
    with torch.no_grad():
        dim = pool(encoder(pixels[:1]).embeds).shape[1]
    head = torch.nn.Sequential(torch.nn.LayerNorm(dim), torch.nn.Linear(dim, len(classes)))
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in encoder.parameters() if p.requires_grad], "lr": lr},
            {"params": list(head.parameters()), "lr": 10 * lr},
        ]
    )
    history = []
    for epoch in range(epochs):
        total = 0.0
        order = torch.randperm(train)
        for i in tqdm(range(0, train, batch), desc=f"fine-tuning, epoch {epoch + 1}/{epochs}"):
            idx = order[i : i + batch]
            loss = F.cross_entropy(head(pool(encoder(pixels[idx]).embeds)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            logits = torch.cat(
                [
                    head(pool(encoder(pixels[i : i + 64]).embeds))
                    for i in range(train, len(rows), 64)
                ]
            )
        accuracy = (logits.argmax(1) == labels[train:]).float().mean().item()
        history.append({"train_loss": total / train, "accuracy": accuracy})
        print(
            f"  epoch {epoch + 1}: train loss {total / train:.3f}, "
            f"held-out word accuracy {100 * accuracy:.1f}%",
            flush=True,
        )
    return history


def probe(x: torch.Tensor, labels: list[str], l2: float = 1e-3, iters: int = 200) -> dict:
    """L2-regularised logistic regression (solved to convergence by L-BFGS) on the first 80%,
    accuracy on the last 20%."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(label) for label in labels])
    x = (x - x.mean(0)) / (x.std(0) + 1e-4)
    train = int(0.8 * len(y))
    weight = torch.zeros(x.shape[1], len(classes), requires_grad=True)
    bias = torch.zeros(len(classes), requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], max_iter=iters, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        opt.zero_grad()
        value = F.cross_entropy(x[:train] @ weight + bias, y[:train])
        value = value + l2 * weight.pow(2).sum()
        value.backward()
        return value

    opt.step(loss)
    with torch.no_grad():
        test = ((x[train:] @ weight + bias).argmax(1) == y[train:]).float().mean().item()
    chance = torch.bincount(y[train:]).max().item() / (len(y) - train)
    return {"n": len(y), "classes": len(classes), "accuracy": test, "chance": chance}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--n", type=int, default=3000, help="text-task images to render")
    parser.add_argument("--seed", type=int, default=99)
    parser.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="EPOCHS",
        help="also fine-tune the encoder + a linear head on the word target for this many epochs",
    )
    parser.add_argument(
        "--encoder-weights",
        type=Path,
        default=None,
        metavar="ENCODER_SAFETENSORS",
        help="probe a checkpoint's fine-tuned encoder (its encoder.safetensors)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(tmp, args.n, seed=args.seed, split="train", tasks=["text"])
        if args.finetune:
            print(f"{ENCODER} fine-tuned at {args.image_size} px on the words of {args.n} images:")
            finetune_word_probe(Path(tmp), args.image_size, args.finetune)
        x, answers = pooled_tokens(Path(tmp), args.image_size, args.encoder_weights)
    weights = f" + {args.encoder_weights}" if args.encoder_weights else " (frozen)"
    print(f"{ENCODER}{weights} at {args.image_size} px, {args.n} images (seed {args.seed}):")
    for name, (keep, label) in TARGETS.items():
        rows = [i for i, a in enumerate(answers) if keep(a)]
        r = probe(x[rows], [label(answers[i]) for i in rows])
        print(
            f"  {name}: test accuracy {100 * r['accuracy']:.1f}% "
            f"(chance {100 * r['chance']:.1f}%, {r['classes']} classes, n = {r['n']})"
        )


if __name__ == "__main__":
    main()
