"""Where reduced visual tokens sit in the LLM: source positions and proportional attention.

A before-LLM reducer hands the LLM fewer tokens than the encoder made. Packed one after another
they lose two things the model knew at full tokens, and these two helpers give them back:

* **Source positions.** Each kept or merged token takes the rotary position of its source grid
  cell (``VisualTokens.index``) and the text after the image keeps the position it has at full
  tokens, as in-LLM pruning (FastV) keeps them by construction. The model then reads the layout
  exactly as in training instead of a compacted row.
* **Proportional attention** (ToMe, Bolya et al., ICLR 2023, arXiv:2210.09461, eq. 1): a token
  that stands for ``s`` source tokens gets ``log s`` added to every attention logit on it, so it
  weighs as much as its ``s`` members would if they were identical. ToMe applies it inside the
  ViT; here it is applied in the LLM's attention, to the merged visual tokens.

Both are exact no-ops at full tokens (index = arange, size = 1). They need an adapter that maps
each token on its own (the output count equals the reducer's) and are not applied by in-LLM
stages, which keep their own positions. Proportional attention runs as a registered attention
function (``mmllm_sdpa``: SDPA plus the per-key bias) so it also holds in ``generate``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch

ATTENTION = "mmllm_sdpa"
_KEY_BIAS: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar(
    "mmllm_key_bias", default=None
)


def source_positions(
    attention_mask: torch.Tensor, image_mask: torch.Tensor, index: torch.Tensor, n_source: int
) -> torch.Tensor:
    """Position ids ``[B, T]`` with every visual token at its source cell.

    ``image_mask [B, T]`` marks the visual tokens (``K`` per image, images in row-major order as
    ``masked_scatter`` fills them), ``index [I, K]`` their source cells out of ``n_source``.
    Each image spans ``n_source`` positions as at full tokens; padding gets position 0.
    """
    mask = attention_mask.long()
    gaps = torch.zeros_like(mask)
    before = torch.cat([index.new_full((len(index), 1), -1), index[:, :-1]], dim=1)
    gaps[image_mask] = (index - before - 1).flatten().to(gaps.dtype)
    # the token after an image's last visual token skips that image's unused tail
    last = image_mask & (image_mask.long().cumsum(1) % index.shape[1] == 0)
    tail = torch.zeros_like(mask)
    tail[last] = (n_source - 1 - index[:, -1]).to(tail.dtype)
    gaps[:, 1:] += tail[:, :-1]
    return ((mask + gaps) * mask).cumsum(-1).sub(1).clamp_min(0)


def size_bias(image_mask: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Per-key attention bias ``[B, T]``: ``log size`` on visual tokens, 0 elsewhere."""
    bias = torch.zeros(image_mask.shape, dtype=torch.float32, device=image_mask.device)
    bias[image_mask] = size.float().clamp_min(1).log().flatten()
    return bias


@contextlib.contextmanager
def key_bias(bias: torch.Tensor | None) -> Iterator[None]:
    """Add ``bias [B, T0]`` to the attention logits on the first ``T0`` keys inside the block
    (later keys, e.g. generated tokens, get 0). ``None`` is a no-op."""
    token = _KEY_BIAS.set(bias)
    try:
        yield
    finally:
        _KEY_BIAS.reset(token)


def _biased_sdpa(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bias = _KEY_BIAS.get()
    if bias is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    q_len, k_len = query.shape[-2], key.shape[-2]
    bias = bias[:, :k_len].to(query.dtype)
    if bias.shape[1] < k_len:
        bias = torch.nn.functional.pad(bias, (0, k_len - bias.shape[1]))
    bias = bias[:, None, None, :]
    lowest = torch.finfo(query.dtype).min
    if attention_mask is None:  # SDPA would have used is_causal: build that mask
        causal = torch.ones(q_len, k_len, dtype=torch.bool, device=query.device).tril(k_len - q_len)
        attention_mask = causal[None, None]
    if attention_mask.dtype == torch.bool:
        mask = torch.where(attention_mask, bias, lowest)
    else:
        mask = (attention_mask.to(query.dtype) + bias).clamp_min(lowest)
    kwargs.pop("is_causal", None)
    return sdpa_attention_forward(module, query, key, value, mask, is_causal=False, **kwargs)


def register_attention() -> None:
    """Register ``mmllm_sdpa`` (SDPA + per-key bias) with transformers; idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _biased_sdpa)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def use_biased_attention(llm) -> None:
    """Switch a causal LM (or its peft wrapper) to ``mmllm_sdpa``."""
    register_attention()
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    base.set_attn_implementation(ATTENTION)


@contextlib.contextmanager
def packed_layout(model) -> Iterator[None]:
    """Run ``model`` with reduced tokens packed and no size bias inside the block: the layout
    vLLM serves (its decoder assigns the positions), for local-vs-served comparisons."""
    config = model.config
    saved = config.visual_positions, config.proportional_attention
    config.visual_positions, config.proportional_attention = "compact", False
    try:
        yield
    finally:
        config.visual_positions, config.proportional_attention = saved
