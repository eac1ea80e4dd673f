"""Build the vision encoder a model config names (one place, used by training, chat and serving)."""

from __future__ import annotations

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers import EfficientNetLiteEncoder, HFVisionEncoder, VisionEncoder


def build_encoder(
    name: str, image_size: int | None = None, pretrained: bool = True
) -> VisionEncoder:
    """``efficientnet_lite0`` (default), ``efficientnet_lite0:detail=4,7`` (plus earlier blocks'
    features folded into each token), ``hf:/local/folder`` (a transformers vision model) or
    ``tokenizer:/folder`` (a trained discrete tokenizer: ids read through their code vectors;
    ``tokenizer:default`` is the image tokenizer shipped with the default generator)."""
    base, _, options = name.partition(":")
    if base == "efficientnet_lite0":
        return EfficientNetLiteEncoder(
            image_size=image_size or 448,
            pretrained=pretrained,
            detail_blocks=_detail_blocks(name, options),
        )
    if name.startswith("hf:"):
        return HFVisionEncoder.from_pretrained(name[3:], image_size=image_size)
    if name.startswith("tokenizer:"):
        from mmllm.vision_tokenizers.encoders.discrete import DiscreteTokenizerEncoder

        folder = name[len("tokenizer:") :]
        if folder == "default":
            from mmllm.default_model import default_generator_path
            from mmllm.generation.model import TOKENIZER_DIR

            folder = default_generator_path() / TOKENIZER_DIR
        return DiscreteTokenizerEncoder.from_pretrained(folder)
    raise MMLLMError(
        f"unknown encoder '{name}'; use 'efficientnet_lite0' (optionally ':detail=4,7'), "
        "'hf:/path/to/model' or "
        "'tokenizer:/path/to/tokenizer' (or 'tokenizer:default')"
    )


def _detail_blocks(name: str, options: str) -> tuple[int, ...]:
    """``detail=4,7`` -> ``(4, 7)``; anything else is a clear error."""
    if not options:
        return ()
    key, _, value = options.partition("=")
    try:
        if key != "detail":
            raise ValueError
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise MMLLMError(
            f"bad encoder spec '{name}': use 'efficientnet_lite0:detail=B1,B2' with block indices"
        ) from None
