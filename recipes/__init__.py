"""YAML recipes shipped with mmllm (data files; see ``mmllm.recipes.path``)."""

from importlib import resources
from pathlib import Path


def available() -> list[str]:
    """Names of the bundled recipes (file names without ``.yaml``)."""
    return sorted(
        p.name[:-5] for p in resources.files(__name__).iterdir() if p.name.endswith(".yaml")
    )


def path(name: str) -> Path:
    """Filesystem path of a bundled recipe."""
    return Path(str(resources.files(__name__).joinpath(f"{name}.yaml")))
