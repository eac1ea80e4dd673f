"""The one registry of reducers, and the spec-string language that builds them.

Spec grammar::

    spec   := stage ("+" stage)*
    stage  := name [":" args]
    args   := arg ("," arg)*
    arg    := value | key "=" value

Positional values fill the reducer's settings in declaration order, so ``divprune:64`` equals
``divprune:k=64``. Stages chain left to right: ``tome:r=0.5+divprune:64``.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from collections.abc import Callable
from typing import Any

from mmllm.errors import SpecError
from mmllm.reduction.base import BaseReducer
from mmllm.reduction.types import TextContext, VisualTokens

REDUCERS: dict[str, type[BaseReducer]] = {}


def register(name: str) -> Callable[[type[BaseReducer]], type[BaseReducer]]:
    """Class decorator: register a dataclass reducer under ``name`` (duplicates are refused)."""

    def wrap(cls: type[BaseReducer]) -> type[BaseReducer]:
        if name in REDUCERS:
            raise ValueError(f"reducer '{name}' is already registered by {REDUCERS[name]!r}")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a @dataclass to be registered")
        cls.name = name
        REDUCERS[name] = cls
        return cls

    return wrap


class Chain(BaseReducer):
    """Reducers applied left to right; ``output_len`` composes the stages' counts."""

    def __init__(self, stages: list[BaseReducer]):
        if not stages:
            raise SpecError("a chain needs at least one stage")
        self.stages = list(stages)

    def required_fields(self) -> tuple[str, ...]:
        return self.stages[0].required_fields()

    @property
    def uses_text(self) -> bool:  # type: ignore[override]
        return any(stage.uses_text for stage in self.stages)

    def output_len(self, n_in: int, grid: tuple[int, int] | None = None) -> int:
        n = n_in
        for i, stage in enumerate(self.stages):
            n = stage.output_len(n, grid if i == 0 else None)
        return n

    def reduce(self, tokens: VisualTokens, text: TextContext | None) -> VisualTokens:
        for stage in self.stages:
            tokens = stage(tokens, text)
        return tokens

    @property
    def spec(self) -> str:
        return "+".join(stage.spec for stage in self.stages)

    def __repr__(self) -> str:
        return f"Chain({self.spec!r})"


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(cls: type[BaseReducer], f: dataclasses.Field, raw: str) -> Any:
    parse = f.metadata.get("parse")
    hint = _field_types(cls)[f.name]
    try:
        if parse is not None:
            return parse(raw)
        if hint is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        return raw
    except ValueError as err:
        detail = f" ({err})" if str(err) and str(err) != raw else ""
        raise SpecError(
            f"'{cls.name}': parameter '{f.name}' expects {_type_name(cls, f)}, got '{raw}'{detail}"
        ) from None


def _type_name(cls: type, f: dataclasses.Field) -> str:
    if "type" in f.metadata:
        return f.metadata["type"]
    hint = _field_types(cls)[f.name]
    return getattr(hint, "__name__", str(hint))


def _parse_stage(stage: str) -> BaseReducer:
    name, _, argstr = stage.strip().partition(":")
    name = name.strip()
    if name not in REDUCERS:
        close = difflib.get_close_matches(name, REDUCERS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(
            f"unknown reducer '{name}'.{hint} Known: {', '.join(sorted(REDUCERS))} "
            "(run `mmllm reducers` for their parameters)"
        )
    cls = REDUCERS[name]
    fields = [f for f in dataclasses.fields(cls) if f.init]
    by_name = {f.name: f for f in fields}
    kwargs: dict[str, Any] = {}
    args = [a.strip() for a in argstr.split(",")] if argstr.strip() else []
    for position, arg in enumerate(args):
        if not arg:
            raise SpecError(f"'{stage}': empty argument")
        if "=" in arg:
            key, _, raw = arg.partition("=")
            key = key.strip()
            if key not in by_name:
                raise SpecError(
                    f"'{name}' has no parameter '{key}'; its parameters: "
                    f"{', '.join(by_name) or 'none'}"
                )
            f = by_name[key]
        else:
            if any("=" in a for a in args[:position]):
                raise SpecError(f"'{stage}': positional value '{arg}' after a keyword argument")
            if position >= len(fields):
                raise SpecError(
                    f"'{name}' takes at most {len(fields)} positional value(s), got '{argstr}'"
                )
            f = fields[position]
        if f.name in kwargs:
            raise SpecError(f"'{stage}': parameter '{f.name}' given twice")
        kwargs[f.name] = _coerce(cls, f, raw.strip() if "=" in arg else arg)
    missing = [
        f.name
        for f in fields
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise SpecError(f"'{name}' needs parameter(s) {', '.join(missing)}: e.g. '{example(cls)}'")
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except ValueError as err:
        raise SpecError(f"'{stage}': {err}") from None


def build(spec: str) -> BaseReducer:
    """Build a reducer (or a :class:`Chain`) from a spec such as ``pool:2x2+random:16``."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty reducer spec; use 'identity' to keep every token")
    stages = [_parse_stage(s) for s in spec.split("+")]
    return stages[0] if len(stages) == 1 else Chain(stages)


def to_spec(reducer: BaseReducer) -> str:
    """The canonical spec string of a registered dataclass reducer."""
    parts = []
    for f in dataclasses.fields(reducer):
        if not f.init:
            continue
        value = getattr(reducer, f.name)
        fmt = f.metadata.get("format")
        parts.append(f"{f.name}={fmt(value) if fmt else value}")
    return reducer.name + (":" + ",".join(parts) if parts else "")


def example(cls: type[BaseReducer]) -> str:
    return cls.example if hasattr(cls, "example") else cls.name


def describe() -> list[dict[str, Any]]:
    """One record per registered reducer: name, summary, parameters, paper, side information."""
    rows = []
    for name in sorted(REDUCERS):
        cls = REDUCERS[name]
        params = []
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            default = None if f.default is dataclasses.MISSING else f.default
            params.append(
                {
                    "name": f.name,
                    "type": _type_name(cls, f),
                    "default": default,
                    "required": f.default is dataclasses.MISSING,
                    "help": f.metadata.get("help", ""),
                }
            )
        doc = (cls.__doc__ or "").strip().splitlines()
        rows.append(
            {
                "name": name,
                "summary": doc[0] if doc else "",
                "example": example(cls),
                "params": params,
                "paper": cls.paper,
                "needs": list(cls.needs),
                "uses_text": cls.uses_text,
            }
        )
    return rows
