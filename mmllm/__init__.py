"""mmllm: visual tokenizers for LLMs, token reduction between encoder and LLM, recipes, serving.

The top-level folders of the repository install under this one import root:
``mmllm.vision_tokenizers``, ``mmllm.reduction``, ``mmllm.kernels``, ``mmllm.serving`` and the
``mmllm.recipes`` data package. Heavy pieces are imported lazily by the submodules that need them.
"""

from mmllm.errors import MMLLMError

__version__ = "0.1.0"

__all__ = ["MMLLMError", "__version__"]
