"""vLLM plugin entry point (``vllm.general_plugins``): registers the mmllm architecture.

vLLM calls :func:`register` in every process it starts (API server, engine core, workers), so
an exported folder whose ``config.json`` names ``MMLLMForVLLM`` loads with no patches to vLLM.
The model module is given lazily, as a string, so registering costs no import of the model code.
"""

from __future__ import annotations

from mmllm.serving.spec import ARCHITECTURE


def register() -> None:
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"mmllm.serving.vllm_model:{ARCHITECTURE}")
