"""``mmllm eval``: exact-match accuracy per task, visual tokens, prefill and end-to-end time.

Prefill time is one forward pass over the prompt (encoder, reducer, adapter and the LLM on all
prompt positions, vocabulary projection on the last one); vision time is the encoder, reducer and
adapter alone (timed in a separate call, so prefill minus vision is the LLM's part); total time
is greedy generation of the whole answer. All per sample (batch time / batch size) after one
untimed warm-up batch. ``prompt_tokens`` is the mean prompt length the LLM receives.

Batches are formed from samples sorted by prompt length, so a batch is left-padded only to
prompts of about its own length: the timed compute is then close to the unpadded token count
that the ideal speed-up of a reduction is computed from. Predictions come back in the order of
``samples``, so two runs on the same samples pair row by row.

With ``answer_nll=True`` each sample is also scored by the mean negative log-likelihood per token
of its reference answer (teacher forced, same positions and in-LLM drops as decoding): a
continuous score that tells reductions apart where exact match on a weak model is mostly noise.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmllm.data.dataset import Sample
from mmllm.data.normalize import exact_match


@dataclass
class EvalResult:
    reduction: str
    overall: float
    per_task: dict[str, float]
    n: int
    visual_tokens: int
    prefill_ms: float
    total_ms: float
    prompt_tokens: float = 0.0
    vision_ms: float = 0.0
    answer_nll: float | None = None
    per_task_nll: dict[str, float] | None = None
    predictions: list[dict] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        out = asdict(self)
        out.pop("predictions")
        if self.answer_nll is None:  # only present when scored
            out.pop("answer_nll")
            out.pop("per_task_nll")
        return out


def length_sorted_batches(lengths: list[int], size: int) -> list[list[int]]:
    """Indices of the samples, sorted by prompt length (ties keep their order), in batches."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def evaluate(
    model,
    samples: list[Sample],
    reduction: str | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 24,
    progress: bool = True,
    answer_nll: bool = False,
) -> EvalResult:
    """Score ``samples`` greedily with ``model`` (optionally at another reduction)."""
    from mmllm.processor import MMLLMProcessor

    if reduction is not None:
        model.set_reduction(reduction)
    processor = MMLLMProcessor.from_model(model)
    model.eval()
    correct: dict[str, list[bool]] = defaultdict(list)
    nlls: dict[str, list[float]] = defaultdict(list)
    prefill_s = total_s = vision_s = 0.0
    prompt_tokens = 0
    lengths = [processor.prompt_length(s.prompt_messages()) for s in samples]
    batches = length_sorted_batches(lengths, batch_size)
    predictions: list[dict | None] = [None] * len(samples)
    if batches:  # warm-up, untimed: first calls allocate and pick kernels
        warm = [samples[j] for j in batches[0]]
        inputs = processor([s.prompt_messages() for s in warm], [s.images for s in warm])
        model.prefill_logits(inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
    for rows in tqdm(batches, desc=f"eval {model.config.reduction}", disable=not progress):
        batch = [samples[j] for j in rows]
        inputs = processor([s.prompt_messages() for s in batch], [s.images for s in batch])
        start = time.perf_counter()
        model.prefill_logits(inputs["input_ids"], inputs["attention_mask"], inputs["pixel_values"])
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        # the prompt's embeddings with the images in: encoder, reducer (reading the question, as
        # in prefill, when it uses text) and adapter
        model.prompt(
            inputs["input_ids"], inputs["pixel_values"], attention_mask=inputs["attention_mask"]
        )
        vision = time.perf_counter() - start
        prompt_tokens += int(inputs["attention_mask"].sum())
        start = time.perf_counter()
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        total_s += time.perf_counter() - start
        prefill_s += prefill
        vision_s += vision
        scores = [None] * len(batch)
        if answer_nll:
            answers, answer_mask = processor.answer_ids([s.messages for s in batch])
            scores = model.answer_nll(**inputs, answer_ids=answers, answer_mask=answer_mask)
            scores = scores.tolist()
        for j, sample, answer, nll in zip(rows, batch, processor.decode(ids), scores, strict=True):
            ok = exact_match(answer, sample.answer or "")
            correct[sample.task].append(ok)
            prediction = {
                "task": sample.task,
                "answer": sample.answer,
                "prediction": answer,
                "correct": ok,
                **{k: v for k, v in sample.extra.items() if k == "phrasing"},
            }
            if nll is not None:
                nlls[sample.task].append(nll)
                prediction["answer_nll"] = nll
            predictions[j] = prediction
    per_task = {task: sum(v) / len(v) for task, v in sorted(correct.items())}
    n = sum(len(v) for v in correct.values())
    return EvalResult(
        reduction=model.config.reduction,
        overall=sum(sum(v) for v in correct.values()) / max(n, 1),
        per_task=per_task,
        n=n,
        visual_tokens=model.num_image_tokens(),
        prefill_ms=1000 * prefill_s / max(n, 1),
        total_ms=1000 * total_s / max(n, 1),
        prompt_tokens=prompt_tokens / max(n, 1),
        vision_ms=1000 * vision_s / max(n, 1),
        answer_nll=sum(sum(v) for v in nlls.values()) / max(n, 1) if answer_nll else None,
        per_task_nll={t: sum(v) / len(v) for t, v in sorted(nlls.items())} if answer_nll else None,
        predictions=predictions,
    )


def plot_accuracy(results: list[EvalResult], path: Path) -> None:
    """Accuracy (overall and per task) against visual tokens per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in results:
        ax.scatter(r.visual_tokens, r.overall * 100, s=40)
        ax.annotate(
            r.reduction,
            (r.visual_tokens, r.overall * 100),
            fontsize=7,
            xytext=(4, 4),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("visual tokens per image")
    ax.set_ylabel("exact-match accuracy (%)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
