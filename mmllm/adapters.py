"""Adapters: visual tokens -> LLM input embeddings, selectable by name.

Each adapter maps :class:`VisualTokens` ``[B, N, D_vis]`` to ``[B, M, D_llm]`` and says ``M``
in advance (:meth:`Adapter.output_len`), so the processor can expand image placeholders before
any pixel is encoded.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmllm.errors import MMLLMError
from mmllm.reduction.types import VisualTokens

ADAPTERS: dict[str, type[Adapter]] = {}


def register_adapter(name: str):
    def wrap(cls):
        if name in ADAPTERS:
            raise ValueError(f"adapter '{name}' is already registered")
        cls.name = name
        ADAPTERS[name] = cls
        return cls

    return wrap


def build_adapter(name: str, vision_dim: int, llm_dim: int, **kwargs) -> Adapter:
    if name not in ADAPTERS:
        raise MMLLMError(f"unknown adapter '{name}'; known: {', '.join(sorted(ADAPTERS))}")
    return ADAPTERS[name](vision_dim, llm_dim, **kwargs)


class Adapter(nn.Module):
    name = ""

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return n_in

    def forward(self, tokens: VisualTokens) -> torch.Tensor:
        raise NotImplementedError

    def token_projector(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Features ``[B, N, Dv]`` -> LLM space ``[B, N, D]`` token by token, if this adapter maps
        each token on its own (text-conditioned reducers compare with the prompt there)."""
        return None

    def bind(self, encoder: nn.Module, llm: nn.Module) -> None:
        """Hook run once the model has its encoder and LLM (before any checkpoint weights load):
        adapters that depend on them check and initialise themselves here."""


def codebook_rows(codes: torch.Tensor, text_rows: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """New LLM vocabulary rows for ``K`` codebook vectors ``[K, d]``: ``mean + (z @ P) * std``.

    ``z`` are the standardised codes, ``P`` a fixed random projection (seeded) to the LLM width
    and ``mean`` / ``std`` the per-dimension statistics of the existing rows ``text_rows``. Codes
    that are close stay close, and the new rows have the scale of the old ones (rather than the
    random init that slows down new-vocabulary training).
    """
    text = text_rows.detach().float()
    z = codes.detach().float()
    z = (z - z.mean(0)) / z.std(0).clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed)
    proj = torch.randn(z.shape[1], text.shape[1], generator=gen) / z.shape[1] ** 0.5
    return (text.mean(0) + (z @ proj) * text.std(0)).to(text_rows.dtype)


@register_adapter("mlp2x_gelu")
class MLP2xGELU(Adapter):
    """LLaVA-1.5's projector: Linear -> GELU -> Linear (Liu et al., arXiv:2310.03744).

    ``positions=N`` (the encoder grid's token count, e.g. 49 for 7 x 7) adds a learned embedding
    of each token's source cell (``VisualTokens.index``) to the output, zero at the start, like a
    ViT's absolute position embeddings (a deviation from LLaVA-1.5, whose CLIP tokens already
    carry them): the projector maps each token on its own, so without it a token knows its place
    only as far as the encoder's features encode it (a CNN's barely do).
    """

    def __init__(self, vision_dim: int, llm_dim: int, positions: int = 0):
        super().__init__()
        if positions < 0:
            raise MMLLMError(f"mlp2x_gelu positions must be >= 0 (0: none), got {positions}")
        self.norm = nn.LayerNorm(vision_dim)
        self.net = nn.Sequential(
            nn.Linear(vision_dim, llm_dim), nn.GELU(), nn.Linear(llm_dim, llm_dim)
        )
        self.position = nn.Embedding(positions, llm_dim) if positions else None

    def bind(self, encoder: nn.Module, llm: nn.Module) -> None:
        if self.position is None:
            return
        h, w = encoder.grid
        if h * w != self.position.num_embeddings:
            raise MMLLMError(
                f"mlp2x_gelu has {self.position.num_embeddings} position embeddings but the "
                f"encoder gives a {h}x{w} grid: set adapter_kwargs.positions to {h * w}"
            )
        with torch.no_grad():
            self.position.weight.zero_()  # a fresh adapter starts as plain LLaVA-1.5

    def forward(self, tokens: VisualTokens) -> torch.Tensor:
        out = self.net(self.norm(tokens.embeds))
        if self.position is not None:
            cells = self.position.num_embeddings
            if tokens.grid[0] * tokens.grid[1] != cells:
                raise MMLLMError(
                    f"mlp2x_gelu has position embeddings for {cells} grid cells, but these "
                    f"tokens come from a {tokens.grid[0]}x{tokens.grid[1]} grid"
                )
            out = out + self.position(tokens.index).to(out.dtype)
        return out

    def token_projector(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return lambda embeds: self.net(self.norm(embeds))


@register_adapter("pixel_shuffle")
class PixelShuffle(Adapter):
    """Fold s x s neighbouring tokens into channels, then one Linear (SmolVLM / nanoVLM).

    Needs the full token grid (use it with reduction 'identity' or 'pool').
    """

    def __init__(self, vision_dim: int, llm_dim: int, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.norm = nn.LayerNorm(vision_dim * scale * scale)
        self.proj = nn.Linear(vision_dim * scale * scale, llm_dim)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        h, w = grid or (math.isqrt(n_in), math.isqrt(n_in))
        if h * w != n_in or h % self.scale or w % self.scale:
            raise MMLLMError(
                f"pixel_shuffle (scale {self.scale}) needs a full token grid divisible by "
                f"{self.scale}; got {n_in} tokens. Use reduction 'identity' or another adapter"
            )
        return n_in // (self.scale * self.scale)

    def forward(self, tokens: VisualTokens) -> torch.Tensor:
        b, n, d = tokens.embeds.shape
        h, w = tokens.grid if tokens.is_full_grid else (0, 0)
        self.output_len(n, (h, w) if h * w == n else None)
        s = self.scale
        x = tokens.embeds.view(b, h // s, s, w // s, s, d).permute(0, 1, 3, 2, 4, 5)
        return self.proj(self.norm(x.reshape(b, (h // s) * (w // s), s * s * d)))


@register_adapter("resampler")
class Resampler(Adapter):
    """A fixed number of learned queries cross-attending to all tokens (Perceiver / Q-Former).

    Merged tokens get ``log(size)`` added to their attention logits (ToMe's proportional
    attention), so a token standing for k source tokens weighs as much as those k would.
    """

    def __init__(self, vision_dim: int, llm_dim: int, num_queries: int = 32, heads: int = 8):
        super().__init__()
        self.num_queries = num_queries
        self.heads = heads
        self.queries = nn.Parameter(torch.randn(num_queries, llm_dim) * 0.02)
        self.kv = nn.Linear(vision_dim, 2 * llm_dim)
        self.q_norm, self.kv_norm = nn.LayerNorm(llm_dim), nn.LayerNorm(vision_dim)
        self.out = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, llm_dim))

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        return self.num_queries

    def forward(self, tokens: VisualTokens) -> torch.Tensor:
        b, n, _ = tokens.embeds.shape
        k, v = self.kv(self.kv_norm(tokens.embeds)).chunk(2, dim=-1)
        q = self.q_norm(self.queries).expand(b, -1, -1)

        def split(x):  # [B, T, D] -> [B, heads, T, D / heads]
            return x.view(b, x.shape[1], self.heads, -1).transpose(1, 2)

        bias = tokens.size.to(q.dtype).log().view(b, 1, 1, n)
        attended = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=bias)
        attended = attended.transpose(1, 2).reshape(b, self.num_queries, -1)
        return attended + self.out(attended)


@register_adapter("pool_swiglu")
class PoolSwiGLU(Adapter):
    """Adaptive pooling to t x t tokens + a SwiGLU projector (TokenFLEX, arXiv:2504.03154).

    In training, each batch pools to a random side from ``train_sides`` so one checkpoint serves
    several budgets; at inference it pools to ``side``. Tokens that are no longer a full grid
    (after pruning) pass through unpooled.
    """

    def __init__(self, vision_dim: int, llm_dim: int, side: int = 7, train_sides=(4, 5, 6, 7, 8)):
        super().__init__()
        self.side, self.train_sides = side, tuple(train_sides)
        hidden = 2 * llm_dim
        self.norm = nn.LayerNorm(vision_dim)
        self.gate, self.up = nn.Linear(vision_dim, hidden), nn.Linear(vision_dim, hidden)
        self.down = nn.Linear(hidden, llm_dim)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        if grid is None or grid[0] * grid[1] != n_in:
            return n_in
        return min(self.side, grid[0]) * min(self.side, grid[1])

    def forward(self, tokens: VisualTokens, side: int | None = None) -> torch.Tensor:
        """``side`` overrides the pooled side (training samples one per batch, see the collator)."""
        x = tokens.embeds
        if tokens.is_full_grid:
            b, _, d = x.shape
            h, w = tokens.grid
            side = side or self.side
            grid = x.transpose(1, 2).reshape(b, d, h, w)
            x = F.adaptive_avg_pool2d(grid, (min(side, h), min(side, w))).flatten(2).transpose(1, 2)
        x = self.norm(x)
        return self.down(F.silu(self.gate(x)) * self.up(x))


@register_adapter("vocab_rows")
class VocabRows(Adapter):
    """Discrete ids read as new LLM vocabulary rows (early fusion, as in Chameleon,
    arXiv:2405.09818, and Emu3, arXiv:2409.18869): one trainable embedding row per code.

    Needs a discrete tokenizer encoder (``tokenizer:/folder``); ``num_codes`` must equal its
    codebook size. Rows start from the projected codebook (:func:`codebook_rows`). After a
    merging reducer a token keeps its destination's id (the merge's representative).
    """

    def __init__(self, vision_dim: int, llm_dim: int, num_codes: int):
        super().__init__()
        if num_codes < 1:
            raise MMLLMError(f"vocab_rows needs num_codes >= 1, got {num_codes}")
        self.rows = nn.Embedding(num_codes, llm_dim)

    def bind(self, encoder: nn.Module, llm: nn.Module) -> None:
        quantizer = getattr(getattr(encoder, "tokenizer", None), "quantizer", None)
        if quantizer is None:
            raise MMLLMError(
                "adapter 'vocab_rows' reads discrete ids: use a discrete tokenizer encoder "
                "(encoder: tokenizer:/path/to/tokenizer)"
            )
        if quantizer.codebook_size != self.rows.num_embeddings:
            raise MMLLMError(
                f"vocab_rows has {self.rows.num_embeddings} rows but the tokenizer has "
                f"{quantizer.codebook_size} codes: set adapter_kwargs.num_codes to "
                f"{quantizer.codebook_size}"
            )
        codes = quantizer.ids_to_codes(torch.arange(quantizer.codebook_size))
        with torch.no_grad():
            self.rows.weight.copy_(codebook_rows(codes, llm.get_input_embeddings().weight))

    def forward(self, tokens: VisualTokens) -> torch.Tensor:
        ids = tokens.require("ids", "adapter 'vocab_rows'")
        if ids.min() < 0 or ids.max() >= self.rows.num_embeddings:
            raise MMLLMError(
                f"ids out of range 0..{self.rows.num_embeddings - 1}: got {int(ids.min())}.."
                f"{int(ids.max())}"
            )
        return self.rows(ids)
