"""Any Hugging Face vision transformer (CLIP, SigLIP, SigLIP2, ViT, ...) as a token encoder.

The model is used as transformers defines it, never rewritten. Patch tokens become
``VisualTokens.embeds``; side information is added where it is cheap:

- ``cls``: the [CLS] feature, for models that have one (CLIP, ViT); SigLIP has none.
- ``attn_to_cls`` (on request): the feature layer's attention from [CLS] to each patch, head
  mean. It needs eager attention, so asking for it switches the model to eager.
- ``keys`` (on request): the feature layer's attention keys (heads concatenated), captured by a
  forward hook on its key projection; ToMe matches tokens on these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mmllm.reduction.types import VisualTokens
from mmllm.vision_tokenizers.encoders.base import VisionEncoder

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)
_DEFAULT_NORM = {"clip": (CLIP_MEAN, CLIP_STD), "siglip": (HALF, HALF), "siglip2": (HALF, HALF)}


def _vision_tower(model: nn.Module) -> nn.Module:
    """The vision part of a dual-encoder (CLIPModel.vision_model) or the model itself."""
    if hasattr(model, "vision_model") and not hasattr(model, "embeddings"):
        return model.vision_model
    return model


def _family(model: nn.Module) -> str:
    model_type = getattr(model.config, "model_type", "")
    for family in ("siglip2", "siglip", "clip"):
        if model_type.startswith(family):
            return family
    return model_type


def _encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks: the ModuleList with one entry per hidden layer."""
    depth = int(model.config.num_hidden_layers)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == depth:
            return module
    raise ValueError(f"cannot find the encoder layers of {type(model).__name__}")


def _key_projection(layer: nn.Module) -> nn.Module:
    for name, module in layer.named_modules():
        if isinstance(module, nn.Linear) and (name.endswith("k_proj") or name.endswith(".key")):
            return module
    raise ValueError(f"cannot find a key projection in {type(layer).__name__}")


class HFVisionEncoder(VisionEncoder):
    """Wrap a transformers vision model as a visual tokenizer.

    Args:
        model: a transformers vision model (``CLIPVisionModel``, ``SiglipVisionModel``,
            ``Siglip2VisionModel``, ``ViTModel``...) or a dual encoder with ``.vision_model``.
        image_size: input size; defaults to the config's.
        mean, std: pixel normalisation; defaults by family (CLIP, SigLIP) else ImageNet's.
        feature_layer: which hidden state gives the tokens (-1 last, -2 as in LLaVA).
        attn_to_cls: also return the [CLS] attention to each patch (switches to eager attention).
        keys: also return the feature layer's attention keys.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        image_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        feature_layer: int = -1,
        attn_to_cls: bool = False,
        keys: bool = False,
    ):
        super().__init__()
        self.tome = None  # set by mmllm.reduction.tome_blocks.apply_tome
        self.model = _vision_tower(model)
        config = self.model.config
        self.family = _family(self.model)
        self.name = type(self.model).__name__
        self.patch_size = int(config.patch_size)
        if image_size is None:
            if getattr(config, "image_size", None):
                image_size = int(config.image_size)
            else:  # SigLIP2 is sized by its patch count
                image_size = math.isqrt(int(config.num_patches)) * self.patch_size
        if image_size % self.patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch {self.patch_size}"
            )
        self.image_size = image_size
        self.hidden_size = int(config.hidden_size)
        default_mean, default_std = _DEFAULT_NORM.get(self.family, (None, None))
        from mmllm.vision_tokenizers.images import IMAGENET_MEAN, IMAGENET_STD

        self.mean = tuple(mean or default_mean or IMAGENET_MEAN)
        self.std = tuple(std or default_std or IMAGENET_STD)
        self.feature_layer = feature_layer
        self.want_attn = attn_to_cls
        self.want_keys = keys
        self.num_prefix = self._count_prefix_tokens()
        if attn_to_cls:
            if self.num_prefix == 0:
                raise ValueError(
                    f"{self.name} has no [CLS] token, so it cannot give attn_to_cls; "
                    "use a CLS-free reducer score (norm, entropy, mean_sim)"
                )
            self.model.set_attn_implementation("eager")
        self._keys: torch.Tensor | None = None
        if keys:
            layers = _encoder_layers(self.model)
            layer = layers[feature_layer] if feature_layer < 0 else layers[feature_layer - 1]
            _key_projection(layer).register_forward_hook(self._store_keys)
        self.eval()

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs) -> HFVisionEncoder:
        """Load a vision model from a local folder (no hub downloads happen at run time)."""
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(path, local_files_only=True), **kwargs)

    @property
    def grid(self) -> tuple[int, int]:
        side = self.image_size // self.patch_size
        return side, side

    @property
    def num_tokens(self) -> int:
        h, w = self.grid
        if self.tome is not None:
            return self.tome.output_len(h * w, int(self.model.config.num_hidden_layers))
        return h * w

    def _store_keys(self, module: nn.Module, inputs, output: torch.Tensor) -> None:
        self._keys = output

    def _count_prefix_tokens(self) -> int:
        """[CLS] / register tokens in front of the patches, found by one tiny forward pass."""
        if self.family == "siglip2":
            return 0
        with torch.no_grad():
            probe = torch.zeros(1, 3, self.image_size, self.image_size, device=self._device())
            out = self.model(**self._inputs(probe))
        return out.last_hidden_state.shape[1] - self.num_tokens

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _inputs(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        pixels = pixels.to(next(self.model.parameters()).dtype)
        if self.family != "siglip2":
            kwargs = {"pixel_values": pixels}
            if self.image_size != getattr(self.model.config, "image_size", self.image_size):
                kwargs["interpolate_pos_encoding"] = True
            return kwargs
        # SigLIP2 takes flattened patches (row-major, then (p_row, p_col, channel) inside).
        b, c, h, w = pixels.shape
        p = self.patch_size
        patches = pixels.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 3, 5, 1)
        patches = patches.reshape(b, (h // p) * (w // p), p * p * c)
        shapes = torch.tensor([[h // p, w // p]] * b, device=pixels.device)
        mask = torch.ones(b, patches.shape[1], dtype=torch.long, device=pixels.device)
        return {"pixel_values": patches, "spatial_shapes": shapes, "pixel_attention_mask": mask}

    def forward(self, pixels: torch.Tensor) -> VisualTokens:
        self.check_pixels(pixels)
        need_hidden = self.feature_layer != -1
        out = self.model(
            **self._inputs(pixels),
            output_hidden_states=need_hidden,
            output_attentions=self.want_attn,
        )
        hidden = out.hidden_states[self.feature_layer] if need_hidden else out.last_hidden_state
        prefix = self.num_prefix
        fields: dict[str, torch.Tensor] = {"embeds": hidden[:, prefix:]}
        if prefix:
            fields["cls"] = hidden[:, 0]
        if self.want_attn:
            attn = out.attentions[self.feature_layer]  # [B, heads, T, T]
            fields["attn_to_cls"] = attn[:, :, 0, prefix:].mean(dim=1)
        if self.want_keys:
            fields["keys"] = self._keys[:, prefix:]
            self._keys = None
        if self.tome is not None:
            fields["size"], fields["index"] = self.tome.size, self.tome.index
        return VisualTokens(grid=self.grid, source=self.name, **fields)
