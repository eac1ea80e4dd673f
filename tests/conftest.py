"""Shared test setup: GPU tests skip cleanly without CUDA, vLLM tests without the serve extra."""

import importlib.util

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_vllm = pytest.mark.skip(reason="needs the [serve] extra (vLLM)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "vllm" in item.keywords and importlib.util.find_spec("vllm") is None:
            item.add_marker(no_vllm)
