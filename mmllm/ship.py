"""Copy a trained checkpoint into the package as the shipped default model.

``python -m mmllm.ship runs/default_stage2/final`` keeps only what loading needs (config,
adapter and LoRA safetensors, processor config, chat template, the recipe that made it); the
tokenizer comes from the base LLM package.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mmllm.modeling import ADAPTER_FILE, refuse_pickles

KEEP = (
    "config.json",
    ADAPTER_FILE,
    "processor_config.json",
    "chat_template.jinja",
    "recipe.yaml",
    "lora/adapter_model.safetensors",
    "lora/adapter_config.json",
)


def ship(checkpoint: str | Path, target: str | Path | None = None) -> Path:
    checkpoint = Path(checkpoint)
    refuse_pickles(checkpoint)
    target = Path(target or Path(__file__).parent / "default_model_weights")
    for name in KEEP:
        old = target / name
        if old.exists():
            old.unlink()
        if (checkpoint / name).is_file():
            old.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint / name, old)
    return target


if __name__ == "__main__":
    print(ship(*sys.argv[1:]))
