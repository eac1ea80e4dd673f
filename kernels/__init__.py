"""Fast paths for the reduction hot spots: Triton on GPU, vectorised torch/NumPy on CPU.

One dispatch function per operation (:mod:`mmllm.kernels.ops`), each matching the plain
reference in :mod:`mmllm.reduction` and wired into the reducers by default; ``MMLLM_KERNELS``
(:mod:`mmllm.kernels.dispatch`) forces a backend.
"""

from mmllm.kernels.ops import (
    bipartite_merge,
    cosine_max_min,
    dpp_greedy_map,
    greedy_max_min,
    query_attention,
    query_topk,
)

__all__ = [
    "bipartite_merge",
    "cosine_max_min",
    "dpp_greedy_map",
    "greedy_max_min",
    "query_attention",
    "query_topk",
]
