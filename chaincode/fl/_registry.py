"""Named, pluggable classes built from keyword parameters: rules, strategies, attacks.

A `Registry` maps a class's ``name`` to the class and builds instances from a name and a
parameter mapping, refusing unknown names and unknown parameters with one clear message that
lists what is valid. The error type is the caller's (`AggregationError` for rules, ValueError
on the worker side).

Example::

    RULES = Registry("aggregation rule", AggregationError)

    @RULES.register
    class Mean(Rule):
        name = "mean"

    rule = RULES.make("mean", {"clip_norm": 2.0})
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Classes by their ``name`` attribute; `make` builds one with keyword parameters."""

    def __init__(self, kind: str, error: Callable[[str], Exception]) -> None:
        self.kind = kind
        self.error = error
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make `cls` available under ``cls.name`` (which must be new)."""
        name = getattr(cls, "name", "")
        if not name or name in self._classes:
            raise self.error(f"{self.kind} name {name!r} is empty or already registered")
        self._classes[name] = cls
        return cls

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._classes))

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def make(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """An instance of the class registered as `name`, built with keyword `params`.

        Raises the registry's error for an unknown name, unknown parameters, or parameters
        the class refuses (a TypeError from its constructor).
        """
        cls = self._classes.get(name)
        if cls is None:
            raise self.error(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        params = dict(params or {})
        accepted = {
            p.name
            for p in inspect.signature(cls).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise self.error(
                f"{self.kind} {name!r} got unknown parameters {unknown}; "
                f"accepted: {sorted(accepted)}"
            )
        try:
            return cls(**params)
        except TypeError as exc:
            raise self.error(f"{self.kind} {name!r}: {exc}") from exc
