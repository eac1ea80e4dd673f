"""Which implementation of a kernel operation runs: Triton, vectorised torch, or the reference.

``MMLLM_KERNELS`` chooses: ``auto`` (default: Triton for CUDA tensors when Triton imports, the
vectorised torch path otherwise), ``torch``, ``triton`` (forced; on CPU only under
``TRITON_INTERPRET=1``, set before Triton is first imported: how CI tests the kernels) or
``reference`` (the plain algorithms in :mod:`mmllm.reduction`). ``auto`` never picks the
interpreter. A fallback from Triton is logged once, with the reason. :func:`use` overrides the
variable inside a ``with`` block (benchmarks time every backend in one process that way).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Iterator

import torch

from mmllm.errors import MMLLMError

log = logging.getLogger("mmllm.kernels")

ENV = "MMLLM_KERNELS"
BACKENDS = ("auto", "torch", "triton", "reference")
_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("mmllm_kernels", default=None)


@contextlib.contextmanager
def use(choice: str) -> Iterator[None]:
    """Run the block with ``choice`` as if ``MMLLM_KERNELS`` were set to it."""
    if choice not in BACKENDS:
        raise MMLLMError(f"kernel backend {choice!r}: choose one of {', '.join(BACKENDS)}")
    token = _forced.set(choice)
    try:
        yield
    finally:
        _forced.reset(token)


@functools.cache
def triton_status() -> str | None:
    """None if Triton kernels can run here, else why not."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed"
    return None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@functools.cache
def log_once(op: str, reason: str) -> None:
    """Say once per process why ``op`` left the fast path it would otherwise take."""
    log.info("%s: vectorised torch path (%s)", op, reason)


def backend(op: str, device: torch.device) -> str:
    """The backend ``op`` uses for tensors on ``device``."""
    choice = _forced.get() or os.environ.get(ENV, "auto")
    if choice not in BACKENDS:
        raise MMLLMError(f"{ENV}={choice!r}: choose one of {', '.join(BACKENDS)}")
    if choice in ("torch", "reference"):
        return choice
    problem = triton_status()
    if choice == "triton":  # forced: CUDA, or the interpreter on CPU (how CI tests the kernels)
        if problem is None and device.type != "cuda" and not interpreting():
            problem = f"tensors on {device.type}; Triton runs on CUDA (or TRITON_INTERPRET=1)"
        if problem:
            raise MMLLMError(f"{ENV}=triton but {problem}")
        return "triton"
    if problem is None and device.type != "cuda":
        problem = f"tensors on {device.type}; Triton runs on CUDA"
    if problem:
        log_once(op, problem)
        return "torch"
    return "triton"
