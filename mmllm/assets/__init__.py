"""Files bundled with mmllm: sample photos (CC0, see README.md here)."""

from importlib import resources
from pathlib import Path


def asset_path(name: str) -> Path:
    """Filesystem path of a bundled asset such as ``cat.jpg``."""
    return Path(str(resources.files(__name__).joinpath(name)))
