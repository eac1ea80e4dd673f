"""Copy a trained checkpoint into the package as the shipped default model or generator.

``python -m mmllm.ship runs/default_stage2/final`` keeps only what loading needs (config,
adapter and LoRA safetensors, processor config, chat template, the recipe that made it); the
tokenizer comes from the base LLM package. A generator folder (``generator_config.json``) goes
to ``default_generator_weights`` with its image rows, LoRA, image tokenizer, recipe, metrics and
sample grid.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mmllm.modeling import ADAPTER_FILE, ENCODER_FILE, refuse_pickles

KEEP = (
    "config.json",
    ADAPTER_FILE,
    ENCODER_FILE,
    "processor_config.json",
    "chat_template.jinja",
    "recipe.yaml",
    "lora/adapter_model.safetensors",
    "lora/adapter_config.json",
)


GENERATOR_KEEP = (
    "generator_config.json",
    "image_rows.safetensors",
    "recipe.yaml",
    "metrics.json",
    "samples.png",
    "lora/adapter_model.safetensors",
    "lora/adapter_config.json",
    "image_tokenizer/config.json",
    "image_tokenizer/model.safetensors",
)


def ship(checkpoint: str | Path, target: str | Path | None = None) -> Path:
    checkpoint = Path(checkpoint)
    refuse_pickles(checkpoint)
    generator = (checkpoint / "generator_config.json").is_file()
    default = "default_generator_weights" if generator else "default_model_weights"
    target = Path(target or Path(__file__).parent / default)
    for name in GENERATOR_KEEP if generator else KEEP:
        old = target / name
        if old.exists():
            old.unlink()
        if (checkpoint / name).is_file():
            old.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint / name, old)
    return target


if __name__ == "__main__":
    print(ship(*sys.argv[1:]))
