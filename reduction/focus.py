"""Focus: keep the K tokens that cover the image *and* the question (mmllm's own method).

Pruning beats merging on a model whose visual tokens are grounded in words (the shipped default:
each token reads like "red circle, top left"; a mean of several such tokens names nothing, see
``docs/reduction.md``). Among pruners, DivPrune's greedy max-min (arXiv:2503.02175) covers the
image but ignores the question; CDPruner's DPP (arXiv:2506.10967) weighs the question in, but its
relevance is the mean similarity to *every* text token, so the chat template's tokens drown the
few words that matter ("magenta", "circle"). ``focus:K`` keeps whole tokens and picks them by a
relevance-weighted k-center:

1. distance ``d(i, j) = 1 - cos(x_i, x_j) + spatial * |p_i - p_j|`` on the encoder features and
   the grid position ``p`` scaled to [0, 1] (the SLIC distance ``coverage`` uses);
2. relevance ``r_i``: the visual tokens mapped into the LLM's embedding space by the model's
   adapter (``TextContext.project``) are compared (cosine) with every text token; each text
   token's similarities are centred over the image's tokens, and ``r_i = relu(max_t centred_ti -
   floor)``: a text token counts for a cell only if it is more than ``floor`` closer to it than
   to the image's average cell. Words that name what a cell shows ("teal", "circle") single out
   their cells by 0.2-0.5 on the default model; template and function tokens ("<|im_start|>",
   "the", "a") by 0.05-0.15, so ``floor=0.1`` keeps most of them out and a question that names
   nothing ("Write a short caption.") leaves the selection close to DivPrune's;
3. greedy selection: each token maximises ``min_dist_i * (1 + alpha * r_i)``, its distance to
   the chosen set (for the first pick: to its nearest neighbour) weighted up by relevance; a
   duplicate of a chosen token has distance 0 and is never worth taking, however relevant.

``distinct=G`` (default 1; 0 turns it off) replaces the 1 in step 3's weight by
``(u_i / max_j u_j) ** G``, where ``u_i`` is the token's mean distance to the image's tokens: a
CLS-free salience (the ``mean_sim`` score of ``importance``) under which cells that look like many
others, the background, count less, so a small budget goes to objects before a second background
cell. It is added to the relevance term, not multiplied with it: a cell the question names keeps
its weight even when it shows a small object and is mostly background. On the default shipped
before stages 37-38 it raised validation accuracy at 5 and 3 tokens and matched or beat
``distinct=0`` at every budget of the reduction benchmark; on the current default it is ahead at
25% and 11.1% and behind at 5.6% (``docs/reduction.md``). Recipes written before it was the
default pin ``distinct=0`` so their in-the-loop budgets keep their meaning.

``cover=c`` (default 0: off) makes the relevance term a coverage of the question's words: a
word a chosen token already shows stops pulling further tokens its way (by ``c`` times the
largest relevance it has among the chosen), so the budget goes to a second named object before
a second cell of the first. On the default model at 3 tokens, where a relation question's two
objects often did not both survive, it keeps both more often (relation 72 -> 82-85% on
validation) but gives back about half of that on tasks that read one object from several
cells; overall within noise, so it is an option, not the default (``docs/reduction.md``).

``space=llm`` measures step 1's feature distance on the adapter's output instead (an ablation:
worse on the default model, see ``docs/reduction.md``).

With ``distinct=0`` and without text, with ``alpha=0``, or when no text token clears the floor,
the gain is the plain max-min distance, so the selection is exactly DivPrune's. A vLLM server
encodes images apart from the prompt, so it refuses ``focus`` (it reads the text); serve
``divprune:K``, which is ``focus:K,distinct=0`` without a question. Kept tokens return in source
order. The K greedy steps are sequential; each is one vectorised update over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.errors import MissingSideInfoError
from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.divprune import cosine_distance
from mmllm.reduction.kmeans import grid_positions
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


def focus_distance(embeds: torch.Tensor, pos: torch.Tensor, spatial: float) -> torch.Tensor:
    """``1 - cos + spatial * |p_i - p_j|`` for ``embeds [B, N, D]`` -> ``[B, N, N]`` (float32)."""
    dist = cosine_distance(embeds)
    if spatial > 0:
        dist = dist + spatial * torch.cdist(pos, pos)
    return dist


def word_relevance(visual: torch.Tensor, text: TextContext, floor: float) -> torch.Tensor:
    """How far each text token singles out each visual token: ``relu(centred_sim - floor)``.

    ``visual [B, N, D]`` must already be in the text embeddings' space; returns ``[B, N, T]``
    (masked text positions 0). Centring each text token's similarities over the image's tokens
    removes what a token shares with every cell (template tokens), so only words that single out
    some cells count.
    """
    v = F.normalize(visual.float(), dim=-1)
    t = F.normalize(text.embeds.float(), dim=-1)
    sim = v @ t.transpose(1, 2)  # [B, N, T]
    centred = sim - sim.mean(dim=1, keepdim=True)
    relevance = (centred - floor).clamp_min(0.0)
    return relevance.masked_fill(~text.mask.bool().unsqueeze(1), 0.0)


def distinctness(dist: torch.Tensor) -> torch.Tensor:
    """Each token's mean distance to the image's tokens, scaled by the image's largest: ``[B, N]``.

    Background cells resemble most others and score low; a lone object scores near 1.
    """
    mean = dist.mean(dim=2)
    return mean / mean.amax(dim=1, keepdim=True).clamp_min(1e-12)


def weighted_max_min(
    dist: torch.Tensor,
    weight: torch.Tensor | None,
    k: int,
    words: torch.Tensor | None = None,
    cover: float = 0.0,
) -> torch.Tensor:
    """Greedy k-center with gains ``min_dist * weight``: ``dist [B, N, N]`` -> sorted ``[B, K]``.

    Before the first pick a token's ``min_dist`` is its distance to its nearest neighbour, so with
    ``weight`` None (all ones) the first pick is DivPrune's, the most isolated token.

    ``words [B, N, T]`` (already scaled by alpha) makes the relevance part of the weight a
    coverage of the question's words: a token's weight is ``weight + max_t relu(words_it -
    cover * covered_t)``, with ``covered_t`` the largest ``words_jt`` among the chosen tokens. A
    word already shown by a chosen token stops pulling further tokens its way (``cover=1``), so a
    second named object wins over a second cell of the first.
    """
    b, n, _ = dist.shape
    rows = torch.arange(b, device=dist.device)
    if weight is None:
        weight = torch.ones(b, n, device=dist.device)
    base = weight
    if words is not None:
        weight = base + words.amax(dim=2)
    eye = torch.eye(n, dtype=torch.bool, device=dist.device)
    first = (dist.masked_fill(eye, float("inf")).amin(dim=2) * weight).argmax(dim=1)
    chosen = torch.empty(b, k, dtype=torch.long, device=dist.device)
    chosen[:, 0] = first
    min_dist = dist[rows, first].clone()
    min_dist[rows, first] = -1.0
    covered = None if words is None or cover == 0 else words[rows, first]  # [B, T]
    for step in range(1, k):
        if covered is not None:
            weight = base + (words - cover * covered.unsqueeze(1)).clamp_min(0.0).amax(dim=2)
        gain = torch.where(min_dist < 0, -1.0, min_dist * weight)
        nxt = gain.argmax(dim=1)
        chosen[:, step] = nxt
        min_dist = torch.minimum(min_dist, dist[rows, nxt])
        min_dist[rows, nxt] = -1.0
        if covered is not None:
            covered = torch.maximum(covered, words[rows, nxt])
    return chosen.sort(dim=1).values


@register("focus")
@dataclass
class Focus(BaseReducer):
    """Keep K whole tokens: relevance-to-the-question-weighted k-center (mmllm's own method)."""

    k: int = field(metadata={"help": "tokens to keep"})
    alpha: float = field(
        default=10.0, metadata={"help": "relevance weight on the max-min gain (0 = DivPrune)"}
    )
    spatial: float = field(
        default=0.0, metadata={"help": "weight of grid distance vs feature distance"}
    )
    floor: float = field(
        default=0.1,
        metadata={"help": "centred cosine a text token must exceed to count as relevant"},
    )
    distinct: float = field(
        default=1.0,
        metadata={"help": "exponent on each token's scaled mean distance to the rest (0 = off)"},
    )
    cover: float = field(
        default=0.0,
        metadata={"help": "how far a word a kept token already shows stops counting (0 = off)"},
    )
    space: str = field(
        default="encoder",
        metadata={"help": "where distances are measured: encoder features or llm (adapter output)"},
    )
    paper: ClassVar[str] = "mmllm (question-weighted k-center; recommended default)"
    example: ClassVar[str] = "focus:12"
    needs: ClassVar[tuple[str, ...]] = ("embeds",)
    uses_text: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if min(self.alpha, self.spatial, self.distinct, self.cover) < 0:
            raise ValueError(
                "alpha, spatial, distinct and cover must be >= 0, got "
                f"{self.alpha}, {self.spatial}, {self.distinct}, {self.cover}"
            )
        if self.space not in ("encoder", "llm"):
            raise ValueError(f"space must be 'encoder' or 'llm', got {self.space!r}")

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        if self.k == tokens.num_tokens:
            return tokens
        relevant = text is not None and self.alpha > 0
        if self.space == "llm" and text is None:
            raise MissingSideInfoError(
                f"reducer '{self.spec}': space=llm measures distances on the adapter's output, "
                "which only a model's TextContext (its `project`) gives; use space=encoder"
            )
        visual = None
        if relevant or self.space == "llm":  # the adapter's output, once for both uses
            visual = text.visual_in_text_space(tokens.embeds, self.spec, "alpha=0, space=encoder")
        features = visual if self.space == "llm" else tokens.embeds
        dist = focus_distance(features, grid_positions(tokens), self.spatial)
        weight = None
        if self.distinct > 0:  # the base gain: background cells count less
            weight = distinctness(dist) ** self.distinct
        words = self.alpha * word_relevance(visual, text, self.floor) if relevant else None
        return tokens.gather(weighted_max_min(dist, weight, self.k, words, self.cover))
