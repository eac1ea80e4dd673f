"""Same answers locally and served: greedy answers of local chat vs the vLLM server, per sample."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm


@dataclass
class Agreement:
    """How often the served model's greedy answer equals local chat's, and where it did not."""

    n: int
    agree: int
    mismatches: list[dict] = field(default_factory=list)
    served_correct: int = 0
    local_correct: int = 0

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else 0.0

    def summary(self) -> dict:
        return {
            "n": self.n,
            "agreement": self.rate,
            "local_accuracy": self.local_correct / self.n if self.n else 0.0,
            "served_accuracy": self.served_correct / self.n if self.n else 0.0,
            "mismatches": self.mismatches,
        }


def served_agreement(
    server: str,
    samples: Sequence,
    model=None,
    max_new_tokens: int = 16,
    progress: bool = True,
) -> Agreement:
    """Ask both the local ``model`` (default: shipped) and ``server`` each sample's question.

    Each sample is a :class:`mmllm.data.dataset.Sample`; the prompt is its conversation without
    the final assistant turn. The local model must run the reduction the server runs.
    """
    from mmllm.chat import reply
    from mmllm.data.normalize import exact_match
    from mmllm.default_model import load_model
    from mmllm.serving.client import remote_reply

    model = model or load_model()
    result = Agreement(n=len(samples), agree=0)
    for sample in tqdm(samples, desc="local vs served", disable=not progress):
        prompt = (
            sample.messages[:-1] if sample.messages[-1]["role"] == "assistant" else sample.messages
        )
        local = reply(model, prompt, sample.images, max_new_tokens)
        served = remote_reply(server, prompt, sample.images, max_new_tokens)
        if local == served:
            result.agree += 1
        else:
            result.mismatches.append(
                {"id": sample.extra.get("id"), "local": local, "served": served}
            )
        if sample.answer is not None:
            result.local_correct += exact_match(local, sample.answer)
            result.served_correct += exact_match(served, sample.answer)
    return result
