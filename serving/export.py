"""``mmllm export``: an mmllm checkpoint -> one folder vLLM serves.

The folder is the LLM as a plain HF checkpoint (LoRA merged in, the image token's row added)
plus the trained adapter under ``adapter.*`` in the same safetensors file, the tokenizer and chat
template, and the :class:`~mmllm.serving.spec.ServedSpec` block in ``config.json`` with
``architectures = ["MMLLMForVLLM"]`` so the mmllm vLLM plugin picks it up. The encoder is
referenced by name, as in training checkpoints (EfficientNet-lite0 comes from its package).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from mmllm.errors import MMLLMError
from mmllm.serving.quantization import get_preset
from mmllm.serving.spec import ARCHITECTURE, CONFIG_KEY, ServedSpec, check_servable_reduction

WEIGHTS_FILE = "model.safetensors"


LORA_DIR = "lora"


def _served_llm(model, keep_lora: bool, tmp: Path):
    """The LLM to export: LoRA merged in (default), or the base with the peft adapter copied to
    ``lora/`` for vLLM's own LoRA support (``keep_lora``)."""
    llm = model.llm
    if not hasattr(llm, "merge_and_unload"):
        if keep_lora:
            raise MMLLMError("--keep-lora: this checkpoint has no LoRA adapter")
        return llm
    if keep_lora:
        llm.save_pretrained(tmp / LORA_DIR, safe_serialization=True, save_embedding_layers=False)
        return llm.unload()  # the base weights, untouched
    return llm.merge_and_unload()


def _llm_state(llm) -> dict[str, torch.Tensor]:
    """The LLM's weights as HF names; a tied output head is stored once (as the embeddings)."""
    state = {k: v.detach().contiguous().cpu() for k, v in llm.state_dict().items()}
    if getattr(llm.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return state


#: The LLM's linear layers (Llama family names) that a quantized export stores as int8.
QUANTIZED_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantize_w8a8(
    state: dict[str, torch.Tensor], input_absmax: dict[str, float] | None = None
) -> dict:
    """Int8 weights with one symmetric scale per output channel, in place, in compressed-tensors'
    ``int-quantized`` layout (``weight`` int8 + ``weight_scale [out, 1]``). Activations: with
    ``input_absmax`` (per linear layer, from :func:`calibrate_inputs`) one static scale per
    layer (``input_scale``); without, vLLM quantizes them per token at run time (dynamic).
    Returns the ``quantization_config`` block vLLM reads."""
    for name in [
        n for n in state if n.endswith(".weight") and n.split(".")[-2] in QUANTIZED_LINEARS
    ]:
        w = state[name].float()
        scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127.0
        state[name] = torch.round(w / scale).clamp_(-127, 127).to(torch.int8)
        state[name.removesuffix("weight") + "weight_scale"] = scale.to(torch.float32)
        if input_absmax is not None:
            layer = name.removesuffix(".weight")
            if layer not in input_absmax:
                raise MMLLMError(f"calibration saw no input for {layer}")
            amax = max(input_absmax[layer], 1e-8)
            state[layer + ".input_scale"] = torch.tensor([amax / 127.0], dtype=torch.float32)
    int8 = {"num_bits": 8, "type": "int", "symmetric": True, "group_size": None}
    activations = (
        {**int8, "strategy": "tensor", "dynamic": False}
        if input_absmax is not None
        else {**int8, "strategy": "token", "dynamic": True}
    )
    return {
        "quant_method": "compressed-tensors",
        "format": "int-quantized",
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": {**int8, "strategy": "channel", "dynamic": False},
                "input_activations": activations,
                "output_activations": None,
            }
        },
        "ignore": ["lm_head"],
    }


@torch.no_grad()
def calibrate_inputs(model, samples: Sequence) -> dict[str, float]:
    """Largest |input| of every LLM linear layer over whole prompts, images included (the
    visual tokens pass through the same layers as the text), one sample at a time (no padding).
    Keys are the layers' HF names (``model.layers.0.self_attn.q_proj``)."""
    from mmllm.processor import MMLLMProcessor

    llm = model._causal_lm()
    amax: dict[str, float] = {}
    hooks = []
    for name, module in llm.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in QUANTIZED_LINEARS:

            def record(_mod, args, _out, name=name):
                amax[name] = max(amax.get(name, 0.0), float(args[0].abs().amax()))

            hooks.append(module.register_forward_hook(record))
    processor = MMLLMProcessor.from_model(model)
    try:
        for sample in samples:
            prompt = [m for m in sample.messages if m["role"] != "assistant"] or sample.messages
            inputs = processor([prompt], [sample.images])
            model(**inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return amax


def calibration_samples(n: int = 32, seed: int = 1234) -> list:
    """Generated training-split images and questions (never the held-out split)."""
    import tempfile

    from mmllm.data.dataset import load_dataset
    from mmllm.data.generate import make_dataset

    folder = Path(tempfile.mkdtemp(prefix="mmllm-calib-"))
    make_dataset(folder, n, seed=seed, split="train", progress=False)
    return load_dataset(folder)


def export_for_vllm(
    checkpoint: str | Path | None,
    out: str | Path,
    reduction: str | None = None,
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
    keep_lora: bool = False,
    calibration: Sequence | None = None,
) -> Path:
    """Write a vLLM-servable folder for ``checkpoint`` (default: the shipped model), its LLM
    optionally quantized (``quantize="w8a8"``, see :mod:`mmllm.serving.quantization`), its LoRA
    merged or (``keep_lora``) kept apart for vLLM's LoRA support."""
    from mmllm.default_model import load_model

    _check_quantize(quantize)
    _check_out(Path(out))
    model = load_model(checkpoint, reduction=reduction, merge_lora=not keep_lora)
    return export_model(model, out, dtype, quantize, keep_lora, calibration)


def _check_quantize(quantize: str | None) -> None:
    if quantize is not None and get_preset(quantize).checkpoint_format is None:
        raise MMLLMError(
            f"preset {quantize!r} quantizes online at launch: export without --quantize and "
            f"pass `--quantization {quantize}` to `mmllm serve`"
        )


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MMLLMError(f"{out} exists and is not empty; choose a new folder")


def export_model(
    model,
    out: str | Path,
    dtype: torch.dtype = torch.float32,
    quantize: str | None = None,
    keep_lora: bool = False,
    calibration: Sequence | None = None,
) -> Path:
    """Write the vLLM folder for a loaded :class:`MMLLMForConditionalGeneration` (its LoRA is
    merged into the LLM in place: export from a model you no longer train)."""
    _check_quantize(quantize)
    out = Path(out)
    _check_out(out)
    check_servable_reduction(model.config.reduction)
    if keep_lora and quantize is not None:
        raise MMLLMError("--keep-lora with --quantize: vLLM's LoRA needs unquantized base weights")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    llm = _served_llm(model, keep_lora, tmp).to(dtype)
    encoder = model.encoder
    spec = ServedSpec(
        encoder=model.config.encoder,
        image_size=int(encoder.image_size),
        mean=[float(x) for x in encoder.mean],
        std=[float(x) for x in encoder.std],
        encoder_tokens=int(encoder.num_tokens),
        encoder_grid=[int(g) for g in encoder.grid],
        vision_dim=int(model.config.vision_dim),
        reduction=model.config.reduction,
        adapter=model.config.adapter,
        adapter_kwargs=dict(model.config.adapter_kwargs),
        image_token=model.config.image_token,
        image_token_id=int(model.image_token_id),
        llm_architecture=(llm.config.architectures or [type(llm).__name__])[0],
        encoder_finetuned=bool(model.config.encoder_finetuned),
    )
    expected = model.num_image_tokens()
    if spec.image_seq_len(model.config.llm_dim) != expected:
        raise MMLLMError(
            f"placeholder count mismatch ({spec.image_seq_len(model.config.llm_dim)} vs "
            f"{expected}); the exported spec does not describe this model"
        )
    state = _llm_state(llm)
    quant_config = None
    if quantize is not None:
        absmax = None
        if get_preset(quantize).static_activations:
            model.llm = llm  # calibrate the merged LLM that is exported
            absmax = calibrate_inputs(model, calibration or calibration_samples())
        quant_config = quantize_w8a8(state, absmax)
    for key, value in model.adapter.state_dict().items():
        state[f"adapter.{key}"] = value.detach().to(dtype).contiguous().cpu()
    if spec.encoder_finetuned:  # served in float32 like the package's encoder
        state.update({f"encoder.{k}": v for k, v in model.encoder_state().items()})
    save_file(state, tmp / WEIGHTS_FILE, metadata={"format": "pt"})
    config = llm.config.to_dict()
    config["architectures"] = [ARCHITECTURE]
    config["vocab_size"] = int(llm.get_input_embeddings().num_embeddings)
    config["dtype"] = str(dtype).removeprefix("torch.")
    config[CONFIG_KEY] = spec.to_dict()
    if quant_config is not None:
        config["quantization_config"] = quant_config
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    from mmllm.processor import MMLLMProcessor

    MMLLMProcessor.from_model(model).save_pretrained(tmp)
    if llm.generation_config is not None:
        llm.generation_config.save_pretrained(tmp)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
