"""``mmllm average``: a weighted average of checkpoints of one architecture (a "model soup").

Averaging the weights of fine-tuned checkpoints that share a starting point (consecutive
stages, or the last checkpoints of one run) is a training-free way to smooth out the noise of
any single run (Wortsman et al., 2022, "Model soups"; Izmailov et al., 2018, SWA). The adapter
and the encoder are averaged tensor by tensor. LoRA factors cannot be averaged factor by factor
(mean(B) @ mean(A) is not the mean of the B @ A products), so the average is built exactly by
stacking the factors along the rank: with A = [A_1; ...; A_n] and B = [w_1 B_1, ..., w_n B_n],
B @ A = sum_i w_i B_i @ A_i, at rank n * r, with lora_alpha scaled so the LoRA scaling is
unchanged. ``rank=`` truncates that sum back to a smaller rank by SVD (the best rank-k
approximation of each module's update), which keeps the file size of one checkpoint at the cost
of a measured, reported approximation error.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from mmllm.errors import MMLLMError
from mmllm.modeling import ADAPTER_FILE, ENCODER_FILE, refuse_pickles

LORA_WEIGHTS = "lora/adapter_model.safetensors"
LORA_CONFIG = "lora/adapter_config.json"
# Config keys that must agree for the weights to mean the same thing.
ARCHITECTURE_KEYS = (
    "encoder",
    "adapter",
    "adapter_kwargs",
    "llm",
    "image_size",
    "vision_dim",
    "llm_dim",
    "visual_positions",
)
LORA_CONFIG_KEYS = ("r", "lora_alpha", "target_modules", "use_rslora", "use_dora", "bias")
PROVENANCE_FILE = "averaged_from.json"


def _normalised_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise MMLLMError(f"{len(weights)} weights given for {n} checkpoints; give one for each")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise MMLLMError(f"weights must be non-negative with a positive sum, got {list(weights)}")
    total = float(sum(weights))
    return [w / total for w in weights]


def _check_same(name: str, values: list, sources: Sequence[Path]) -> None:
    for value, source in zip(values[1:], sources[1:], strict=True):
        if value != values[0]:
            raise MMLLMError(
                f"cannot average: {name} is {values[0]!r} in {sources[0]} but {value!r} in {source}"
            )


def average_tensors(
    state_dicts: Sequence[dict[str, torch.Tensor]],
    weights: Sequence[float],
    sources: Sequence[Path],
) -> dict[str, torch.Tensor]:
    """Weighted mean of floating-point tensors; integer tensors (e.g. BatchNorm's
    ``num_batches_tracked``) must agree or the first is kept."""
    _check_same("the tensor names", [sorted(sd) for sd in state_dicts], sources)
    out = {}
    for key, first in state_dicts[0].items():
        _check_same(f"the shape of {key}", [tuple(sd[key].shape) for sd in state_dicts], sources)
        if first.is_floating_point():
            acc = sum(w * sd[key].double() for w, sd in zip(weights, state_dicts, strict=True))
            out[key] = acc.to(first.dtype).contiguous()
        else:
            out[key] = first.clone()
    return out


def _lora_scale(config: dict) -> float:
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def _alpha_for(config: dict, rank: int) -> float:
    """The lora_alpha that gives rank ``rank`` the scaling ``config`` has."""
    scale = _lora_scale(config)
    return scale * math.sqrt(rank) if config.get("use_rslora") else scale * rank


def average_lora(
    state_dicts: Sequence[dict[str, torch.Tensor]],
    config: dict,
    weights: Sequence[float],
    sources: Sequence[Path],
    rank: int | None = None,
) -> tuple[dict[str, torch.Tensor], dict, float]:
    """Exact weighted average of LoRA updates by stacking factors along the rank, optionally
    truncated to ``rank`` by SVD. Returns (tensors, adapter config, worst relative error of the
    truncation over modules; 0.0 when exact)."""
    if config.get("use_dora"):
        raise MMLLMError(
            "cannot average DoRA checkpoints: the magnitude vector normalises each update, so "
            "the average of DoRA models is not a DoRA model; merge each (mmllm merge) instead"
        )
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise MMLLMError("cannot average LoRA with per-module rank_pattern/alpha_pattern")
    _check_same("the LoRA tensor names", [sorted(sd) for sd in state_dicts], sources)
    out: dict[str, torch.Tensor] = {}
    worst = 0.0
    n = len(state_dicts)
    new_rank = rank or n * config["r"]
    for key in state_dicts[0]:
        if ".lora_B." in key:
            continue
        if ".lora_A." not in key:  # modules_to_save and the like: a plain mean
            out.update(average_tensors([{key: sd[key]} for sd in state_dicts], weights, sources))
            continue
        key_b = key.replace(".lora_A.", ".lora_B.")
        dtype = state_dicts[0][key].dtype
        a = torch.cat([sd[key].double() for sd in state_dicts], dim=0)
        b = torch.cat(
            [w * sd[key_b].double() for w, sd in zip(weights, state_dicts, strict=True)], dim=1
        )
        if rank is not None:
            # The best rank-k approximation of B @ A, from the SVDs of the thin factors.
            q_b, r_b = torch.linalg.qr(b)
            q_a, r_a = torch.linalg.qr(a.T)
            u, s, vh = torch.linalg.svd(r_b @ r_a.T)
            total = s.square().sum().clamp_min(1e-30)
            worst = max(worst, float((s[rank:].square().sum() / total).sqrt()))
            root = s[:rank].sqrt()
            b = (q_b @ u[:, :rank]) * root
            a = root[:, None] * (vh[:rank] @ q_a.T)
            if a.shape[0] < rank:  # fewer directions than asked: pad with zero rank
                a = torch.cat([a, a.new_zeros(rank - a.shape[0], a.shape[1])])
                b = torch.cat([b, b.new_zeros(b.shape[0], rank - b.shape[1])], dim=1)
        out[key] = a.to(dtype).contiguous()
        out[key_b] = b.to(dtype).contiguous()
    new_config = dict(config, r=new_rank, lora_alpha=_alpha_for(config, new_rank))
    return out, new_config, worst


def _provenance(folder: Path) -> dict | None:
    """``folder``'s own ``averaged_from.json`` if it is itself an average, else None."""
    path = folder / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _recipe_name(folder: Path) -> str | None:
    """The name of the recipe that trained ``folder`` (its saved recipe.yaml), if any; for a
    folder that is itself an average, ``average(<its members' recipes>)``: its recipe.yaml is its
    first member's and would name only that one."""
    nested = _provenance(folder)
    if nested is not None:
        return "average(" + ", ".join(str(m) for m in nested.get("recipes") or []) + ")"
    recipe = folder / "recipe.yaml"
    if not recipe.is_file():
        return None
    return (yaml.safe_load(recipe.read_text()) or {}).get("name")


def average_checkpoints(
    checkpoints: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    rank: int | None = None,
) -> Path:
    """Write the weighted average of ``checkpoints`` (model folders saved by training) to
    ``out``. Non-weight files (config, processor, chat template, tokenizer, recipe) come from the
    first checkpoint; ``averaged_from.json`` records the sources, their recipes, the weights and
    the LoRA rank."""
    sources = [Path(c) for c in checkpoints]
    out = Path(out)
    if len(sources) < 2:
        raise MMLLMError("give at least two checkpoints to average")
    for source in sources:
        if not (source / "config.json").is_file() or not (source / ADAPTER_FILE).is_file():
            raise MMLLMError(f"{source} is not a trained model folder (no config.json/adapter)")
        refuse_pickles(source)
    if out.exists() and any(out.iterdir()):
        raise MMLLMError(f"{out} exists and is not empty; choose a new folder")
    if rank is not None and rank < 1:
        raise MMLLMError(f"rank must be a positive integer, got {rank}")
    w = _normalised_weights(len(sources), weights)
    configs = [json.loads((s / "config.json").read_text()) for s in sources]
    for key in ARCHITECTURE_KEYS:
        _check_same(f"config.{key}", [c.get(key) for c in configs], sources)

    # Everything is averaged in memory first, so a refused input leaves no half-written folder.
    averaged: dict[str, dict[str, torch.Tensor]] = {}
    for name in (ADAPTER_FILE, ENCODER_FILE):
        present = [(s / name).is_file() for s in sources]
        _check_same(f"whether {name} exists", present, sources)
        if present[0]:
            averaged[name] = average_tensors([load_file(s / name) for s in sources], w, sources)

    has_lora = [(s / LORA_WEIGHTS).is_file() for s in sources]
    _check_same("whether lora/ exists", has_lora, sources)
    truncation_error, lora_config = 0.0, None
    if has_lora[0]:
        lora_configs = [json.loads((s / LORA_CONFIG).read_text()) for s in sources]
        for key in LORA_CONFIG_KEYS:
            values = [c.get(key) for c in lora_configs]
            if key == "target_modules":
                values = [sorted(v) if isinstance(v, list) else v for v in values]
            _check_same(f"lora.{key}", values, sources)
        averaged[LORA_WEIGHTS], lora_config, truncation_error = average_lora(
            [load_file(s / LORA_WEIGHTS) for s in sources], lora_configs[0], w, sources, rank
        )

    out.mkdir(parents=True, exist_ok=True)
    if lora_config:
        (out / "lora").mkdir(exist_ok=True)
    for name in ("config.json", "processor_config.json", "chat_template.jinja", "recipe.yaml"):
        if (sources[0] / name).is_file():
            shutil.copy(sources[0] / name, out / name)
    for tokenizer_file in sources[0].glob("tokenizer*"):
        shutil.copy(tokenizer_file, out / tokenizer_file.name)
    for name, tensors in averaged.items():
        save_file(tensors, out / name, metadata={"format": "pt"})
    if lora_config:
        (out / LORA_CONFIG).write_text(json.dumps(lora_config, indent=2))
    provenance = {
        "checkpoints": [str(s) for s in sources],
        "recipes": [_recipe_name(s) for s in sources],
        "weights": w,
        "lora_rank": lora_config["r"] if lora_config else None,
        "lora_truncation_relative_error": truncation_error,
    }
    nested = {str(i): p for i, s in enumerate(sources) if (p := _provenance(s)) is not None}
    if nested:
        provenance["averaged_members"] = nested  # an average of averages keeps the whole tree
    (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    return out
