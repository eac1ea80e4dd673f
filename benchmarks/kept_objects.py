"""Which of an image's objects does a reducer keep, and does keeping them decide the answer?

For the first ``--per-task`` questions of each task in a generated split, the reducer's kept
cells are matched to the objects the generator drew (``mmllm.grounding.assign_cells`` on the
rows' boxes). "Needed" objects: the two a relation question names; for small_object the one
object whose words hold the answer and the word the question asks by ("What colour is the small
cross?" -> "purple cross"); for count every object it counts ("crosses"); for caption all. Per
task: accuracy, how often every needed object survives, accuracy when they do and when they do
not, and kept cells that show no object. It explains where a budget loses
(``docs/reduction.md``, "Covering the question's words").

    python benchmarks/kept_objects.py --data data/val_big \
        --reduction focus:3 --reduction focus:3,cover=1
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from mmllm.data.dataset import Sample, load_dataset
from mmllm.data.normalize import exact_match
from mmllm.default_model import load_model
from mmllm.grounding import assign_cells, object_regions
from mmllm.processor import MMLLMProcessor

#: The tasks whose answer rests on objects this probe can name.
TASKS = ("relation", "small_object", "count", "caption")


def needed_objects(sample: Sample, regions: list[dict]) -> list[int]:
    """Indices of the objects a question cannot be answered without."""
    if sample.task == "caption":
        return list(range(len(regions)))
    question = sample.question.lower()
    asked = set(question.replace("?", " ").replace(".", " ").split())
    if sample.task == "count":  # every object the question counts: "crosses" -> each cross
        return [
            i
            for i, r in enumerate(regions)
            if any({w, w + "s", w + "es"} & asked for w in r["text"].split())
        ]
    if sample.task == "small_object":  # the one object with the answer and the asked-for word
        answer = (sample.answer or "").lower()
        return [
            i
            for i, r in enumerate(regions)
            if answer in r["text"].split() and asked & (set(r["text"].split()) - {answer})
        ]
    if sample.task == "relation":
        return [i for i, r in enumerate(regions) if r["text"] in question]
    raise ValueError(f"no needed objects defined for task {sample.task!r}; use {TASKS}")


def kept_cells(model, processor, sample: Sample) -> tuple[list[int], str]:
    """The source cells the model's reducer keeps for ``sample``, and the model's answer."""
    seen = {}
    # the model hands the reduced tokens' source index only to its prompt builder: record it
    # from the encode step that builds them, for this one call
    encode = model._encode

    def recording(*args, **kwargs):
        out = encode(*args, **kwargs)
        seen["index"] = out[1].index[0].tolist()
        return out

    model._encode = recording
    try:
        inputs = processor([sample.prompt_messages()], [sample.images])
        ids = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    finally:
        del model._encode  # the class's method again
    return seen["index"], processor.decode(ids)[0]


@torch.no_grad()
def kept_objects(model, samples: list[Sample], spec: str) -> dict[str, dict[str, float]]:
    model.set_reduction(spec)
    processor = MMLLMProcessor.from_model(model)
    grid = model.encoder.grid
    counts: dict[str, Counter] = {}
    for sample in samples:
        regions = object_regions(sample.regions[0])
        boxes = torch.tensor([r["box"] for r in regions], dtype=torch.float32).view(-1, 4)
        owner = assign_cells(boxes, grid, min_cover=0.3)
        kept, answer = kept_cells(model, processor, sample)
        needed = needed_objects(sample, regions)
        all_kept = all(any(int(owner[c]) == i for c in kept) for i in needed)
        ok = exact_match(answer, sample.answer or "")
        c = counts.setdefault(sample.task, Counter())
        c["n"] += 1
        c["right"] += ok
        c["all_kept"] += all_kept
        c["right_when_kept"] += ok and all_kept
        c["background_cells"] += sum(int(owner[i]) < 0 for i in kept)
    report = {}
    for task, c in sorted(counts.items()):
        missed = c["n"] - c["all_kept"]
        report[task] = {
            "n": c["n"],
            "accuracy": c["right"] / c["n"],
            "needed_objects_kept": c["all_kept"] / c["n"],
            "accuracy_when_kept": c["right_when_kept"] / max(c["all_kept"], 1),
            "accuracy_when_missed": (c["right"] - c["right_when_kept"]) / max(missed, 1),
            "background_cells_per_image": c["background_cells"] / c["n"],
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("--reduction", action="append", required=True, help="repeatable")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"some of {TASKS}")
    parser.add_argument("--per-task", type=int, default=60)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if unknown := set(tasks) - set(TASKS):
        parser.error(f"--tasks: {sorted(unknown)} not among {TASKS}")
    chosen: dict[str, list[Sample]] = {t: [] for t in tasks}
    for sample in load_dataset(args.data):
        if sample.task in chosen and len(chosen[sample.task]) < args.per_task:
            if sample.regions is None:
                raise SystemExit(f"{args.data}: rows carry no regions (make it with mmllm data)")
            chosen[sample.task].append(sample)
    samples = [s for t in tasks for s in chosen[t]]
    model = load_model(args.model)
    model.eval()
    results = {spec: kept_objects(model, samples, spec) for spec in args.reduction}
    print(json.dumps(results, indent=2))
    for spec, report in results.items():
        print(f"\n{spec}")
        print("| task | n | accuracy | needed kept | acc. when kept | when missed | bg cells |")
        print("|---|---|---|---|---|---|---|")
        for task, r in report.items():
            print(
                f"| {task} | {r['n']} | {100 * r['accuracy']:.0f} | "
                f"{100 * r['needed_objects_kept']:.0f} | {100 * r['accuracy_when_kept']:.0f} | "
                f"{100 * r['accuracy_when_missed']:.0f} | {r['background_cells_per_image']:.2f} |"
            )


if __name__ == "__main__":
    main()
