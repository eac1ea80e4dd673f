"""The baselines every reduction paper must beat: keep all, keep a random subset, pool the grid."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from mmllm.errors import BudgetError
from mmllm.reduction.base import BaseReducer, check_budget
from mmllm.reduction.registry import register
from mmllm.reduction.types import TextContext, VisualTokens


@register("identity")
@dataclass
class Identity(BaseReducer):
    """Keep every token (the full-token reference)."""

    paper: ClassVar[str] = "-"
    example: ClassVar[str] = "identity"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return n_in

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        return tokens


@register("random")
@dataclass
class RandomPrune(BaseReducer):
    """Keep K tokens chosen uniformly at random (seeded), in their original order."""

    k: int = field(metadata={"help": "tokens to keep"})
    seed: int = field(default=0, metadata={"help": "seed; same seed, same choice"})
    paper: ClassVar[str] = "baseline (random pruning)"
    example: ClassVar[str] = "random:64"

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return check_budget(self.spec, self.k, n_in)

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        gen = torch.Generator().manual_seed(self.seed)
        scores = torch.rand(tokens.batch_size, tokens.num_tokens, generator=gen)
        keep = scores.topk(self.k, dim=1).indices.sort(dim=1).values
        return tokens.gather(keep.to(tokens.device))


def _parse_window(raw: str) -> tuple[int, int]:
    parts = raw.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError("expected a window like 2x2 or 3x3")
    return int(parts[0]), int(parts[1])


@register("pool")
@dataclass
class GridPool(BaseReducer):
    """Average-pool the token grid in SxS windows (LLaVA-OneVision / Qwen2-VL style downsampling).

    Edge windows of a grid that S does not divide are averaged over the tokens they cover
    (ceil mode); ``size`` counts them, and ``index`` points at each window's centre token.
    Side information follows: ``attn_to_cls`` is summed (attention mass), ``keys`` averaged.
    Works only on the untouched source grid, so it must be the first stage of a chain.
    """

    window: tuple[int, int] = field(
        default=(2, 2),
        metadata={
            "help": "window SxS (e.g. 2x2)",
            "parse": _parse_window,
            "format": lambda w: f"{w[0]}x{w[1]}",
            "type": "SxS",
        },
    )
    paper: ClassVar[str] = "baseline (LLaVA-OneVision 2x2 pooling; Qwen2-VL merger)"
    example: ClassVar[str] = "pool:2x2"

    def __post_init__(self) -> None:
        if isinstance(self.window, int):
            self.window = (self.window, self.window)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        h, w = self._grid(n_in, grid)
        sh, sw = self.window
        if sh > h or sw > w:
            raise BudgetError(f"{self.spec}: window larger than the {h}x{w} token grid")
        return math.ceil(h / sh) * math.ceil(w / sw)

    def _grid(self, n_in: int, grid: tuple[int, int] | None) -> tuple[int, int]:
        if grid is not None:
            return grid
        side = math.isqrt(n_in)
        if side * side != n_in:
            raise BudgetError(
                f"{self.spec}: needs the full token grid, got {n_in} tokens that form none; "
                "put pool first in a chain"
            )
        return side, side

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        if not tokens.is_full_grid:
            raise BudgetError(f"{self.spec}: needs the full token grid; put pool first in a chain")
        h, w = tokens.grid
        b = tokens.batch_size

        def pool_sum(x):  # [B, N, C] -> [B, M, C]
            grid = x.transpose(1, 2).reshape(b, x.shape[-1], h, w)
            s = F.avg_pool2d(grid, self.window, ceil_mode=True, divisor_override=1)
            return s.flatten(2).transpose(1, 2)

        size = pool_sum(tokens.size.unsqueeze(-1)).squeeze(-1)
        out = {"size": size}
        if tokens.embeds is not None:
            out["embeds"] = pool_sum(tokens.embeds) / size.unsqueeze(-1)
        if tokens.keys is not None:
            out["keys"] = pool_sum(tokens.keys) / size.unsqueeze(-1).to(tokens.keys.dtype)
        if tokens.attn_to_cls is not None:
            out["attn_to_cls"] = pool_sum(tokens.attn_to_cls.unsqueeze(-1)).squeeze(-1)
        out["index"] = self._centres(h, w, tokens.device).expand(b, -1)
        out["ids"] = None
        if tokens.ids is not None:  # ids cannot be averaged: keep the centre token's id
            out["ids"] = tokens.ids.gather(1, out["index"])
        return tokens.replace(**out)

    def _centres(self, h: int, w: int, device: torch.device) -> torch.Tensor:
        sh, sw = self.window
        rows = torch.clamp(torch.arange(0, h, sh, device=device) + (sh - 1) // 2, max=h - 1)
        cols = torch.clamp(torch.arange(0, w, sw, device=device) + (sw - 1) // 2, max=w - 1)
        return (rows[:, None] * w + cols[None, :]).flatten().unsqueeze(0)
