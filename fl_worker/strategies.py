"""Federated strategies: how workers train and which on-chain rule aggregates their updates.

A `Strategy` pairs two things:

- `Strategy.fit_config`: the options workers train with in a round (`FitConfig`; FedProx's
  proximal term lives here, on the client);
- `Strategy.rule`: a `fedfabric.chaincode.fl` aggregation rule. That rule is the only
  aggregation code there is: every endorsing peer runs it in ``CommitAggregate``, and the
  in-memory baseline runs it too, so nothing here re-implements a rule.

Strategies by name (`get_strategy`)::

    fedavg         [clip_norm]          mean weighted by sample counts
    fedprox        mu [clip_norm]       FedAvg aggregation; workers add mu/2 ||w - w_global||^2
    median         [clip_norm]          coordinate-wise median
    trimmed-mean   beta [clip_norm]     per coordinate, drop the beta tails, average the rest
    krum           f [clip_norm]        the update with the best Krum score
    multi-krum     f, m [clip_norm]     mean of the m best Krum scores
    norm-clipping  clip_norm            FedAvg of updates clipped to L2 norm clip_norm
    <any rule registered with fedfabric.chaincode.fl.register_strategy>

To add a strategy, subclass `Strategy` (override `fit_config`, or pass your own rule) and,
to make it available by name, decorate it with `register`::

    @register
    class WarmupProx(Strategy):
        name = "warmup-prox"

        def __init__(self, *, mu: float = 0.1) -> None:
            super().__init__(fl.FedAvg())
            self.mu = mu

        def fit_config(self, round_no: int) -> FitConfig:
            return FitConfig(proximal_mu=self.mu if round_no > 1 else 0.0)

A new aggregation rule is a `fedfabric.chaincode.fl.Strategy` subclass (override
``combine``); register it there so the chaincode servers can run it, and it is available
here under its name. Errors: `get_strategy` raises ValueError for an unknown name or bad
parameters, naming what is valid.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from fedfabric.chaincode import fl


@dataclass(frozen=True)
class FitConfig:
    """What a worker needs to know to train in one round (beyond the run's settings)."""

    proximal_mu: float = 0.0


class Strategy:
    """A strategy: client-side training options plus the on-chain aggregation `rule`.

    Subclasses set `name` and either build their rule in ``__init__`` or override
    `fit_config`; the round loop (worker, coordinator, baseline) lives elsewhere, once.
    """

    name: ClassVar[str] = ""

    def __init__(self, rule: fl.Strategy) -> None:
        self.rule = rule

    def fit_config(self, round_no: int) -> FitConfig:
        """Options for the workers' local training in round `round_no` (1-based)."""
        return FitConfig()

    @property
    def min_updates(self) -> int:
        """The fewest updates the aggregation rule accepts."""
        return self.rule.min_updates

    def aggregation(self) -> dict[str, Any]:
        """The task's ``aggregation`` field: ``{"rule": name, "params": {...}}``."""
        return {"rule": self.rule.name, "params": self.rule.params()}

    def aggregate(
        self, global_model: Mapping[str, np.ndarray], updates: Sequence[fl.Update]
    ) -> fl.AggregateResult:
        """Aggregate in memory with the rule, exactly as the endorsing peers do."""
        return self.rule.aggregate(global_model, updates)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule.name!r}, params={self.rule.params()})"


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make a `Strategy` subclass available to `get_strategy` by `name`."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"strategy name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


@register
class FedAvg(Strategy):
    """Federated averaging (McMahan et al.): updates weighted by sample counts."""

    name = "fedavg"

    def __init__(self, *, clip_norm: float | None = None) -> None:
        super().__init__(fl.FedAvg(clip_norm=clip_norm))


@register
class FedProx(Strategy):
    """FedProx (Li et al.): FedAvg aggregation; workers add ``mu/2 ||w - w_global||^2``."""

    name = "fedprox"

    def __init__(self, *, mu: float = 0.01, clip_norm: float | None = None) -> None:
        if isinstance(mu, bool) or not isinstance(mu, int | float) or mu < 0:
            raise ValueError(f"fedprox parameter 'mu' must be a number >= 0, got {mu!r}")
        super().__init__(fl.FedAvg(clip_norm=clip_norm))
        self.mu = float(mu)

    def fit_config(self, round_no: int) -> FitConfig:
        return FitConfig(proximal_mu=self.mu)


@register
class Median(Strategy):
    """Coordinate-wise median of the updates."""

    name = "median"

    def __init__(self, *, clip_norm: float | None = None) -> None:
        super().__init__(fl.Median(clip_norm=clip_norm))


@register
class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the `beta` fraction at each end."""

    name = "trimmed-mean"

    def __init__(self, *, beta: float = 0.1, clip_norm: float | None = None) -> None:
        super().__init__(fl.TrimmedMean(beta=beta, clip_norm=clip_norm))


@register
class Krum(Strategy):
    """Krum (Blanchard et al.), tolerating `f` Byzantine updates."""

    name = "krum"

    def __init__(self, *, f: int = 0, clip_norm: float | None = None) -> None:
        super().__init__(fl.Krum(f=f, clip_norm=clip_norm))


@register
class MultiKrum(Strategy):
    """Multi-Krum: sample-weighted mean of the `m` updates with the best Krum scores."""

    name = "multi-krum"

    def __init__(self, *, f: int = 0, m: int = 1, clip_norm: float | None = None) -> None:
        super().__init__(fl.MultiKrum(f=f, m=m, clip_norm=clip_norm))


@register
class NormClipping(Strategy):
    """FedAvg of updates first scaled down to L2 norm at most `clip_norm`."""

    name = "norm-clipping"

    def __init__(self, *, clip_norm: float = 1.0) -> None:
        super().__init__(fl.FedAvg(clip_norm=clip_norm))


def strategy_names() -> tuple[str, ...]:
    """Every name `get_strategy` accepts: the strategies here and any registered rule."""
    return tuple(sorted(set(_REGISTRY) | set(fl.strategy_names())))


def get_strategy(name: str, **params: Any) -> Strategy:
    """The strategy called `name`, built with keyword `params`.

    A name registered here wins; otherwise a rule registered with
    `fedfabric.chaincode.fl.register_strategy` is wrapped as a plain `Strategy`.
    Raises ValueError for an unknown name (listing the valid ones) or bad parameters.

    Example::

        strategy = get_strategy("multi-krum", f=2, m=5)
        task["aggregation"] = strategy.aggregation()
    """
    cls = _REGISTRY.get(name)
    try:
        if cls is not None:
            accepted = sorted(set(inspect.signature(cls.__init__).parameters) - {"self"})
            unknown = sorted(set(params) - set(accepted))
            if unknown:
                raise ValueError(
                    f"strategy {name!r} got unknown parameters {unknown}; accepted: {accepted}"
                )
            return cls(**params)
        if name in fl.strategy_names():
            return Strategy(fl.make_strategy(name, params))
    except fl.AggregationError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from exc
    raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(strategy_names())}")
