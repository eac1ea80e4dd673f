"""Linear probe at the answer position: does the LLM bring the asked attribute there at all?

For one task's rows (default: colour, "What colour is the star?" about a scene of 1-4 objects),
the hidden state of the last prompt position (where the first answer token is predicted) is
read at several decoder layers, and a linear probe is trained to predict the reference answer
(train split) and scored on the test split. A probe near chance at every layer means the model
never retrieves the attribute from the image, whatever its output head does.

    python benchmarks/answer_probe.py --model runs/default_stage7/final --task colour
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from colour_probe import probe_accuracy

from mmllm.data.dataset import Sample, load_dataset
from mmllm.default_model import load_model
from mmllm.processor import MMLLMProcessor


@torch.no_grad()
def last_position_states(model, samples: list[Sample], layers: list[int], batch: int = 16):
    """``{layer: [n, D]}`` hidden states of each prompt's last position."""
    proc = MMLLMProcessor.from_model(model)
    decoder = model._causal_lm().get_decoder()
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for start in range(0, len(samples), batch):
        chunk = samples[start : start + batch]
        inputs = proc([s.prompt_messages() for s in chunk], [s.images for s in chunk])
        prompt = model.prompt(
            inputs["input_ids"], inputs["pixel_values"], attention_mask=inputs["attention_mask"]
        )
        states = decoder(
            inputs_embeds=prompt.embeds,
            attention_mask=inputs["attention_mask"],
            position_ids=prompt.position_ids,
            output_hidden_states=True,
        ).hidden_states
        for layer in layers:
            out[layer].append(states[layer][:, -1].float())
    return {layer: torch.cat(v) for layer, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint folder (default: shipped)")
    parser.add_argument("--task", default="colour")
    parser.add_argument("--train", type=Path, default=Path("data/train"))
    parser.add_argument("--test", type=Path, default=Path("data/test"))
    parser.add_argument("--n-train", type=int, default=600)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.model).eval()
    rows = [s for s in load_dataset(args.train) if s.task == args.task]
    train = [s for s in rows if len(s.messages) == 2][: args.n_train]  # one-turn rows only
    test = [s for s in load_dataset(args.test) if s.task == args.task]
    answers = sorted({s.answer for s in train + test})
    y_train = torch.tensor([answers.index(s.answer) for s in train])
    y_test = torch.tensor([answers.index(s.answer) for s in test])
    n_layers = model._causal_lm().config.num_hidden_layers
    layers = sorted({0, *range(4, n_layers, 4), n_layers})
    x_train = last_position_states(model, train, layers)
    x_test = last_position_states(model, test, layers)
    top = max(answers, key=lambda a: sum(s.answer == a for s in test))
    name = args.model or "shipped model"
    print(f"{name}, task {args.task}: {len(train)} train / {len(test)} test")
    print("| layer | probe test accuracy |\n|---|---|")
    for layer in layers:
        acc = probe_accuracy(x_train[layer], y_train, x_test[layer], y_test, len(answers))
        print(f"| {layer} | {acc:.1%} |")
    share = sum(s.answer == top for s in test) / len(test)
    print(f"most frequent test answer ('{top}'): {share:.1%}")


if __name__ == "__main__":
    main()
