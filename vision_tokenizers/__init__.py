"""Visual tokenizers: continuous encoders (HF vision models, EfficientNet-lite) and, later,
discrete tokenizers (VQ, FSQ, LFQ, BSQ, RVQ). All return :class:`~mmllm.reduction.VisualTokens`.
"""

from mmllm.vision_tokenizers.encoders import EfficientNetLiteEncoder, HFVisionEncoder, VisionEncoder
from mmllm.vision_tokenizers.images import load_image, to_pixels

__all__ = [
    "EfficientNetLiteEncoder",
    "HFVisionEncoder",
    "VisionEncoder",
    "load_image",
    "to_pixels",
]
