"""Reduction inside the LLM: drop visual tokens after chosen decoder layers (FastV, PyramidDrop,
ToDRE), with SDPA attention and without materialising any attention matrix.

Only the row a method needs is computed: the last prompt token's attention to every position at
the drop layer (``[B, heads, 1, T]``), from that layer's own query/key projections and rotary
embedding. Prefill and greedy decoding run the HF decoder layers themselves (never rewritten);
after a drop, later layers see and cache only the kept positions, with their original position
ids. Supported: Llama-style decoders (Llama, SmolLM, Qwen2, Mistral).

These reducers leave the visual tokens entering the LLM unchanged (``output_len(n) == n``, so
they chain after before-LLM stages); :meth:`InLLMReducer.schedule` gives the per-layer counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from mmllm.errors import BudgetError, MMLLMError
from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.registry import Chain, register
from mmllm.reduction.types import TextContext, VisualTokens


class InLLMReducer(BaseReducer):
    """Base of in-LLM reducers: identity before the LLM, a drop schedule inside it."""

    in_llm: ClassVar[bool] = True

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        self.schedule(n_in)  # validates the budgets
        return n_in

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        return tokens

    def schedule(self, n_visual: int) -> list[tuple[int, int]]:
        """``[(layer, keep), ...]``: after decoder layer ``layer``, keep ``keep`` visual tokens."""
        raise NotImplementedError


def split_in_llm(reducer: BaseReducer) -> tuple[BaseReducer | None, InLLMReducer | None]:
    """(before-LLM part, in-LLM part) of a reducer or chain; in-LLM stages must come last."""
    stages = reducer.stages if isinstance(reducer, Chain) else [reducer]
    inside = [s for s in stages if isinstance(s, InLLMReducer)]
    if len(inside) > 1 or (inside and stages[-1] is not inside[0]):
        raise MMLLMError("one in-LLM stage (fastv, pdrop, todre) at most, at the end of the chain")
    return reducer, (inside[0] if inside else None)


@register("fastv")
@dataclass
class FastV(InLLMReducer):
    """After decoder layer L, keep the K visual tokens the last token attends to most."""

    layer: int = field(default=2, metadata={"help": "decoder layer after which to drop (0-based)"})
    keep: int = field(default=64, metadata={"help": "visual tokens kept for the later layers"})
    paper: ClassVar[str] = "FastV (Chen et al., ECCV 2024, arXiv:2403.06764)"
    example: ClassVar[str] = "fastv:layer=2,keep=16"

    def schedule(self, n_visual: int) -> list[tuple[int, int]]:
        return [(self.layer, check_budget(self.spec, self.keep, n_visual))]


def _floats(raw: str) -> tuple[float, ...]:
    return tuple(float(x) for x in raw.split("/"))


def _ints(raw: str) -> tuple[int, ...]:
    return tuple(int(x) for x in raw.split("/"))


@register("pdrop")
@dataclass
class PyramidDrop(InLLMReducer):
    """Drop at several layers with decreasing keep ratios (of the visual tokens entering)."""

    layers: tuple[int, ...] = field(
        default=(8, 16, 24),
        metadata={
            "help": "drop layers, e.g. 8/16/24",
            "parse": _ints,
            "type": "L1/L2/...",
            "format": lambda v: "/".join(map(str, v)),
        },
    )
    ratios: tuple[float, ...] = field(
        default=(0.5, 0.25, 0.125),
        metadata={
            "help": "keep ratios, e.g. 0.5/0.25/0.125",
            "parse": _floats,
            "type": "r1/r2/...",
            "format": lambda v: "/".join(map(str, v)),
        },
    )
    paper: ClassVar[str] = "PyramidDrop (Xing et al., CVPR 2025, arXiv:2410.17247)"
    example: ClassVar[str] = "pdrop:layers=8/16/24,ratios=0.5/0.25/0.125"

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.ratios) or not self.layers:
            raise ValueError("layers and ratios need the same, non-zero, number of entries")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError("layers must be increasing")
        if any(not 0 < r <= 1 for r in self.ratios) or list(self.ratios) != sorted(
            self.ratios, reverse=True
        ):
            raise ValueError("ratios must be in (0, 1] and non-increasing")

    def schedule(self, n_visual: int) -> list[tuple[int, int]]:
        return [
            (layer, max(1, round(r * n_visual)))
            for layer, r in zip(self.layers, self.ratios, strict=True)
        ]


@register("todre")
@dataclass
class ToDRE(InLLMReducer):
    """K diverse tokens before the LLM (k-center), all visual tokens removed after layer L."""

    k: int = field(metadata={"help": "tokens kept by diversity before the LLM"})
    layer: int = field(default=2, metadata={"help": "layer after which visual tokens are removed"})
    paper: ClassVar[str] = "ToDRE (arXiv:2505.18757)"
    example: ClassVar[str] = "todre:16,layer=2"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        return tokens.gather(divprune_select(tokens.embeds, self.k))

    def schedule(self, n_visual: int) -> list[tuple[int, int]]:
        return [(self.layer, 0)]


# -- the decoder runner ------------------------------------------------------------------------


def _decoder(lm: nn.Module) -> nn.Module:
    decoder = lm.get_decoder()
    layer = decoder.layers[0] if hasattr(decoder, "layers") else None
    attn = getattr(layer, "self_attn", None)
    if (
        attn is None
        or not all(hasattr(attn, a) for a in ("q_proj", "k_proj", "head_dim"))
        or hasattr(attn, "q_norm")
    ):
        raise MMLLMError(
            f"in-LLM reduction supports Llama-style decoders (Llama, SmolLM, Qwen2, Mistral); "
            f"{type(lm).__name__} is not one. Use a before-LLM reducer instead"
        )
    return decoder


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def last_token_attention(
    layer: nn.Module, hidden: torch.Tensor, position_embeddings, mask: torch.Tensor
) -> torch.Tensor:
    """Head-mean attention of the last position to every position at ``layer``: ``[B, T]``."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

    attn = layer.self_attn
    b, t, _ = hidden.shape
    h = layer.input_layernorm(hidden)
    q = attn.q_proj(h[:, -1:]).view(b, 1, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, t, -1, attn.head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    q = apply_rotary_pos_emb(q, q, cos[:, -1:], sin[:, -1:])[0]
    k = apply_rotary_pos_emb(k, k, cos, sin)[0]
    k = repeat_kv(k, attn.num_key_value_groups)
    from mmllm.kernels.ops import query_attention  # one query row, never T x T

    return query_attention(q.squeeze(2), k, attn.scaling, mask[:, 0, -1, :])


class DropRunner:
    """Prefill with visual-token drops, then greedy decoding over the per-layer caches."""

    def __init__(self, lm: nn.Module, schedule: list[tuple[int, int]]):
        from transformers import DynamicCache

        self.lm, self.decoder = lm, _decoder(lm)
        n_layers = len(self.decoder.layers)
        for layer, _ in schedule:
            if not 0 <= layer < n_layers:
                raise BudgetError(f"drop layer {layer} is outside the LLM's {n_layers} layers")
        self.drops = dict(schedule)
        self.cache = DynamicCache(config=self.decoder.config)
        self.kept: list[torch.Tensor] = []  # per layer: positions (of the prompt) in its cache

    @torch.no_grad()
    def prefill(
        self, embeds: torch.Tensor, attention_mask: torch.Tensor, visual: torch.Tensor
    ) -> torch.Tensor:
        """Run the prompt; returns last-position logits ``[B, V]``."""
        b, t, _ = embeds.shape
        valid = attention_mask.bool()
        self.valid = valid
        self.positions = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
        keep = torch.arange(t, device=embeds.device).expand(b, t)
        hidden = embeds
        for i, layer in enumerate(self.decoder.layers):
            pos = self.positions.gather(1, keep)
            pe = self.decoder.rotary_emb(hidden, pos)
            allowed = (keep.unsqueeze(2) >= keep.unsqueeze(1)) & valid.gather(1, keep).unsqueeze(1)
            mask = _additive(allowed.unsqueeze(1), hidden.dtype)
            self.kept.append(keep)
            if i in self.drops:
                scores = last_token_attention(layer, hidden, pe, mask)
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=pe,
                position_ids=pos,
                past_key_values=self.cache,
                use_cache=True,
            )
            if i in self.drops:
                keep, hidden, visual = self._drop(scores, keep, hidden, visual, self.drops[i])
        return self.lm.get_output_embeddings()(self.decoder.norm(hidden[:, -1]))

    def _drop(self, scores, keep, hidden, visual, n_keep):
        b, t = visual.shape
        n_visual = visual.sum(1)
        if not bool((n_visual == n_visual[0]).all()):
            raise MMLLMError("in-LLM reduction needs the same number of visual tokens in every row")
        n_vis = int(n_visual[0])
        if n_keep > n_vis:
            raise BudgetError(f"in-LLM stage keeps {n_keep} of only {n_vis} visual tokens")
        vis_scores = scores.masked_fill(~visual, float("-inf"))
        top = vis_scores.topk(n_keep, dim=1).indices if n_keep else keep.new_zeros(b, 0)
        selected = ~visual
        selected.scatter_(1, top, True)
        order = torch.arange(t, device=keep.device).expand(b, t)
        rank = torch.where(selected, order, t + order).argsort(dim=1)[:, : t - n_vis + n_keep]
        rank = rank.sort(dim=1).values
        return (
            keep.gather(1, rank),
            hidden.gather(1, rank.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])),
            visual.gather(1, rank),
        )

    @torch.no_grad()
    def step(self, embeds: torch.Tensor, n_done: int) -> torch.Tensor:
        """One decoding step for new token embeddings ``[B, 1, D]``; returns logits ``[B, V]``."""
        b = embeds.shape[0]
        pos = self.positions[:, -1:] + 1 + n_done
        pe = self.decoder.rotary_emb(embeds, pos)
        hidden = embeds
        ones = torch.ones(b, n_done + 1, dtype=torch.bool, device=embeds.device)
        for i, layer in enumerate(self.decoder.layers):
            allowed = torch.cat([self.valid.gather(1, self.kept[i]), ones], dim=1)
            mask = _additive(allowed[:, None, None, :], hidden.dtype)
            hidden = layer(
                hidden,
                attention_mask=mask,
                position_embeddings=pe,
                position_ids=pos,
                past_key_values=self.cache,
                use_cache=True,
            )
        return self.lm.get_output_embeddings()(self.decoder.norm(hidden[:, -1]))


@torch.no_grad()
def generate_with_drops(
    lm: nn.Module,
    embed_tokens: nn.Module,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    visual: torch.Tensor,
    schedule: list[tuple[int, int]],
    max_new_tokens: int,
    eos_token_id: int | None,
) -> torch.Tensor:
    """Greedy decoding with the drop schedule; returns new token ids ``[B, <= max_new_tokens]``."""
    runner = DropRunner(lm, schedule)
    logits = runner.prefill(embeds, attention_mask, visual)
    out, done = [], torch.zeros(embeds.shape[0], dtype=torch.bool, device=embeds.device)
    for n in range(max_new_tokens):
        token = logits.argmax(-1)
        if eos_token_id is not None:
            token = torch.where(done, torch.full_like(token, eos_token_id), token)
            done |= token == eos_token_id
        out.append(token)
        if bool(done.all()) or n == max_new_tokens - 1:
            break
        logits = runner.step(embed_tokens(token).unsqueeze(1), n)
    return torch.stack(out, dim=1)
