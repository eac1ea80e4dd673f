"""Serving mmllm models on vLLM (plugin, ``mmllm serve``, quantization presets).

The vLLM plugin arrives with the serving issue; it needs the ``[serve]`` extra.
"""

__all__: list[str] = []
