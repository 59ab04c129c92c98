"""Each attack changes what a malicious worker sends (or trains on) in the documented way."""

from __future__ import annotations

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.attacks import (
    RoundView,
    attack_names,
    choose_malicious,
    make_attack,
    malicious_count,
)
from fedfabric.fl_worker.ml import Dataset

DELTA = {"w": np.array([1.0, -2.0, 0.5], np.float32), "b": np.array([0.25], np.float32)}
HONEST = [
    {"w": np.array([1.0, 0.0, 2.0], np.float32), "b": np.array([1.0], np.float32)},
    {"w": np.array([3.0, 0.0, 2.0], np.float32), "b": np.array([3.0], np.float32)},
]
VIEW = RoundView(honest=HONEST, num_workers=9, num_malicious=3)


def rng():
    return np.random.default_rng(0)


def test_sign_flip_reverses_the_update():
    out = make_attack("sign_flip").poison_update(DELTA, VIEW, rng())

    assert list(out["w"]) == [-1.0, 2.0, -0.5] and out["w"].dtype == np.float32


def test_scaling_multiplies_by_the_factor():
    assert list(make_attack("scaling", factor=4).poison_update(DELTA, VIEW, rng())["b"]) == [1.0]


def test_gaussian_noise_has_the_requested_spread_and_is_reproducible():
    big = {"w": np.zeros(20000, np.float32)}
    attack = make_attack("gaussian", std=0.5)

    a, b = attack.poison_update(big, VIEW, rng()), attack.poison_update(big, VIEW, rng())

    assert np.array_equal(a["w"], b["w"]) and np.std(a["w"]) == pytest.approx(0.5, rel=0.05)


def test_label_flip_changes_the_data_not_the_update():
    data = Dataset("d", np.zeros((3, 2), np.float32), np.array([0, 3, 9]), 10)
    attack = make_attack("label_flip")

    assert list(attack.poison_data(data, rng()).y) == [9, 6, 0]
    assert list(attack.poison_update(DELTA, VIEW, rng())["w"]) == list(DELTA["w"])


def test_alie_sends_mean_minus_z_std_of_the_honest_updates():
    attack = make_attack("alie", z=1.0)

    out = attack.poison_update(DELTA, VIEW, rng())

    assert list(out["w"]) == [1.0, 0.0, 2.0] and list(out["b"]) == [1.0]
    assert attack.needs_honest


def test_alie_derives_z_from_the_worker_counts():
    # n = 9, m = 3: s = floor(9/2 + 1) - 3 = 2, z = Phi^-1(7/9)
    assert make_attack("alie").z_for(VIEW) == pytest.approx(0.7647, abs=1e-4)


def test_ipm_sends_minus_epsilon_times_the_honest_mean():
    out = make_attack("ipm", epsilon=0.5).poison_update(DELTA, VIEW, rng())

    assert list(out["w"]) == [-1.0, 0.0, -1.0] and list(out["b"]) == [-1.0]


def test_the_adaptive_attack_goes_as_far_as_its_loss_estimate_allows():
    # A loss that grows with the squared norm: the threshold allows ||delta||^2 <= 0.9 * 8.
    def loss(delta):
        return 1.0 + sum(float(np.sum(np.square(v))) for v in delta.values())

    view = RoundView(honest=HONEST, loss=loss, validation_threshold=8.0, norm_bound=100.0)

    out = make_attack("adaptive").poison_update(DELTA, view, rng())

    # Opposite to the honest mean (2, 0, 2 | 2), scaled to a squared norm just under 7.2.
    squared = sum(float(np.sum(np.square(v))) for v in out.values())
    assert 7.2 * 0.99 < squared <= 7.2
    assert out["w"][0] < 0 and out["w"][1] == 0 and out["b"][0] < 0


def test_without_validation_the_adaptive_attack_stops_only_at_the_norm_bound():
    view = RoundView(honest=HONEST, norm_bound=10.0)

    out = make_attack("adaptive").poison_update(DELTA, view, rng())

    norm = np.sqrt(sum(float(np.sum(np.square(v))) for v in out.values()))
    assert norm == pytest.approx(9.9, rel=1e-6)


def test_nan_injection_is_refused_by_the_update_encoder():
    layout = fl.Layout((("w", (3,)), ("b", (1,))))
    out = make_attack("nan", value="inf").poison_update(DELTA, VIEW, rng())

    assert np.isinf(out["w"]).sum() == 1 and np.isinf(out["b"]).sum() == 1
    with pytest.raises(fl.UpdateError) as caught:
        fl.encode_update(out, layout)
    assert caught.value.check == "non-finite"


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("poison", {}, "unknown attack 'poison'; known: adaptive, alie, gaussian, ipm"),
        ("ipm", {"epsilon": 0}, "attack 'ipm': parameter 'epsilon' must be > 0"),
        ("scaling", {"k": 3}, "'scaling' got unknown parameters ['k']; accepted: ['factor']"),
        ("scaling", {"factor": -1}, "attack 'scaling': parameter 'factor' must be > 0"),
        ("gaussian", {"std": "big"}, "parameter 'std' must be a number"),
        ("nan", {"value": "zero"}, "'value' must be one of ['-inf', 'inf', 'nan']"),
    ],
)
def test_bad_attacks_are_clear_errors(name, params, message):
    with pytest.raises(ValueError) as caught:
        make_attack(name, **params)

    assert message in str(caught.value)


def test_every_documented_attack_exists():
    assert attack_names() == (
        "adaptive",
        "alie",
        "gaussian",
        "ipm",
        "label_flip",
        "nan",
        "scaling",
        "sign_flip",
    )


def test_choose_malicious_is_seeded_and_sized_by_the_fraction():
    chosen = choose_malicious(9, 0.3, seed=5)

    assert len(chosen) == 3 and chosen == choose_malicious(9, 0.3, seed=5)
    assert all(0 <= i < 9 for i in chosen)
    assert [malicious_count(9, f) for f in (0.0, 0.2, 0.5, 1.0)] == [0, 2, 4, 9]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True])
def test_a_fraction_outside_zero_one_is_a_value_error_naming_it(fraction):
    with pytest.raises(ValueError, match="malicious fraction must be in \\[0, 1\\]"):
        choose_malicious(9, fraction, seed=0)
