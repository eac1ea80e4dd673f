"""``mmllm merge``: fold LoRA into the base LLM weights (peft ``merge_and_unload``).

The merged checkpoint carries its own full LLM folder (``llm/``, safetensors) referenced from
``config.json`` by a relative path, so it no longer needs peft at load time and serves as a plain
model (e.g. on vLLM).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mmllm.errors import MMLLMError


def merge_lora(checkpoint: str | Path, out: str | Path) -> Path:
    from mmllm.default_model import load_model

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "lora").is_dir():
        raise MMLLMError(f"{checkpoint}: no lora/ folder, nothing to merge")
    if out.exists() and any(out.iterdir()):
        raise MMLLMError(f"{out} exists and is not empty; choose a new folder")
    model = load_model(checkpoint, merge_lora=False)
    model.llm = model.llm.merge_and_unload()
    llm_dir = out / "llm"
    model.llm.save_pretrained(llm_dir, safe_serialization=True)
    model.tokenizer.save_pretrained(llm_dir)
    model.config.llm = "llm"
    model.save_pretrained(out)
    for extra in ("recipe.yaml",):
        if (checkpoint / extra).is_file():
            shutil.copy(checkpoint / extra, out / extra)
    return out
