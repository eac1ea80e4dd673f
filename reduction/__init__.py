"""Token reduction between the vision encoder and the LLM.

Every method is a :class:`Reducer` built from a spec string by :func:`build`::

    from mmllm.reduction import build
    reducer = build("pool:2x2")
    reducer.output_len(196)         # 49, known before any image is encoded
    reduced = reducer(visual_tokens)

``mmllm reducers`` lists every registered method with its parameters, paper and side information.
"""

from mmllm.reduction import baselines as _baselines  # noqa: F401  (registers methods)
from mmllm.reduction import coverage as _coverage  # noqa: F401
from mmllm.reduction import divprune as _divprune  # noqa: F401
from mmllm.reduction import dpp as _dpp  # noqa: F401
from mmllm.reduction import evit as _evit  # noqa: F401
from mmllm.reduction import focus as _focus  # noqa: F401
from mmllm.reduction import importance as _importance  # noqa: F401
from mmllm.reduction import in_llm as _in_llm  # noqa: F401
from mmllm.reduction import kmeans as _kmeans  # noqa: F401
from mmllm.reduction import pitome as _pitome  # noqa: F401
from mmllm.reduction import recycle as _recycle  # noqa: F401
from mmllm.reduction import tome as _tome  # noqa: F401
from mmllm.reduction import visionzip as _visionzip  # noqa: F401
from mmllm.reduction.base import BaseReducer, Reducer, check_budget
from mmllm.reduction.registry import REDUCERS, Chain, build, describe, register
from mmllm.reduction.types import SIDE_INFO_PROVIDERS, TextContext, VisualTokens

__all__ = [
    "REDUCERS",
    "SIDE_INFO_PROVIDERS",
    "BaseReducer",
    "Chain",
    "Reducer",
    "TextContext",
    "VisualTokens",
    "build",
    "check_budget",
    "describe",
    "register",
]
