"""Build the vision encoder a model config names (one place, used by training, chat and serving)."""

from __future__ import annotations

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers import EfficientNetLiteEncoder, HFVisionEncoder, VisionEncoder


def build_encoder(
    name: str, image_size: int | None = None, pretrained: bool = True
) -> VisionEncoder:
    """``efficientnet_lite0`` (default), ``hf:/local/folder`` (a transformers vision model) or
    ``tokenizer:/folder`` (a trained discrete tokenizer: ids read through their code vectors)."""
    if name == "efficientnet_lite0":
        return EfficientNetLiteEncoder(image_size=image_size or 448, pretrained=pretrained)
    if name.startswith("hf:"):
        return HFVisionEncoder.from_pretrained(name[3:], image_size=image_size)
    if name.startswith("tokenizer:"):
        from mmllm.vision_tokenizers.encoders.discrete import DiscreteTokenizerEncoder

        return DiscreteTokenizerEncoder.from_pretrained(name[len("tokenizer:") :])
    raise MMLLMError(
        f"unknown encoder '{name}'; use 'efficientnet_lite0', 'hf:/path/to/model' or "
        "'tokenizer:/path/to/tokenizer'"
    )
