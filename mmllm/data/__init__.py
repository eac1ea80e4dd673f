"""Data: the generated VQA/caption set, loading any folder in the data format, answer scoring."""

from mmllm.data.normalize import exact_match, normalize_answer

__all__ = ["exact_match", "normalize_answer"]
