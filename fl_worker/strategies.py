"""Federated strategies: an on-chain aggregation rule, plus what workers do differently.

The aggregation itself is always a `fedfabric.chaincode.fl` rule (``fedavg``, ``median``,
``trimmed-mean``, ``krum``, ``multi-krum``, ``centered-clip``, or one registered with
`fedfabric.chaincode.fl.register_rule`): every endorsing peer runs it in ``AdvanceRound``,
so it is never re-implemented here. A `Strategy` adds only the client side:

    <any rule name>   the rule's own parameters, workers train plainly
    fedprox           mu [clip_norm]   fedavg; workers add mu/2 ||w - w_global||^2 (FedProx)
    norm-clipping     clip_norm        fedavg of updates clipped to L2 norm clip_norm

`get_strategy(name, **params)` builds one. A new client-side strategy subclasses `Strategy`,
overrides `fit_config`, and is made available by name with `CLIENT_STRATEGIES.register`::

    @CLIENT_STRATEGIES.register
    class WarmupProx(Strategy):
        name = "warmup-prox"

        def __init__(self, *, mu: float = 0.1) -> None:
            super().__init__(fl.make_rule("fedavg"))
            self.mu = mu

        def fit_config(self, round_no: int) -> FitConfig:
            return FitConfig(proximal_mu=self.mu if round_no > 1 else 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedfabric.chaincode import fl


@dataclass(frozen=True)
class FitConfig:
    """What a worker needs to know to train in one round (beyond the run's settings)."""

    proximal_mu: float = 0.0


class Strategy:
    """An on-chain aggregation `rule` and the workers' training options (`fit_config`)."""

    name = ""

    def __init__(self, rule: fl.Rule) -> None:
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

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule.name!r}, params={self.rule.params()})"


CLIENT_STRATEGIES: fl.Registry[Strategy] = fl.Registry("strategy", ValueError)


@CLIENT_STRATEGIES.register
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


@CLIENT_STRATEGIES.register
class NormClipping(Strategy):
    """FedAvg of updates first scaled down to L2 norm at most `clip_norm`."""

    name = "norm-clipping"

    def __init__(self, *, clip_norm: float = 1.0) -> None:
        super().__init__(fl.FedAvg(clip_norm=clip_norm))


def strategy_names() -> tuple[str, ...]:
    """Every name `get_strategy` accepts: the client-side strategies and every rule."""
    return tuple(sorted(set(CLIENT_STRATEGIES.names()) | set(fl.rule_names())))


def get_strategy(name: str, **params: Any) -> Strategy:
    """The strategy called `name`, built with keyword `params`.

    A client-side strategy of that name wins; otherwise the rule `name` with `params`, and
    plain training. Raises ValueError for an unknown name (listing the valid ones) or bad
    parameters.

    Example::

        strategy = get_strategy("multi-krum", f=2, m=5)
        task["aggregation"] = strategy.aggregation()
    """
    if name in CLIENT_STRATEGIES:
        return CLIENT_STRATEGIES.make(name, params)
    if name not in fl.rule_names():
        raise ValueError(f"unknown strategy {name!r}; valid names: {', '.join(strategy_names())}")
    try:
        return Strategy(fl.make_rule(name, params))
    except fl.AggregationError as exc:
        raise ValueError(f"strategy {name!r}: {exc}") from exc
