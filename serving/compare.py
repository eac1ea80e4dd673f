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


def _prompt(sample) -> list[dict]:
    """The sample's conversation without the final assistant turn."""
    last = sample.messages[-1]["role"] == "assistant"
    return sample.messages[:-1] if last else sample.messages


def local_answers(
    samples: Sequence, model=None, max_new_tokens: int = 16, progress: bool = True
) -> list[str]:
    """Greedy answers of local chat (default model: the shipped one), with reduced tokens packed
    as vLLM serves them (no source positions, no proportional attention: see mmllm.layout)."""
    from mmllm.chat import reply
    from mmllm.default_model import load_model
    from mmllm.layout import packed_layout

    model = model or load_model()
    with packed_layout(model):
        return [
            reply(model, _prompt(s), s.images, max_new_tokens)
            for s in tqdm(samples, desc="local", disable=not progress)
        ]


def served_agreement(
    server: str,
    samples: Sequence,
    model=None,
    max_new_tokens: int = 16,
    progress: bool = True,
    local: Sequence[str] | None = None,
) -> Agreement:
    """Ask both the local ``model`` (default: shipped) and ``server`` each sample's question.

    Each sample is a :class:`mmllm.data.dataset.Sample`. The local model must run the reduction
    the server runs; ``local`` gives its answers when already computed (one set, many servers).
    """
    from mmllm.data.normalize import exact_match
    from mmllm.serving.client import remote_reply

    if local is None:
        local = local_answers(samples, model, max_new_tokens, progress)
    result = Agreement(n=len(samples), agree=0)
    pairs = list(zip(samples, local, strict=True))
    for sample, local_answer in tqdm(pairs, desc="served", disable=not progress):
        served = remote_reply(server, _prompt(sample), sample.images, max_new_tokens)
        if local_answer == served:
            result.agree += 1
        else:
            result.mismatches.append(
                {"id": sample.extra.get("id"), "local": local_answer, "served": served}
            )
        if sample.answer is not None:
            result.local_correct += exact_match(local_answer, sample.answer)
            result.served_correct += exact_match(served, sample.answer)
    return result
