"""Copy a trained checkpoint into the package as the shipped default model or generator.

``python -m mmllm.ship runs/default_stage2/final`` keeps only what loading needs (config,
adapter and LoRA safetensors, processor config, chat template, the recipe that made it and, for
an average of checkpoints, ``averaged_from.json``); the tokenizer comes from the base LLM
package. A generator folder (``generator_config.json``) goes
to ``default_generator_weights`` with its image rows, LoRA, image tokenizer, recipe, metrics and
sample grid.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from mmllm.errors import MMLLMError
from mmllm.modeling import ADAPTER_FILE, ENCODER_FILE, refuse_pickles

KEEP = (
    "config.json",
    ADAPTER_FILE,
    ENCODER_FILE,
    "processor_config.json",
    "chat_template.jinja",
    "recipe.yaml",
    "averaged_from.json",
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
    """Replace the shipped files in ``target`` (default: the package's folder) by the
    checkpoint's. The checkpoint is checked first: nothing is removed unless it is a complete
    model or generator folder."""
    checkpoint = Path(checkpoint)
    generator = (checkpoint / "generator_config.json").is_file()
    needed = ("generator_config.json",) if generator else ("config.json", ADAPTER_FILE)
    missing = [name for name in needed if not (checkpoint / name).is_file()]
    if missing:
        raise MMLLMError(
            f"{checkpoint} is not a trained model folder (missing {', '.join(missing)}); "
            "pass the 'final' folder a training run saved, e.g. runs/default_stage2/final"
        )
    refuse_pickles(checkpoint)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a trained folder, e.g. runs/NAME/final")
    parser.add_argument(
        "target", type=Path, nargs="?", default=None, help="default: the package's folder"
    )
    args = parser.parse_args()
    try:
        print(ship(args.checkpoint, args.target))
    except MMLLMError as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
