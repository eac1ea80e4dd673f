"""Visual tokenizers: continuous encoders (HF vision models, EfficientNet-lite) returning
:class:`~mmllm.reduction.VisualTokens`, and the quantizers of discrete tokenizers (VQ, FSQ, LFQ,
BSQ, RVQ, group-wise LFQ) in :mod:`mmllm.vision_tokenizers.quantizers`.
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
