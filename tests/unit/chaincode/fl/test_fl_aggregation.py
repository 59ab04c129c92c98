"""Aggregation rules against hand-computed tensors, and the fixed-point arithmetic under them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedfabric.chaincode.fl import (
    AggregationError,
    Combination,
    Rule,
    Update,
    krum_scores,
    make_rule,
    register_rule,
    rule_names,
)
from fedfabric.chaincode.fl import _fixedpoint as fx

ULP = 2.0**-24


def updates(*rows: list[float], samples: list[int] | None = None) -> list[Update]:
    samples = samples or [1] * len(rows)
    return [
        Update(f"u{i}", {"w": np.array(row, dtype=np.float32)}, n)
        for i, (row, n) in enumerate(zip(rows, samples, strict=True))
    ]


def zeros(n: int) -> dict[str, np.ndarray]:
    return {"w": np.zeros(n, dtype=np.float32)}


def test_fedavg_weights_by_samples():
    result = make_rule("fedavg").aggregate(
        {"w": np.array([1.0, 1.0], dtype=np.float32)},
        updates([1.0, 2.0], [4.0, -1.0], samples=[1, 3]),
    )
    np.testing.assert_array_equal(result.model["w"], [1 + 13 / 4, 1 - 1 / 4])
    assert result.used == ("u0", "u1") and result.excluded == () and result.clipped == ()


def test_median_odd_and_even_counts():
    odd = make_rule("median").aggregate(zeros(2), updates([1, -7], [5, 0], [3, 2]))
    np.testing.assert_array_equal(odd.model["w"], [3, 0])
    even = make_rule("median").aggregate(zeros(1), updates([1], [2], [3], [10]))
    np.testing.assert_array_equal(even.model["w"], [2.5])


def test_trimmed_mean_drops_beta_n_from_each_side_per_coordinate():
    rule = make_rule("trimmed-mean", {"beta": 0.2})
    result = rule.aggregate(zeros(2), updates([1, 50], [2, -50], [3, 1], [4, 2], [100, 3]))
    np.testing.assert_array_equal(result.model["w"], [3, 2])
    assert result.used == ("u0", "u1", "u2", "u3", "u4")


def test_centered_clip_bounds_a_far_row_by_the_median_deviation():
    # Median 2; deviations -2, 0, 98 clipped to the median norm 2: mean 0, so 2 (FedAvg: 34).
    result = make_rule("centered-clip").aggregate(zeros(1), updates([0], [2], [100]))
    np.testing.assert_array_equal(result.model["w"], [2.0])
    wider = make_rule("centered-clip", {"radius": 2.0}).aggregate(
        zeros(1), updates([0], [2], [100])
    )
    np.testing.assert_allclose(wider.model["w"], [2 + (-2 + 0 + 4) / 3], atol=ULP)


def test_centered_clip_leaves_rows_as_close_as_one_another_at_their_mean():
    rows = updates([1.0, 1.0, 3.0], [1.5, 0.5, 3.0], [0.5, 1.5, 3.0])
    result = make_rule("centered-clip").aggregate(zeros(3), rows)
    np.testing.assert_allclose(result.model["w"], [1.0, 1.0, 3.0], atol=4 * ULP)


KRUM_ROWS = ([0.0], [1.0], [2.0], [3.0], [100.0])


def test_krum_scores_are_exact_integers():
    deltas = np.stack([fx.to_fixed(np.array(r)) for r in KRUM_ROWS])
    # n - f - 2 = 2 nearest: 0 -> 1+4, 1 -> 1+1, 2 -> 1+1, 3 -> 1+4, 100 -> 97**2 + 98**2.
    assert krum_scores(deltas, f=1) == [s << 48 for s in (5, 2, 2, 5, 97**2 + 98**2)]


def test_krum_picks_the_lowest_score_and_breaks_ties_by_order():
    result = make_rule("krum", {"f": 1}).aggregate(zeros(1), updates(*KRUM_ROWS))
    np.testing.assert_array_equal(result.model["w"], [1.0])
    assert result.used == ("u1",)
    assert [e.update_id for e in result.excluded] == ["u0", "u2", "u3", "u4"]
    assert "ranks 2 of 5" in result.excluded[1].reason


def test_multi_krum_averages_the_m_best_weighted_by_samples():
    rule = make_rule("multi-krum", {"f": 1, "m": 3})
    result = rule.aggregate(zeros(1), updates(*KRUM_ROWS, samples=[1, 1, 2, 1, 50]))
    np.testing.assert_array_equal(result.model["w"], [(0 + 1 + 4) / 4])
    assert result.used == ("u0", "u1", "u2")
    assert [e.update_id for e in result.excluded] == ["u3", "u4"]
    assert result.record()["excluded"][1]["id"] == "u4"


def test_norm_clipping_pre_step_bounds_each_update():
    rule = make_rule("fedavg", {"clip_norm": 1.0})
    result = rule.aggregate(zeros(2), updates([3, 4], [0.3, 0.4]))
    assert result.clipped == ("u0",)
    np.testing.assert_allclose(result.model["w"], [(0.6 + 0.3) / 2, (0.8 + 0.4) / 2], atol=4 * ULP)


def test_clip_never_exceeds_the_bound():
    rng = np.random.default_rng(3)
    bound = fx.fixed_scalar(0.5)
    for _ in range(20):
        v = fx.to_fixed(rng.standard_normal(257) * 100)
        clipped, changed = fx.clip_to_norm(v, bound)
        assert changed and fx.sum_squares(clipped) <= bound * bound
        assert math.isqrt(fx.sum_squares(clipped)) >= bound - 300  # and loses almost nothing


def test_weighted_mean_rounds_to_nearest_ties_up():
    def mean(rows, weights):
        return fx.weighted_mean(np.array(rows, dtype=np.int64), weights).tolist()

    assert mean([[1], [0]], [1, 1]) == [1]  # 0.5 -> 1
    assert mean([[-1], [0]], [1, 1]) == [0]  # -0.5 -> 0
    assert mean([[1], [0], [0]], [1, 1, 1]) == [0]  # 1/3 -> 0
    assert mean([[2], [0], [0]], [1, 1, 1]) == [1]  # 2/3 -> 1


def test_weighted_mean_is_exact_at_the_range_limits():
    rng = np.random.default_rng(4)
    rows = rng.integers(-(2**39), 2**39, size=(7, 50), dtype=np.int64)
    weights = [int(w) for w in rng.integers(1, 2**36, size=7)]
    total = sum(weights)
    expected = [
        (2 * sum(w * int(r) for w, r in zip(weights, col, strict=True)) + total) // (2 * total)
        for col in rows.T
    ]
    assert fx.weighted_mean(rows, weights).tolist() == expected


def test_sum_squares_is_exact():
    rng = np.random.default_rng(5)
    v = rng.integers(-(2**40), 2**40, size=1000, dtype=np.int64)
    assert fx.sum_squares(v) == sum(int(x) * int(x) for x in v)


def test_order_independent_rules_give_identical_bytes_for_any_order():
    rng = np.random.default_rng(6)
    rows = [list(rng.standard_normal(64)) for _ in range(7)]
    for name, params in [("fedavg", {}), ("median", {}), ("trimmed-mean", {"beta": 0.3})]:
        rule = make_rule(name, params)
        forward = rule.aggregate(zeros(64), updates(*rows, samples=list(range(1, 8))))
        backward = rule.aggregate(zeros(64), updates(*rows[::-1], samples=list(range(7, 0, -1))))
        assert forward.model["w"].tobytes() == backward.model["w"].tobytes(), name


def test_fixed_point_round_trip_of_float32_is_exact_above_the_resolution():
    x = np.array([0.5, -3.25, 1234.125, 2.0**-24, -(2.0**15)], dtype=np.float32)
    np.testing.assert_array_equal(fx.from_fixed(fx.to_fixed(x)), x)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("fedprox", {}, "unknown aggregation rule 'fedprox'"),
        ("krum", {"m": 2}, "unknown parameters ['m']"),
        ("trimmed-mean", {"beta": 0.5}, "'beta' must be >= 0.0 and < 0.5"),
        ("multi-krum", {"f": -1}, "'f' must be an integer >= 0"),
        ("fedavg", {"clip_norm": 0}, "'clip_norm' must be > 0.0"),
        ("median", {"clip_norm": True}, "'clip_norm' must be a finite number"),
    ],
)
def test_registry_refuses_unknown_rules_and_bad_parameters(name, params, message):
    with pytest.raises(AggregationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_rule(name, params)


def test_registry_lists_every_rule():
    assert rule_names() == (
        "centered-clip",
        "fedavg",
        "krum",
        "median",
        "multi-krum",
        "trimmed-mean",
    )


def test_a_user_rule_overrides_one_method(monkeypatch):
    from fedfabric.chaincode.fl import _aggregation

    monkeypatch.setattr(_aggregation.RULES, "_classes", dict(_aggregation.RULES._classes))

    @register_rule
    class FirstOnly(Rule):
        name = "first-only"

        def combine(self, deltas, weights):
            return Combination(
                deltas[0], (0,), tuple((i, "not first") for i in range(1, len(weights)))
            )

    result = make_rule("first-only").aggregate(zeros(1), updates([2.0], [9.0]))
    np.testing.assert_array_equal(result.model["w"], [2.0])
    assert result.record()["excluded"] == [{"id": "u1", "reason": "not first"}]


def test_too_few_updates_for_krum():
    with pytest.raises(AggregationError, match="needs at least 5 updates, got 4"):
        make_rule("krum", {"f": 1}).aggregate(zeros(1), updates(*KRUM_ROWS[:4]))


def test_mismatched_update_is_refused():
    bad = [Update("x", {"w": np.zeros(3, dtype=np.float32)}, 1)]
    with pytest.raises(AggregationError, match="wrong shape"):
        make_rule("fedavg").aggregate(zeros(2), bad)


def test_leaving_the_fixed_point_range_is_refused():
    big = {"w": np.array([30000.0], dtype=np.float32)}
    with pytest.raises(AggregationError, match="fixed-point range"):
        make_rule("fedavg").aggregate(big, updates([30000.0]))
    with pytest.raises(AggregationError, match="fixed-point range"):
        fx.to_fixed(np.array([40000.0]))


def reference_distances(rows: np.ndarray) -> list[list[int]]:
    """Squared distances the slow, obviously exact way (Python ints)."""
    as_ints = [[int(v) for v in row] for row in rows]
    return [
        [sum((x - y) ** 2 for x, y in zip(a, b, strict=True)) for b in as_ints] for a in as_ints
    ]


@pytest.mark.parametrize("magnitude", [1, 2**20, 2**30, 2**39])
def test_squared_distances_are_exact_for_every_limb_count(magnitude):
    rows = np.random.default_rng(magnitude).integers(
        -magnitude, magnitude + 1, size=(5, 2000), dtype=np.int64
    )
    rows[0, 0] = magnitude

    assert fx.squared_distances(rows) == reference_distances(rows)


def test_squared_distances_are_exact_across_column_chunks(monkeypatch):
    monkeypatch.setattr(fx, "_GRAM_BLOCK", 4096)
    rows = np.random.default_rng(3).integers(-(2**39), 2**39, size=(4, 9000), dtype=np.int64)

    assert fx.squared_distances(rows) == reference_distances(rows)


@pytest.mark.parametrize("weights", [[3, 5, 7], [2**38, 2**38 - 1, 5]], ids=["direct", "split"])
def test_weighted_mean_direct_and_split_sums_agree_with_python_ints(weights):
    rows = np.random.default_rng(4).integers(-(2**39), 2**39, size=(3, 500), dtype=np.int64)
    total = sum(weights)
    expected = [
        (2 * sum(w * int(r[j]) for w, r in zip(weights, rows, strict=True)) + total) // (2 * total)
        for j in range(rows.shape[1])
    ]

    assert fx.weighted_mean(rows, weights).tolist() == expected


def test_org_weighting_merges_each_org_with_the_rule_itself():
    rows = [
        Update("a1", {"w": np.array([1.0], np.float32)}, 1, "A"),
        Update("a2", {"w": np.array([2.0], np.float32)}, 1, "A"),
        Update("a3", {"w": np.array([90.0], np.float32)}, 1, "A"),  # an attacker inside A
        Update("b1", {"w": np.array([3.0], np.float32)}, 1, "B"),
        Update("c1", {"w": np.array([5.0], np.float32)}, 1, "C"),
    ]

    median = make_rule("median").aggregate(zeros(1), rows, "org")
    fedavg = make_rule("fedavg").aggregate(zeros(1), rows, "org")

    # Org A's row is the median of its own updates (2), then the median over A, B, C.
    np.testing.assert_array_equal(median.model["w"], [3.0])
    np.testing.assert_allclose(fedavg.model["w"], [(31 + 3 + 5) / 3], rtol=1e-6)
    assert len(median.used) == 5
