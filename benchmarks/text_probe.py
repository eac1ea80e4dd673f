"""Can the frozen encoder's tokens be read as text? A linear probe on text-task images.

Renders text-task images (words and 0-9999 numbers, data seed 99, never used in training),
encodes them with the default model's frozen encoder, and fits an L2-regularised logistic
regression on the mean and max of each image's tokens (80/20 split, standardised features) for
three targets: the word (words only), the number's length, and the first digit of 4-digit
numbers. Chance is the most
frequent class of the test part. If a linear readout of pooled tokens cannot name the word, LoRA
steps on text questions at that resolution are unlikely to teach reading either.

    python benchmarks/text_probe.py --image-size 224 --n 3000
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
from tqdm import tqdm

from mmllm.data.generate import make_dataset
from mmllm.encoders import build_encoder

ENCODER = "efficientnet_lite0:detail=4,7"
TARGETS: dict[str, tuple[Callable[[str], bool], Callable[[str], str]]] = {
    "word": (lambda a: not a.isdigit(), lambda a: a),
    "number length": (lambda a: a.isdigit(), lambda a: str(len(a))),
    "first digit (4-digit numbers)": (lambda a: a.isdigit() and len(a) == 4, lambda a: a[0]),
}


@torch.no_grad()
def pooled_tokens(root: Path, image_size: int, batch: int = 32) -> tuple[torch.Tensor, list[str]]:
    """Mean and max over each image's visual tokens, ``[n, 2 * D]``, and the answers."""
    encoder = build_encoder(ENCODER, image_size=image_size).eval()
    rows = [json.loads(line) for line in (root / "train.jsonl").open()]
    pooled = []
    for i in tqdm(range(0, len(rows), batch), desc=f"encoding at {image_size} px"):
        images = [Image.open(root / r["images"][0]).convert("RGB") for r in rows[i : i + batch]]
        tokens = encoder(encoder.preprocess(images)).embeds.float()
        pooled.append(torch.cat([tokens.mean(1), tokens.amax(1)], -1))
    return torch.cat(pooled), [r["answer"] for r in rows]


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
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(tmp, args.n, seed=args.seed, split="train", tasks=["text"])
        x, answers = pooled_tokens(Path(tmp), args.image_size)
    print(f"{ENCODER} at {args.image_size} px, {args.n} images (seed {args.seed}):")
    for name, (keep, label) in TARGETS.items():
        rows = [i for i, a in enumerate(answers) if keep(a)]
        r = probe(x[rows], [label(answers[i]) for i in rows])
        print(
            f"  {name}: test accuracy {100 * r['accuracy']:.1f}% "
            f"(chance {100 * r['chance']:.1f}%, {r['classes']} classes, n = {r['n']})"
        )


if __name__ == "__main__":
    main()
