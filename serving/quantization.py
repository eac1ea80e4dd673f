"""Quantization presets named for users, mapped to what vLLM runs on the device in use.

=========  =============================================  ===========  ==========================
preset     what it is                                     devices      how
=========  =============================================  ===========  ==========================
``fp8``    fp8 weights, per output channel, dynamic       cpu, cuda    online (vLLM quantizes at
           per-token activations                                       load: ``fp8_per_channel``)
``w8a8``   int8 weights per channel + int8 activations,   cpu, cuda    a checkpoint written by
           one static scale per layer calibrated on                    ``mmllm export --quantize
           whole prompts (image and text tokens)                       w8a8`` (compressed-tensors)
``w8a8-    as ``w8a8``, activations scaled per token      cpu, cuda    ``mmllm export --quantize
dynamic``  at run time (no calibration)                                w8a8-dynamic``
``int8``   alias of ``w8a8``
=========  =============================================  ===========  ==========================

A preset the device cannot run, or one that needs a quantized checkpoint the folder is not, is
refused before vLLM starts (a clear error at launch, not a crash at the first request).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmllm.errors import MMLLMError


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    devices: tuple[str, ...]
    online: str | None = None  # vLLM --quantization value for online quantization
    checkpoint_format: str | None = None  # compressed-tensors format an export writes
    static_activations: bool = False  # activation scales calibrated at export
    dtype: str | None = None  # the compute dtype vLLM requires with this preset
    why_not: dict[str, str] = field(default_factory=dict)  # device -> why it is not offered


PRESETS: dict[str, Preset] = {
    "fp8": Preset(
        "fp8", "fp8 weights per channel (online)", ("cuda",), online="fp8_per_channel",
        dtype="bfloat16",  # vLLM refuses fp8_per_channel with float32 activations
        why_not={"cpu": (
            "vLLM 0.32 runs per-channel fp8 on CPU through torch._scaled_mm, a reference "
            "kernel (an 8x576x1536 GEMM: 180 ms, against 0.2 ms in bf16; minutes per token "
            "for the default model), and its per-tensor fp8 path fails on CPU builds; "
            "use --quantization w8a8 (int8) on CPU"
        )},
    ),
    "w8a8": Preset(
        "w8a8", "int8 weights + int8 activations, static scales calibrated on images + text",
        ("cpu", "cuda"), checkpoint_format="int-quantized", static_activations=True,
    ),
    "w8a8-dynamic": Preset(
        "w8a8-dynamic", "int8 weights + int8 activations scaled per token at run time",
        ("cpu", "cuda"), checkpoint_format="int-quantized",
    ),
}  # fmt: skip
ALIASES = {"int8": "w8a8"}


def get_preset(name: str) -> Preset:
    key = ALIASES.get(name, name)
    if key not in PRESETS:
        known = ", ".join(sorted([*PRESETS, *ALIASES]))
        raise MMLLMError(f"unknown quantization preset {name!r}; choose one of: {known}")
    return PRESETS[key]


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Sapphire Rapids or newer), where vLLM swaps kernels."""
    import torch

    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe and probe())


def compute_dtype(preset: Preset | None, device: str, checkpoint_format: str | None) -> str:
    """The activation dtype to serve with: fp32 on CPU (local chat runs fp32, so answers
    match), bf16 on GPU, or what the preset's vLLM kernel needs. On AMX CPUs vLLM runs int8
    layers on its AMX kernel, which only takes bf16/fp16 activations, so int8 presets serve
    in bf16 there rather than fail at the first request. ``checkpoint_format`` is the
    served folder's own quantization: an int8 preset serves only an int8 folder
    (:func:`resolve_preset`), so the folder alone says whether the layers are int8."""
    if preset is not None and preset.dtype:
        return preset.dtype
    if device != "cpu":
        return "bfloat16"
    if checkpoint_format == "int-quantized" and cpu_has_amx():
        return "bfloat16"
    return "float32"


def checkpoint_quantization(folder: Path) -> str | None:
    """The compressed-tensors format of an exported folder, or None if it is not quantized."""
    config = json.loads((folder / "config.json").read_text())
    q = config.get("quantization_config")
    return q.get("format") if isinstance(q, dict) else None


def resolve_preset(name: str, device: str, folder: Path) -> list[str]:
    """vLLM arguments for preset ``name`` on ``device`` serving ``folder`` (or a clear error)."""
    preset = get_preset(name)
    if device not in preset.devices:
        why = preset.why_not.get(device)
        raise MMLLMError(
            f"quantization preset {preset.name!r} does not run on {device}; "
            f"it needs one of: {', '.join(preset.devices)}" + (f" ({why})" if why else "")
        )
    have = checkpoint_quantization(folder)
    if preset.online:
        if have:
            raise MMLLMError(
                f"{folder} is already quantized ({have}); serve it without --quantization"
            )
        return ["--quantization", preset.online]
    if have != preset.checkpoint_format:
        raise MMLLMError(
            f"preset {preset.name!r} serves a quantized checkpoint: export one with "
            f"`mmllm export MODEL OUT --quantize {preset.name}` and serve OUT"
        )
    return []  # vLLM reads the checkpoint's quantization_config itself
