"""What a served model is made of: the ``mmllm`` block of an exported ``config.json``.

The exported folder is a plain HF Llama-family checkpoint (so vLLM's own LLM implementation loads
it) whose ``config.json`` also carries this block: the vision encoder, the reducer spec, the
adapter and the image preprocessing. The vLLM processor reads it to know each image's placeholder
count before any pixel is encoded; the vLLM model reads it to build the vision path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmllm.errors import MMLLMError
from mmllm.reduction import build
from mmllm.reduction.in_llm import split_in_llm

#: Name of the vLLM architecture registered by the plugin (``config.json`` ``architectures``).
ARCHITECTURE = "MMLLMForVLLM"
CONFIG_KEY = "mmllm"


@dataclass
class ServedSpec:
    """Everything outside the LLM that the served model needs (JSON-serialisable)."""

    encoder: str
    image_size: int
    mean: list[float]
    std: list[float]
    encoder_tokens: int
    encoder_grid: list[int]
    vision_dim: int
    reduction: str
    adapter: str
    image_token: str
    image_token_id: int
    adapter_kwargs: dict[str, Any] = field(default_factory=dict)
    #: the LLM's own HF architecture; vLLM builds its implementation of it for the decoder
    llm_architecture: str = "LlamaForCausalLM"
    #: the encoder was fine-tuned: its weights are in the export's safetensors (``encoder.*``),
    #: not only in its package
    encoder_finetuned: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, config: Any) -> ServedSpec:
        """Read the block from a HF config object (or a dict); a missing block is an error."""
        block = (
            config.get(CONFIG_KEY)
            if isinstance(config, dict)
            else getattr(config, CONFIG_KEY, None)
        )
        if not isinstance(block, dict):
            raise MMLLMError(
                f"config has no '{CONFIG_KEY}' block: export the model with `mmllm export` first"
            )
        spec = cls(**block)
        check_servable_reduction(spec.reduction)
        return spec

    def image_seq_len(self, llm_dim: int) -> int:
        """Placeholder tokens per image, from the reducer's and adapter's ``output_len``."""
        from mmllm.adapters import build_adapter

        reducer = build(self.reduction)
        n = reducer.output_len(self.encoder_tokens, tuple(self.encoder_grid))
        grid = tuple(self.encoder_grid) if self.reduction == "identity" else None
        adapter = build_adapter(self.adapter, self.vision_dim, llm_dim, **self.adapter_kwargs)
        return adapter.output_len(n, grid)


def check_servable_reduction(spec: str) -> None:
    """Refuse reducers the vLLM path cannot run, naming why (clear error at export or launch)."""
    reducer = build(spec)
    if split_in_llm(reducer)[1] is not None:
        raise MMLLMError(
            f"reduction {spec!r} drops tokens inside the LLM; vLLM runs its own decoder, so only "
            "reducers between encoder and LLM can be served (e.g. divprune:16, coverage:16)"
        )
    if reducer.uses_text:
        raise MMLLMError(
            f"reduction {spec!r} reads the prompt's text embeddings; vLLM encodes images apart "
            "from the text, so serve a text-free reducer (e.g. divprune:16, coverage:16)"
        )
