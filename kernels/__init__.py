"""Fast paths for reduction hot spots (Triton on GPU, vectorised torch on CPU).

Each operation has one dispatch function and is tested against the plain reference in
``mmllm.reduction``. The kernels themselves arrive with the kernels issue; nothing here
changes a result.
"""

__all__: list[str] = []
