"""The reading stage: fine-tune the encoder (and adapter) so rendered text reaches the LLM as words.

Why: the text task stayed at 0% through every LLM stage. Probes (``benchmarks/text_probe.py``)
located the loss: the frozen encoder's tokens name the word only 29% of the time (linear probe,
52 words), while the same encoder fine-tuned with a direct word loss names it 93% of the time at
224 px. An encoder trained only through the LLM's answer loss did not learn to read in 1 000
steps (stage 18: 0-1% exact match on the text questions): the signal is too weak and too rare.

What this stage does, with no LLM forward pass: rows carry text regions (``"kind": "text"``, a
box and what it reads; ``mmllm data make`` writes them). Each encoder cell the text covers
(:func:`mmllm.grounding.assign_cells`) is trained, through the trainable encoder and the
adapter, onto the LLM's input embedding of what it reads plus its 3 x 3 place words, exactly the
targets stage 0 (:mod:`mmllm.grounding`) gives objects: a squared error and a soft-target
cross-entropy over the reading vocabulary. A number is read as its digits (``"4 8 2 1"``: the sum
of the digit embeddings, so the cell says which digits it shows but not their order; the LLM
stage that follows learns the order from the pixels the encoder now resolves).

Every other cell keeps what the model already says there: a squared error to the output of the
model as it was before this stage (computed once, the *teacher*), so colour, shape, place and
counting are not unlearned while the encoder changes (self-distillation, as in LwF, Li & Hoiem,
ECCV 2016). The LLM stage that follows (``train.stage: 2`` with ``model.init_from`` this stage's
output) teaches the LLM to answer from the new text cells.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmllm.data.dataset import Sample
from mmllm.errors import MMLLMError
from mmllm.grounding import (
    BACKGROUND,
    GroundingObjective,
    cell_labels,
    regions_by_image,
    words_of,
)
from mmllm.vision_tokenizers.images import to_pixels

log = logging.getLogger(__name__)


def reading_phrase(text: str) -> str:
    """What a text region's cells are trained to say: a number as its digits, spaced (one word
    per digit, so ten digit words cover every number), anything else as its lower-case words."""
    text = text.strip().lower()
    return " ".join(text) if text.isdigit() else " ".join(words_of(text))


def text_regions(regions: list[dict]) -> list[dict]:
    return [r for r in regions if r.get("kind") == "text"]


def reading_phrases(samples: list[Sample]) -> list[str]:
    """Index 0 (not text: its target is never used), then every distinct reading phrase,
    sorted: fixed label indices."""
    found = {
        reading_phrase(r["text"])
        for s in samples
        for regions in s.regions or []
        for r in text_regions(regions)
    }
    return ["background", *sorted(found)]


class ReadingData(torch.utils.data.Dataset):
    """One item per distinct image: its pixels (loaded on access), each cell's reading-phrase
    index ``labels [T]`` (0: not text) and the teacher's adapter output ``teacher [T, D]``."""

    def __init__(self, paths: list[Path], labels: torch.Tensor, teacher: torch.Tensor, pixels):
        self.paths, self.labels, self.teacher, self._pixels = paths, labels, teacher, pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": self._pixels([self.paths[i]])[0],
            "labels": self.labels[i],
            "teacher": self.teacher[i],
        }


def build_reading_data(
    model,
    samples: list[Sample],
    phrases: list[str],
    min_cover: float,
    batch_size: int = 32,
    progress: bool = True,
) -> ReadingData:
    """Label every distinct image's cells with ``phrases`` indices and cache the teacher (the
    model as it is now: encoder + adapter on the full grid, fp16)."""
    regions_of = regions_by_image(samples, text_regions)
    if not any(regions_of.values()):
        raise MMLLMError(
            "the reading stage needs rows with text regions ({'box': ..., 'text': ..., "
            "'kind': 'text'}); `mmllm data make` writes them for images with rendered text"
        )
    index = {p: i for i, p in enumerate(phrases)}
    grid = model.encoder.grid
    config, encoder = model.config, model.encoder

    def pixels(paths: list[Path]) -> torch.Tensor:
        return to_pixels(paths, config.image_size, encoder.mean, encoder.std)

    paths = list(regions_of)
    labels, teacher = [], []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(paths), batch_size), desc="teacher tokens", disable=not progress
        ):
            chunk = paths[start : start + batch_size]
            tokens = encoder(pixels(chunk).to(model.device))
            teacher.append(model.adapter(tokens).to("cpu", torch.float16))
            for path in chunk:
                regions = regions_of[path]
                ids = [index[reading_phrase(r["text"])] for r in regions]
                labels.append(cell_labels(regions, ids, grid, min_cover))
    return ReadingData(paths, torch.stack(labels), torch.cat(teacher), pixels)


class ReadingObjective(GroundingObjective):
    """The reading loss around a model's encoder and adapter (both train).

    Text cells: stage 0's targets (phrase embedding + place words, squared error and word
    cross-entropy); other cells: squared error to the teacher, weighted ``keep_weight``. Each
    term is a mean over its own cells, so the weight does not depend on how many cells text
    covers in a batch."""

    def __init__(self, vlm, phrases: list[str], ce_weight: float, scale: float, keep_weight: float):
        super().__init__(vlm, phrases, ce_weight, scale, background_weight=0.0, place_words=True)
        self.vision = vlm.encoder  # a submodule here: it trains, and moves with the objective
        self.phrases, self.keep_weight = phrases, keep_weight

    def train(self, mode: bool = True):
        """The encoder stays in eval mode: its BatchNorm statistics must match inference."""
        super().train(mode)
        self.vision.eval()
        return self

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Adapter output ``[B, T, D]`` on the full grid, gradients through the encoder."""
        return self.adapter(self.vision(pixel_values))

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        out = self.tokens(pixel_values)
        text = labels != BACKGROUND
        keep = ((out[~text] - teacher[~text].float()) ** 2).mean()
        loss = self.keep_weight * keep
        if text.any():  # a mean of its own: a batch's few text cells are not outweighed
            target = self.targets[labels[text]] + self.place_targets.expand_as(out)[text]
            loss = loss + ((out[text] - target) ** 2).mean()
            if self.ce_weight > 0:
                logits = out[text] @ self.centred.T * self.scale
                ce = -(self.soft[labels[text]] * logits.log_softmax(-1)).sum(-1).mean()
                loss = loss + self.ce_weight * ce
        return {"loss": loss}

    @torch.no_grad()
    def reading_accuracy(self, data: ReadingData, batch_size: int = 64) -> dict[str, float]:
        """Per image with text: ``word`` is how often the text cells' mean output scores its own
        word highest among the data's words (word images); ``digits`` how often each digit of a
        number is among the top-scoring digits (number images, as many as it has distinct
        digits); ``keep_error`` the other cells' squared error to the teacher relative to the
        teacher's own squared norm."""
        digits = [w for w in self.words if w.isdigit()]
        names = [w for w in self.words if not w.isdigit()]
        word_ids = torch.tensor([self.words.index(w) for w in names], dtype=torch.long)
        digit_ids = torch.tensor([self.words.index(w) for w in digits], dtype=torch.long)
        word_hits, digit_hits, err, norm = [], [], 0.0, 0.0
        for start in range(0, len(data), batch_size):
            batch = [data[i] for i in range(start, min(start + batch_size, len(data)))]
            pixels = torch.stack([b["pixel_values"] for b in batch])
            labels = torch.stack([b["labels"] for b in batch])
            teacher = torch.stack([b["teacher"] for b in batch]).float()
            out = self.tokens(pixels.to(self.targets.device)).cpu()
            keep = labels == BACKGROUND
            err += ((out - teacher) ** 2).sum(-1)[keep].sum().item()
            norm += (teacher**2).sum(-1)[keep].sum().item()
            scores = (out @ self.centred.T.cpu()) * (~keep)[..., None]  # text cells only
            for row, lab in zip(scores, labels, strict=True):
                phrase = int(lab.max())
                if phrase == BACKGROUND:
                    continue
                mean = row.sum(0) / (lab != BACKGROUND).sum()
                truth = words_of(self.phrases[phrase])
                if truth[0].isdigit() and len(digit_ids):
                    want = set(truth)
                    top = digit_ids[mean[digit_ids].topk(len(want)).indices]
                    got = {self.words[i] for i in top.tolist()}
                    digit_hits.append(len(got & want) / len(want))
                elif len(word_ids):
                    best = names[int(mean[word_ids].argmax())]
                    word_hits.append(float(best == truth[0]))
        result = {"keep_error": err / max(norm, 1e-12)}
        if word_hits:
            result["word"], result["word_images"] = sum(word_hits) / len(word_hits), len(word_hits)
        if digit_hits:
            result["digits"] = sum(digit_hits) / len(digit_hits)
            result["number_images"] = len(digit_hits)
        return result


def write_reading_report(objective: ReadingObjective, data: ReadingData, folder: Path) -> dict:
    """Reading accuracy of the trained tokens on ``data``, saved as ``reading.json``."""
    report = objective.reading_accuracy(data)
    (folder / "reading.json").write_text(json.dumps(report, indent=1))
    log.info("reading accuracy: %s", report)
    return report


__all__ = [
    "ReadingData",
    "ReadingObjective",
    "build_reading_data",
    "reading_phrase",
    "reading_phrases",
    "write_reading_report",
]
