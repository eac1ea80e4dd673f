"""Stage 0 of training: ground each visual token in the LLM's word embeddings.

Why: on the generated data the LLaVA-style stages (1: adapter, 2: + LoRA) learned shapes but
never colours. Probes showed where the colour was lost: an object's colour is linearly readable
from the encoder's tokens (90% per object cell, detail encoder) but from the trained adapter's
output only at 32-45%, and never at the LLM's answer position. An adapter trained only through a
frozen LLM that does not yet read colour has no gradient telling it to keep colour.

What this stage does instead, with no LLM forward pass: rows carry grounding ``regions`` (a box
and the words for what it shows, e.g. ``"red circle"``; the generator writes them). Each token of
the encoder's grid gets the region that covers its cell most (:func:`assign_cells`), and the
adapter is trained so that the token's output

* equals the sum of the LLM's input embeddings of that region's words (background cells: of
  ``background`` words), a mean squared error that makes tokens look like words to the LLM, and
* puts its weight on exactly those words among all the data's region words (soft-target
  cross-entropy of the output against the centred word embeddings), because the squared error
  alone barely separates words whose embeddings are close (colours: 28% of object cells decoded
  to the right colour word with the squared error alone, 93% with both terms; shapes 91 / 96%).

With ``place_words`` every cell's target also holds the words of its place in a 3 x 3 layout
("top left" ... "center" ... "bottom right", the names the generated position task answers
with), with a cross-entropy of its own over those words. The object words say *what* a cell
shows; the place words say *where*, which the LLM otherwise has to work out from rotary
positions. A token-wise adapter can only learn them from its input, so pair this with
``mlp2x_gelu``'s learned cell embeddings (``adapter_kwargs.positions``).

Encoder features are computed once and cached (fp16), so a step is one adapter forward. This is
the region-word alignment of grounded pre-training (e.g. GLIP, Li et al., CVPR 2022; Kosmos-2)
reduced to its simplest form for a frozen LLM: regression onto the LLM's own word embeddings.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from mmllm.data.dataset import Sample
from mmllm.data.tasks import POSITIONS
from mmllm.errors import MMLLMError
from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.images import to_pixels

log = logging.getLogger(__name__)

BACKGROUND = 0  # phrase index of background cells


def cell_boxes(grid: tuple[int, int]) -> torch.Tensor:
    """``[h * w, 4]`` boxes ``(x0, y0, x1, y1)`` of a row-major token grid, in image fractions."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    xs, ys = xs.reshape(-1).float(), ys.reshape(-1).float()
    return torch.stack([xs / w, ys / h, (xs + 1) / w, (ys + 1) / h], dim=1)


def assign_cells(boxes: torch.Tensor, grid: tuple[int, int], min_cover: float) -> torch.Tensor:
    """Which region each grid cell shows: ``boxes [R, 4]`` -> ``[h * w]`` region index, -1 none.

    A cell takes the region whose box covers the largest fraction of it, if that fraction is
    above ``min_cover`` (ties: the earlier region); every region also takes the cell holding its
    box's centre (later regions win a shared centre cell), so small objects are never lost."""
    h, w = grid
    owner = torch.full((h * w,), -1, dtype=torch.long)
    if len(boxes) == 0:
        return owner
    cells = cell_boxes(grid)
    dx = (
        torch.minimum(boxes[:, None, 2], cells[None, :, 2])
        - torch.maximum(boxes[:, None, 0], cells[None, :, 0])
    ).clamp_min(0)
    dy = (
        torch.minimum(boxes[:, None, 3], cells[None, :, 3])
        - torch.maximum(boxes[:, None, 1], cells[None, :, 1])
    ).clamp_min(0)
    cover = dx * dy * (h * w)  # [R, T] fraction of each cell
    best, which = cover.max(dim=0)
    owner = torch.where(best > min_cover, which, owner)
    cx = ((boxes[:, 0] + boxes[:, 2]) / 2 * w).long().clamp(0, w - 1)
    cy = ((boxes[:, 1] + boxes[:, 3]) / 2 * h).long().clamp(0, h - 1)
    owner[cy * w + cx] = torch.arange(len(boxes))  # index_put keeps the last duplicate
    return owner


def cell_labels(
    regions: list[dict], ids: list[int], grid: tuple[int, int], min_cover: float
) -> torch.Tensor:
    """Each cell's label ``[h * w]``: ``ids[i]`` where region ``i`` owns the cell
    (:func:`assign_cells`), ``BACKGROUND`` where none does."""
    boxes = torch.tensor([r["box"] for r in regions], dtype=torch.float32)
    owner = assign_cells(boxes.view(-1, 4), grid, min_cover)
    return torch.tensor([*ids, BACKGROUND], dtype=torch.long)[owner]  # -1: the appended last


def cell_places(grid: tuple[int, int]) -> list[str]:
    """Each cell's place in a 3 x 3 layout of the image (``POSITIONS`` names), from the third
    its centre falls in: on a 7 x 7 grid columns 0-1 are "left", 2-4 the middle, 5-6 "right"."""
    boxes = cell_boxes(grid)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    thirds = (centres * 3).long().clamp(0, 2)
    return [POSITIONS[(int(col), int(row))] for col, row in thirds]


def words_of(text: str) -> list[str]:
    return text.lower().split()


def object_regions(regions: list[dict]) -> list[dict]:
    """The regions stage 0 grounds: objects, not rendered text (``"kind": "text"``, which a
    frozen encoder does not resolve; :mod:`mmllm.reading` trains on those)."""
    return [r for r in regions if r.get("kind") != "text"]


def regions_by_image(
    samples: list[Sample], select: Callable[[list[dict]], list[dict]]
) -> dict[Path, list[dict]]:
    """Each distinct image of the rows that carry regions -> ``select`` of its regions (the
    first row naming an image decides)."""
    found: dict[Path, list[dict]] = {}
    for sample in samples:
        for path, regions in zip(sample.images, sample.regions or [], strict=False):
            found.setdefault(path, select(regions))
    return found


@dataclass
class GroundingData(torch.utils.data.Dataset):
    """Cached encoder tokens ``features [N, T, C]`` (fp16) and each token's phrase ``labels
    [N, T]`` (index into ``phrases``; 0 is the background phrase)."""

    features: torch.Tensor
    labels: torch.Tensor
    phrases: list[str]

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[i], "labels": self.labels[i]}


def phrase_list(samples: list[Sample], background: str) -> list[str]:
    """The background phrase, then every distinct region text (lower case), in order seen.
    Train and eval sets share one list (it fixes the label indices and the word table)."""
    phrases = {" ".join(words_of(background)): None}
    for sample in samples:
        for regions in sample.regions or []:
            phrases.update({" ".join(words_of(r["text"])): None for r in object_regions(regions)})
    return list(phrases)


def build_grounding_data(
    model,
    samples: list[Sample],
    phrases: list[str],
    min_cover: float,
    batch_size: int = 32,
    progress: bool = True,
) -> GroundingData:
    """Encode every distinct image that has regions once (frozen encoder) and label its tokens
    with indices into ``phrases`` (:func:`phrase_list`)."""
    pairs = regions_by_image(samples, object_regions)
    if not pairs:
        raise MMLLMError(
            "stage 0 (grounding) needs rows with 'regions' (boxes and the words for them); "
            "`mmllm data make` writes them, see the README's data-format section"
        )
    index = {p: i for i, p in enumerate(phrases)}
    encoder = model.encoder
    grid = encoder.grid
    feats, labels = [], []
    paths = list(pairs)
    with torch.no_grad():
        for start in tqdm(
            range(0, len(paths), batch_size), desc="encoding images", disable=not progress
        ):
            chunk = paths[start : start + batch_size]
            pixels = to_pixels(chunk, model.config.image_size, encoder.mean, encoder.std)
            feats.append(encoder(pixels.to(model.device)).embeds.to("cpu", torch.float16))
            for path in chunk:
                regions = pairs[path]
                ids = [index[" ".join(words_of(r["text"]))] for r in regions]
                labels.append(cell_labels(regions, ids, grid, min_cover))
    return GroundingData(torch.cat(feats), torch.stack(labels), phrases)


class GroundingObjective(nn.Module):
    """The stage-0 loss around a model's adapter (the only trained part).

    ``labels [B, T]`` index ``phrases``; the targets are sums of the LLM's input embeddings of
    each phrase's words (a word's embedding: the mean over its sub-word tokens)."""

    def __init__(
        self,
        vlm,
        phrases: list[str],
        ce_weight: float,
        scale: float,
        background_weight: float,
        place_words: bool = False,
    ):
        super().__init__()
        object.__setattr__(self, "vlm", vlm)  # not a submodule: only the adapter trains
        self.adapter = vlm.adapter
        self.grid = tuple(vlm.encoder.grid)
        tokenizer = vlm.tokenizer
        table = vlm.llm.get_input_embeddings().weight.detach().float().cpu()
        words = sorted({w for p in phrases[BACKGROUND + 1 :] for w in words_of(p)})
        self.words = words

        def embed(word: str) -> torch.Tensor:
            return table[tokenizer.encode(word, add_special_tokens=False)].mean(0)

        self.places: list[str] = []
        if place_words:
            self._init_places(embed)

        word_emb = torch.stack([embed(w) for w in words]) if words else table[:0]
        targets = torch.stack([sum(embed(w) for w in words_of(p)) for p in phrases])
        soft = torch.zeros(len(phrases), len(words))
        for i, p in enumerate(phrases[BACKGROUND + 1 :], start=BACKGROUND + 1):
            for w in words_of(p):
                soft[i, words.index(w)] += 1 / len(words_of(p))
        self.register_buffer("targets", targets, persistent=False)
        self.register_buffer("soft", soft, persistent=False)
        self.register_buffer("centred", word_emb - word_emb.mean(0), persistent=False)
        self.ce_weight, self.scale, self.background_weight = ce_weight, scale, background_weight

    @property
    def encoder(self) -> nn.Module:
        return self.vlm.encoder

    def _init_places(self, embed) -> None:
        """Targets of each cell's place words: ``place_targets [T, D]`` (summed embeddings),
        ``place_soft [T, P]`` over the place vocabulary and its centred embeddings."""
        self.places = cell_places(self.grid)
        vocab = sorted({w for p in self.places for w in words_of(p)})
        self.place_vocab = vocab
        emb = torch.stack([embed(w) for w in vocab])
        soft = torch.zeros(len(self.places), len(vocab))
        for i, place in enumerate(self.places):
            for w in words_of(place):
                soft[i, vocab.index(w)] += 1 / len(words_of(place))
        targets = torch.stack([sum(embed(w) for w in words_of(p)) for p in self.places])
        self.register_buffer("place_targets", targets, persistent=False)
        self.register_buffer("place_soft", soft, persistent=False)
        self.register_buffer("place_centred", emb - emb.mean(0), persistent=False)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The adapter's output for full grids of cached features (with its cell embeddings,
        if it has them: token ``t`` of each row is cell ``t``)."""
        return self.adapter(VisualTokens(embeds=features.float(), grid=self.grid))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.project(features)
        obj = labels != BACKGROUND
        weight = torch.where(obj, 1.0, self.background_weight)
        target = self.targets[labels]
        if self.places:
            target = target + self.place_targets
        mse = ((out - target) ** 2).mean(-1)
        loss = (mse * weight).sum() / weight.sum()
        if obj.any() and self.ce_weight > 0:
            logits = out[obj] @ self.centred.T * self.scale
            ce = -(self.soft[labels[obj]] * logits.log_softmax(-1)).sum(-1).mean()
            loss = loss + self.ce_weight * ce
        if self.places and self.ce_weight > 0:
            logits = out @ self.place_centred.T * self.scale  # [B, T, P]: every cell
            ce = -(self.place_soft * logits.log_softmax(-1)).sum(-1).mean()
            loss = loss + self.ce_weight * ce
        return {"loss": loss}

    @torch.no_grad()
    def word_accuracy(self, data: GroundingData, batch_size: int = 1024) -> dict[str, float]:
        """Decoding the tokens back to words, on object tokens (background left out):
        ``word_P`` is how often, among the words found at position P of some phrase (e.g. all
        colours for P = 1), the token's own P-th word scores highest; with place words,
        ``place`` is how often (over every cell) the place whose word distribution is nearest to
        the token's (KL divergence, as the place cross-entropy trains it) is the cell's own."""
        logits, labels, place_hits = [], [], []
        if self.places:  # each cell's true place among the distinct places, and their targets
            names = sorted(set(self.places))
            truth = torch.tensor([names.index(p) for p in self.places], device=self.targets.device)
            soft = self.place_soft[[self.places.index(n) for n in names]]  # [places, P]
            entropy = (soft * soft.clamp_min(1e-12).log()).sum(-1)  # -H of each place
        for start in range(0, len(data), batch_size):
            lab = data.labels[start : start + batch_size].to(self.targets.device)
            out = self.project(data.features[start : start + batch_size].to(lab.device))
            logits.append(out[lab != BACKGROUND] @ self.centred.T)
            labels.append(lab[lab != BACKGROUND])
            if self.places:  # every cell: the place whose soft target is nearest (KL)
                logp = (out @ self.place_centred.T * self.scale).log_softmax(-1)
                scores = logp @ soft.T - entropy  # -KL(place || token), [B, T, places]
                place_hits.append((scores.argmax(-1) == truth).flatten().float())
        logits, labels = torch.cat(logits), torch.cat(labels)
        result: dict[str, float] = {"tokens": len(labels)}
        if place_hits:
            result["place"] = torch.cat(place_hits).mean().item()
        position = {}  # phrase index -> its words' indices, per position
        for i, phrase in enumerate(data.phrases[BACKGROUND + 1 :], start=BACKGROUND + 1):
            for pos, word in enumerate(words_of(phrase), start=1):
                position.setdefault(pos, {})[i] = self.words.index(word)
        for pos, of_phrase in sorted(position.items()):
            target = torch.full((len(data.phrases),), -1, dtype=torch.long)
            target[list(of_phrase)] = torch.tensor(list(of_phrase.values()))
            target = target.to(labels.device)[labels]
            rivals = torch.tensor(sorted(set(of_phrase.values())), device=labels.device)
            has = target >= 0
            best = rivals[logits[has][:, rivals].argmax(-1)]
            result[f"word_{pos}"] = (best == target[has]).float().mean().item()
        return result

    def save_pretrained(self, folder: str | Path) -> None:
        self.vlm.save_pretrained(folder)


def write_report(objective: GroundingObjective, data: GroundingData, folder: Path) -> dict:
    """Word accuracy of the grounded tokens on ``data``, saved as ``grounding.json``."""
    report = objective.word_accuracy(data)
    (folder / "grounding.json").write_text(json.dumps(report, indent=1))
    log.info("grounding word accuracy: %s", report)
    return report
