"""Quantizers with one call signature: ``quantized, ids, aux = q(z)``; ``q.ids_to_codes(ids)``.

Build one by name with :func:`build_quantizer` (``vq``, ``fsq``, ``lfq``, ``bsq``, ``rvq``,
``group``), e.g. ``build_quantizer("rvq", stage="fsq", num_stages=4, levels=[8, 5, 5, 5])``.
"""

from __future__ import annotations

from mmllm.errors import MMLLMError
from mmllm.vision_tokenizers.quantizers.base import Quantizer, QuantizerAux, code_stats
from mmllm.vision_tokenizers.quantizers.fsq import FSQ
from mmllm.vision_tokenizers.quantizers.group import GroupLFQ
from mmllm.vision_tokenizers.quantizers.lfq import BSQ, LFQ
from mmllm.vision_tokenizers.quantizers.rvq import ResidualQuantizer
from mmllm.vision_tokenizers.quantizers.vq import VectorQuantizer

QUANTIZERS: dict[str, type[Quantizer]] = {
    "vq": VectorQuantizer,
    "fsq": FSQ,
    "lfq": LFQ,
    "bsq": BSQ,
    "group": GroupLFQ,
}


def build_quantizer(name: str, **kwargs) -> Quantizer:
    """A quantizer by name; ``rvq`` takes ``stage`` (another name) and ``num_stages``."""
    if name == "rvq":
        stage = kwargs.pop("stage", "vq")
        num_stages = kwargs.pop("num_stages", 4)
        if stage == "rvq":
            raise MMLLMError("an rvq stage cannot itself be rvq")
        return ResidualQuantizer(lambda: build_quantizer(stage, **kwargs), num_stages)
    if name not in QUANTIZERS:
        known = ", ".join([*QUANTIZERS, "rvq"])
        raise MMLLMError(f"unknown quantizer '{name}'; known: {known}")
    try:
        return QUANTIZERS[name](**kwargs)
    except TypeError as err:
        raise MMLLMError(f"quantizer '{name}': {err}") from None


__all__ = [
    "BSQ",
    "FSQ",
    "LFQ",
    "QUANTIZERS",
    "GroupLFQ",
    "Quantizer",
    "QuantizerAux",
    "ResidualQuantizer",
    "VectorQuantizer",
    "build_quantizer",
    "code_stats",
]
