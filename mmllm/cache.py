"""Where converted pretrained weights are cached (never in the repository).

Default: the user cache directory (``~/.cache/mmllm`` on Linux). ``MMLLM_CACHE`` overrides it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from platformdirs import user_cache_dir

from mmllm.errors import MissingPackageError


def cache_dir(*parts: str) -> Path:
    """The cache directory (created), or a sub-folder of it."""
    root = Path(os.environ.get("MMLLM_CACHE") or user_cache_dir("mmllm"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(module: str, pip_name: str) -> Path:
    """Folder of an installed weights package, found without importing it.

    Weight packages are installed with ``--no-deps`` (their own dependencies are runtimes we do
    not use), so importing them could fail: ``find_spec`` locates them without running them.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"package '{pip_name}' is not installed; install it with "
            f"`pip install --no-deps {pip_name}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))
