"""The reducer contract: ``reducer(tokens, text) -> tokens`` with an output count known in advance.

``Reducer`` is the protocol every reducer satisfies (third-party ones too). ``BaseReducer`` is the
helper mmllm's own reducers inherit: a dataclass of settings (so the registry can list and parse
them), declared side information (``needs``) checked by name, and a check that the real output
length equals :meth:`output_len` -- the property the processor and vLLM rely on.
"""

from __future__ import annotations

import abc
from typing import ClassVar, Protocol, runtime_checkable

from mmllm.errors import BudgetError
from mmllm.reduction.types import TextContext, VisualTokens


@runtime_checkable
class Reducer(Protocol):
    """Anything that maps visual tokens to fewer visual tokens, count known before encoding."""

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int: ...

    def __call__(self, tokens: VisualTokens, text: TextContext | None = None) -> VisualTokens: ...


class BaseReducer(abc.ABC):
    """Shared behaviour of mmllm's reducers; subclasses are ``@dataclass`` es of their settings.

    Class attributes a subclass sets:
        name: the registry name (set by ``@register``).
        paper: the paper (and arXiv id) the method follows.
        needs: side-information fields it cannot work without (``"cls"``, ``"keys"``, ...).
        uses_text: whether it reads the :class:`TextContext`.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    uses_text: ClassVar[bool] = False

    def required_fields(self) -> tuple[str, ...]:
        """Side information this instance needs (may depend on its settings)."""
        return self.needs

    @abc.abstractmethod
    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        """Tokens out for ``n_in`` tokens in; raises :class:`BudgetError` if impossible."""

    @abc.abstractmethod
    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        """The method itself; called by ``__call__`` after the side-information checks."""

    @property
    def spec(self) -> str:
        """The spec string that rebuilds this reducer (``registry.build(r.spec)``)."""
        from mmllm.reduction.registry import to_spec

        return to_spec(self)

    def __call__(self, tokens: VisualTokens, text: TextContext | None = None) -> VisualTokens:
        for name in self.required_fields():
            tokens.require(name, by=f"reducer '{self.spec}'")
        grid = tokens.grid if tokens.is_full_grid else None
        expected = self.output_len(tokens.num_tokens, grid)
        out = self.reduce(tokens, text)
        if out.num_tokens != expected:
            raise RuntimeError(
                f"reducer '{self.spec}' returned {out.num_tokens} tokens but output_len promised "
                f"{expected}: this is a bug in the reducer"
            )
        return out


def check_budget(method: str, k: int, n_in: int) -> int:
    """Validate a keep-count ``k`` against ``n_in`` input tokens and return it."""
    if k <= 0:
        raise BudgetError(f"{method}: the budget must be a positive token count, got {k}")
    if k > n_in:
        raise BudgetError(
            f"{method}: budget {k} is larger than the {n_in} tokens it receives; "
            f"choose a budget <= {n_in} (or use 'identity' to keep all tokens)"
        )
    return k
