"""Strategies are the chaincode's rules plus client-side options; users can add one."""

from __future__ import annotations

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker import strategies
from fedfabric.fl_worker.strategies import FitConfig, Strategy, get_strategy

GLOBAL = {"w": np.zeros(3, np.float32)}
CLIP = 3 / np.sqrt(54)


def updates(*rows, samples=None):
    samples = samples or [1] * len(rows)
    return [
        fl.Update(f"u{i}", {"w": np.array(r, np.float32)}, n)
        for i, (r, n) in enumerate(zip(rows, samples, strict=True))
    ]


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("fedavg", {}, [2.0, 2.0, 2.0]),
        ("median", {}, [1.0, 2.0, 1.0]),
        ("trimmed-mean", {"beta": 0.34}, [1.0, 2.0, 1.0]),
        # scores (n - f - 2 = 1 nearest): u0 2, u1 2, u2 32; the tie goes to u0
        ("krum", {"f": 0}, [0.0, 2.0, 0.0]),
        # only u2 (norm sqrt(54)) exceeds 3 and is scaled by CLIP = 3 / sqrt(54)
        (
            "norm-clipping",
            {"clip_norm": 3.0},
            [(1 + 5 * CLIP) / 3, (4 + 2 * CLIP) / 3, (1 + 5 * CLIP) / 3],
        ),
    ],
)
def test_each_strategy_aggregates_with_the_chaincode_rule(name, params, expected):
    rows = updates([0, 2, 0], [1, 2, 1], [5, 2, 5])

    model = get_strategy(name, **params).rule.aggregate(GLOBAL, rows).model["w"]

    assert model == pytest.approx(expected, abs=1e-6)


def test_multi_krum_leaves_out_the_outlier():
    rows = updates([1, 1, 1], [1.1, 1, 1], [0.9, 1, 1], [1, 1.1, 1], [-50, -50, -50])

    result = get_strategy("multi-krum", f=1, m=4).rule.aggregate(GLOBAL, rows)

    assert result.used == ("u0", "u1", "u2", "u3")
    assert [e.update_id for e in result.excluded] == ["u4"]


def test_fedprox_trains_with_mu_and_aggregates_like_fedavg():
    prox = get_strategy("fedprox", mu=0.5)

    assert prox.fit_config(3) == FitConfig(proximal_mu=0.5)
    assert prox.aggregation() == {"rule": "fedavg", "params": {}}
    assert get_strategy("fedavg").fit_config(1) == FitConfig(proximal_mu=0.0)


def test_the_aggregation_field_is_what_the_task_spec_accepts():
    strategy = get_strategy("multi-krum", f=1, m=3, clip_norm=2.0)

    assert strategy.aggregation() == {
        "rule": "multi-krum",
        "params": {"clip_norm": 2.0, "f": 1, "m": 3},
    }
    assert strategy.min_updates == 5


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        (
            "fedmean",
            {},
            "unknown strategy 'fedmean'; valid names: centered-clip, fedavg, fedprox, krum",
        ),
        ("krum", {"beta": 0.1}, "aggregation rule 'krum' got unknown parameters ['beta']"),
        ("trimmed-mean", {"beta": 0.7}, "parameter 'beta' must be >= 0.0 and < 0.5"),
        ("fedprox", {"mu": -1}, "'mu' must be a number >= 0"),
    ],
)
def test_bad_names_and_parameters_are_clear_errors(name, params, message):
    with pytest.raises(ValueError) as caught:
        get_strategy(name, **params)

    assert message in str(caught.value)


class SmallestNorm(fl.Rule):
    """A user's rule: keep only the update with the smallest norm."""

    name = "smallest-norm"

    def combine(self, deltas, weights):
        norms = [int(np.abs(row).sum()) for row in deltas]
        best = norms.index(min(norms))
        return fl.Combination(deltas[best], (best,))


class WarmupProx(Strategy):
    """A user's client-side strategy: FedProx from round 2 on."""

    name = "warmup-prox"

    def __init__(self, *, mu: float = 0.1) -> None:
        super().__init__(SmallestNorm())
        self.mu = mu

    def fit_config(self, round_no):
        return FitConfig(proximal_mu=self.mu if round_no > 1 else 0.0)


def test_a_users_strategy_aggregates_with_its_own_rule_and_configures_clients():
    strategy = WarmupProx(mu=0.3)

    result = strategy.rule.aggregate(GLOBAL, updates([3, 3, 3], [1, -1, 0], [2, 2, 2]))

    assert result.used == ("u1",) and list(result.model["w"]) == [1.0, -1.0, 0.0]
    assert [strategy.fit_config(r).proximal_mu for r in (1, 2)] == [0.0, 0.3]
    assert strategy.aggregation() == {"rule": "smallest-norm", "params": {}}


def test_a_registered_user_strategy_is_found_by_name(monkeypatch):
    registry = strategies.CLIENT_STRATEGIES
    monkeypatch.setattr(registry, "_classes", dict(registry._classes))
    registry.register(WarmupProx)

    strategy = get_strategy("warmup-prox", mu=0.2)

    assert isinstance(strategy, WarmupProx) and "warmup-prox" in strategies.strategy_names()
    with pytest.raises(ValueError, match="already registered"):
        registry.register(WarmupProx)


def test_a_rule_is_not_wrapped_again_on_the_client_side():
    strategy = get_strategy("median", clip_norm=2.0)

    assert type(strategy) is Strategy and isinstance(strategy.rule, fl.Median)
    assert set(strategies.CLIENT_STRATEGIES.names()) == {"fedprox", "norm-clipping"}
