"""The values that move between tokenizer, reducer and adapter.

``VisualTokens`` is the one container for visual tokens in mmllm: batch-first, with each token's
position in the source grid (``index``) and the number of source tokens it stands for (``size``),
so positions and proportional attention survive pruning and merging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from mmllm.errors import MissingSideInfoError

#: Optional side information a reducer may ask for, and which encoders provide it.
SIDE_INFO_PROVIDERS: dict[str, str] = {
    "cls": "HF ViT/CLIP encoders with a [CLS] token (mmllm.vision_tokenizers.HFVisionEncoder)",
    "attn_to_cls": (
        "HF ViT/CLIP encoders built with HFVisionEncoder(..., attn_to_cls=True) "
        "(EfficientNet and SigLIP have no [CLS] token: use a CLS-free score)"
    ),
    "keys": "HF ViT/CLIP/SigLIP encoders built with HFVisionEncoder(..., keys=True)",
    "embeds": "continuous encoders (HF vision models, EfficientNet-lite)",
    "ids": "discrete tokenizers (VQ, FSQ, LFQ, BSQ, ...)",
}

# Fields that carry one entry per token and must follow every gather.
_PER_TOKEN = ("embeds", "ids", "index", "size", "attn_to_cls", "keys")


@dataclass
class TextContext:
    """What a reducer may know about the instruction: the embeddings the LLM sees.

    ``embeds [B, T, D]`` are the LLM input embeddings of the text tokens (already projected into
    the same space as the adapted visual tokens when ``projected`` is true); ``mask [B, T]`` marks
    real (1) vs padding (0) positions. ``project`` (optional) maps visual features ``[B, N, Dv]``
    into the text embeddings' space -- the model's token-wise adapter -- so a reducer can compare
    visual tokens with the instruction the LLM will read.
    """

    embeds: Tensor
    mask: Tensor | None = None
    projected: bool = False
    project: Callable[[Tensor], Tensor] | None = None

    def visual_in_text_space(self, visual: Tensor, reducer: str, without: str) -> Tensor:
        """``visual [B, N, Dv]`` through ``project`` (if any), checked against the text's width;
        ``without`` names the reducer setting that does without text, for the error."""
        mapped = visual if self.project is None else self.project(visual)
        if self.embeds.shape[-1] != mapped.shape[-1]:
            raise MissingSideInfoError(
                f"reducer '{reducer}': text embeddings have width {self.embeds.shape[-1]} "
                f"but visual tokens {mapped.shape[-1]}; give a TextContext with a `project` "
                f"from visual features to the text space (or {without})"
            )
        return mapped

    def __post_init__(self) -> None:
        if self.embeds.dim() != 3:
            raise ValueError(
                f"TextContext.embeds must be [B, T, D], got {tuple(self.embeds.shape)}"
            )
        if self.mask is None:
            self.mask = torch.ones(
                self.embeds.shape[:2], dtype=torch.bool, device=self.embeds.device
            )


@dataclass
class VisualTokens:
    """A batch of visual tokens and what is known about them.

    Attributes:
        embeds: ``[B, N, D]`` continuous token features, or ``None`` for discrete-only tokens.
        ids: ``[B, N]`` discrete token ids, or ``None``.
        grid: ``(H, W)`` of the encoder's source token map (``H * W`` source tokens).
        index: ``[B, N]`` each token's flat position in the source grid (row-major).
            Defaults to ``arange(N)``.
        size: ``[B, N]`` how many source tokens each token stands for (1 before merging).
        cls: ``[B, D]`` the encoder's [CLS] feature, if it has one.
        attn_to_cls: ``[B, N]`` attention from [CLS] to each token (last layer, head mean).
        keys: ``[B, N, Dk]`` last-layer attention keys (ToMe's matching metric).
        source: name of the encoder that made them (used in error messages).
    """

    embeds: Tensor | None = None
    ids: Tensor | None = None
    grid: tuple[int, int] | None = None
    index: Tensor | None = None
    size: Tensor | None = None
    cls: Tensor | None = None
    attn_to_cls: Tensor | None = None
    keys: Tensor | None = None
    source: str = field(default="unknown encoder", compare=False)

    def __post_init__(self) -> None:
        main = self.embeds if self.embeds is not None else self.ids
        if main is None:
            raise ValueError("VisualTokens needs embeds [B, N, D] or ids [B, N]")
        if self.embeds is not None and self.embeds.dim() != 3:
            raise ValueError(f"embeds must be [B, N, D], got shape {tuple(self.embeds.shape)}")
        if self.ids is not None and self.ids.dim() != 2:
            raise ValueError(f"ids must be [B, N], got shape {tuple(self.ids.shape)}")
        b, n = main.shape[:2]
        if self.ids is not None and tuple(self.ids.shape) != (b, n):
            raise ValueError(f"ids {tuple(self.ids.shape)} and embeds {(b, n)} disagree on [B, N]")
        if self.grid is None:
            side = round(n**0.5)
            self.grid = (side, side) if side * side == n else (1, n)
        self.grid = (int(self.grid[0]), int(self.grid[1]))
        if self.index is None:
            self.index = torch.arange(n, device=main.device).expand(b, n)
        if self.size is None:
            dtype = self.embeds.dtype if self.embeds is not None else torch.float32
            self.size = torch.ones(b, n, device=main.device, dtype=dtype)
        for name in ("index", "size", "attn_to_cls"):
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != (b, n):
                raise ValueError(f"{name} must be [B, N] = {(b, n)}, got {tuple(value.shape)}")
        if self.keys is not None and tuple(self.keys.shape[:2]) != (b, n):
            raise ValueError(f"keys must be [B, N, Dk] with [B, N] = {(b, n)}")
        if self.cls is not None and (self.cls.dim() != 2 or self.cls.shape[0] != b):
            raise ValueError(f"cls must be [B, D] with B = {b}, got {tuple(self.cls.shape)}")

    # -- shape -------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.index.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.index.shape[1]

    @property
    def device(self) -> torch.device:
        return self.index.device

    @property
    def is_full_grid(self) -> bool:
        """True while the tokens are exactly the untouched source grid, in order."""
        h, w = self.grid
        return (
            self.num_tokens == h * w
            and bool((self.size == 1).all())
            and bool((self.index == torch.arange(h * w, device=self.device)).all())
        )

    # -- access ------------------------------------------------------------------------------
    def require(self, name: str, by: str) -> Tensor:
        """Return side-information field ``name``, or raise an error naming who provides it."""
        value = getattr(self, name)
        if value is None:
            provider = SIDE_INFO_PROVIDERS.get(name, "an encoder that provides it")
            raise MissingSideInfoError(
                f"{by} needs '{name}' but {self.source} did not provide it; "
                f"'{name}' comes from {provider}"
            )
        return value

    def replace(self, **changes) -> VisualTokens:
        """A copy with some fields replaced (tensors are shared, not copied)."""
        return dataclasses.replace(self, **changes)

    def gather(self, keep: Tensor) -> VisualTokens:
        """Keep tokens ``keep [B, K]`` (indices into the current N) in every per-token field."""
        if keep.dim() != 2 or keep.shape[0] != self.batch_size:
            raise ValueError(f"keep must be [B, K] with B = {self.batch_size}")
        from mmllm.kernels.ops import gather_rows  # row copies: faster than gather on CPU

        changes = {}
        for name in _PER_TOKEN:
            value = getattr(self, name)
            if value is None:
                continue
            if value.dim() == 3:
                changes[name] = gather_rows(value, keep)
            else:
                changes[name] = value.gather(1, keep)
        return self.replace(**changes)
