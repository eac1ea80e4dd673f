"""Continuous vision encoders: images -> :class:`~mmllm.reduction.VisualTokens`."""

from mmllm.vision_tokenizers.encoders.base import VisionEncoder
from mmllm.vision_tokenizers.encoders.efficientnet import EfficientNetLiteEncoder
from mmllm.vision_tokenizers.encoders.hf import HFVisionEncoder

__all__ = ["EfficientNetLiteEncoder", "HFVisionEncoder", "VisionEncoder"]
