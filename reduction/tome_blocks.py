"""ToMe inside a Hugging Face vision transformer: merge r tokens in every block, as in the paper.

Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023 (arXiv:2210.09461), Sec. 3: in each
block, between attention and MLP, the r most similar token pairs (bipartite soft matching on the
block's attention keys, averaged over heads) are merged by a size-weighted mean; attention uses
*proportional attention*, ``softmax(QK^T / sqrt(d) + log s)`` with ``s`` each key's size, so a
merged token counts as many times as the tokens it stands for. Prefix tokens ([CLS]) are never
merged.

Works on the CLIP / SigLIP block layout of transformers (``layer_norm1``, ``self_attn``,
``layer_norm2``, ``mlp``) with eager or SDPA attention: the size bias goes in as the additive
attention mask, so no attention matrix is materialised beyond what the backend does anyway. The
layers are wrapped, not rewritten: each wrapper calls the layer's own submodules.

Deviations: the merged tokens are kept in source order (as ``reduction.tome``); r is a count per
block, reduced to ``n // 2`` when fewer tokens remain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mmllm.errors import MMLLMError
from mmllm.kernels.ops import bipartite_merge
from mmllm.reduction.types import VisualTokens

_BLOCK_PARTS = ("layer_norm1", "self_attn", "layer_norm2", "mlp")


@dataclass
class ToMeState:
    """Per-forward bookkeeping shared by the wrapped blocks of one encoder."""

    r: int
    prefix: int
    num_heads: int
    prop_attn: bool = True
    size: torch.Tensor | None = None  # [B, N] patch tokens only
    index: torch.Tensor | None = None
    keys: torch.Tensor | None = field(default=None, repr=False)

    def reset(self) -> None:
        self.size = self.index = self.keys = None

    def output_len(self, n: int, depth: int) -> int:
        """Patch tokens left after ``depth`` blocks starting from ``n``."""
        for _ in range(depth):
            n -= min(self.r, n // 2)
        return n


class ToMeBlock(nn.Module):
    """One transformer block with ToMe's merge between attention and MLP."""

    def __init__(self, layer: nn.Module, state: ToMeState):
        super().__init__()
        missing = [p for p in _BLOCK_PARTS if not hasattr(layer, p)]
        if missing:
            raise MMLLMError(
                f"ToMe blocks support the CLIP/SigLIP layer layout; {type(layer).__name__} lacks "
                f"{', '.join(missing)}. Use the 'tome' reducer after the encoder instead"
            )
        self.layer = layer
        self.state = state
        layer.self_attn.k_proj.register_forward_hook(self._store_keys)

    def _store_keys(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self.state.keys = output

    def forward(self, hidden_states: torch.Tensor, attention_mask=None, **kwargs) -> torch.Tensor:
        st, layer = self.state, self.layer
        b, t, _ = hidden_states.shape
        n = t - st.prefix
        if st.size is None:
            st.size = hidden_states.new_ones(b, n)
            st.index = torch.arange(n, device=hidden_states.device).expand(b, n)
        mask = attention_mask
        if st.prop_attn:
            full = torch.cat([st.size.new_ones(b, st.prefix), st.size], dim=1)
            bias = full.log().to(hidden_states.dtype)[:, None, None, :]
            mask = bias if mask is None else mask + bias
        residual = hidden_states
        attn, _ = layer.self_attn(
            hidden_states=layer.layer_norm1(hidden_states), attention_mask=mask, **kwargs
        )
        hidden_states = residual + attn
        r = min(st.r, n // 2)
        if r > 0:
            keys = st.keys.view(b, t, st.num_heads, -1).mean(2)[:, st.prefix :]
            patches = VisualTokens(
                embeds=hidden_states[:, st.prefix :], size=st.size, index=st.index, grid=(1, n)
            )
            merged = bipartite_merge(patches, r, keys)
            st.size, st.index = merged.size, merged.index
            hidden_states = torch.cat([hidden_states[:, : st.prefix], merged.embeds], dim=1)
        st.keys = None
        return hidden_states + layer.mlp(layer.layer_norm2(hidden_states))


def apply_tome(encoder, r: int, prop_attn: bool = True) -> ToMeState:
    """Make ``encoder`` (an :class:`HFVisionEncoder`) merge ``r`` tokens in every block.

    Returns the shared state; ``encoder.num_tokens`` then gives the reduced count, and the
    encoder's tokens carry ``size`` (for proportional attention downstream) and ``index``.
    """
    from mmllm.vision_tokenizers.encoders.hf import _encoder_layers

    if r < 0:
        raise MMLLMError(f"ToMe r must be >= 0, got {r}")
    if encoder.feature_layer != -1 or encoder.want_attn or encoder.want_keys:
        raise MMLLMError(
            "ToMe inside the encoder changes the token count block by block; it needs "
            "feature_layer=-1 and no attn_to_cls/keys side information"
        )
    if getattr(encoder, "tome", None) is not None:
        raise MMLLMError("ToMe is already applied to this encoder")
    layers = _encoder_layers(encoder.model)
    state = ToMeState(
        r=int(r),
        prefix=encoder.num_prefix,
        num_heads=int(encoder.model.config.num_attention_heads),
        prop_attn=prop_attn,
    )
    for i, layer in enumerate(layers):
        layers[i] = ToMeBlock(layer, state)
    encoder.model.register_forward_pre_hook(lambda *args: state.reset())
    encoder.tome = state
    return state
