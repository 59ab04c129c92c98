"""Malicious workers for experiments: what a poisoned update or poisoned data looks like.

An `Attack` changes a malicious worker's training data (`Attack.poison_data`, before local
training) or its update (`Attack.poison_update`, after). Update attacks that need to know
what honest workers send (ALIE) get the round's honest deltas in `RoundView`: the usual
worst-case assumption that attackers collude and can observe honest updates.

Attacks by name (`make_attack`)::

    sign_flip     scale=1.0          send -scale * delta
    scaling       factor=10.0        send factor * delta
    gaussian      std=1.0            send delta + N(0, std^2) noise per coordinate
    label_flip    -                  train on labels y -> C - 1 - y (data-side)
    alie          z=None             send mean - z * std of the honest deltas, per coordinate;
                                     z=None derives z from the worker counts (Baruch et al.)
    ipm           epsilon=0.5        send -epsilon * mean of the honest deltas (inner product
                                     manipulation, Xie et al.)
    adaptive      margin=0.9         send the opposite of the honest mean, scaled as far as
                                     the attacker's own data says org validation allows:
                                     its loss rises by at most margin * the tightest
                                     validation threshold it meets, and its norm stays under the
                                     task's bound (an attacker who knows both)
    nan           value="nan",       set a `fraction` of coordinates to NaN / inf / -inf
                  fraction=0.01      (the encoder and every peer refuse it: tests the checks)

All randomness comes from the generator passed in, so attacks are reproducible.
`make_attack` and `choose_malicious` raise ValueError naming the bad name or parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ml import Dataset

Tensors = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class RoundView:
    """What a colluding attacker knows in a round: honest deltas, the worker counts and the
    task's bounds; `loss` scores a candidate delta on the attacker's own data (the loss of
    the global model plus that delta), its stand-in for the orgs' private validation."""

    honest: Sequence[Tensors] = ()
    num_workers: int = 0
    num_malicious: int = 0
    loss: Callable[[Tensors], float] | None = None
    validation_threshold: float | None = None
    norm_bound: float | None = None


def _number(attack: str, name: str, value: Any, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"attack {attack!r}: parameter {name!r} must be a number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"attack {attack!r}: parameter {name!r} must be > 0, got {value!r}")
    return float(value)


class Attack:
    """Base class: a malicious worker's behaviour. Subclasses set `name` and override one or
    both hooks; the defaults leave data and update unchanged."""

    name: ClassVar[str] = ""
    # Whether `poison_update` reads `RoundView.honest` (so honest workers go first).
    needs_honest: ClassVar[bool] = False

    def poison_data(self, data: Dataset, rng: np.random.Generator) -> Dataset:
        """The data the malicious worker trains on."""
        return data

    def poison_update(
        self, delta: Tensors, view: RoundView, rng: np.random.Generator
    ) -> dict[str, np.ndarray]:
        """The update the malicious worker submits instead of its honest `delta`."""
        return {k: np.asarray(v, np.float32) for k, v in delta.items()}


ATTACKS: fl.Registry[Attack] = fl.Registry("attack", ValueError)


@ATTACKS.register
class SignFlip(Attack):
    """Send the honest update reversed (and optionally amplified): ``-scale * delta``."""

    name = "sign_flip"

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = _number(self.name, "scale", scale)

    def poison_update(self, delta, view, rng):
        return {
            k: (-self.scale * np.asarray(v, np.float32)).astype(np.float32)
            for k, v in delta.items()
        }


@ATTACKS.register
class Scaling(Attack):
    """Amplify the update: ``factor * delta`` (a model-replacement style boost)."""

    name = "scaling"

    def __init__(self, *, factor: float = 10.0) -> None:
        self.factor = _number(self.name, "factor", factor)

    def poison_update(self, delta, view, rng):
        return {
            k: (self.factor * np.asarray(v, np.float32)).astype(np.float32)
            for k, v in delta.items()
        }


@ATTACKS.register
class GaussianNoise(Attack):
    """Add independent N(0, std^2) noise to every coordinate (a faulty or noisy device)."""

    name = "gaussian"

    def __init__(self, *, std: float = 1.0) -> None:
        self.std = _number(self.name, "std", std)

    def poison_update(self, delta, view, rng):
        return {
            k: (np.asarray(v, np.float32) + rng.normal(0.0, self.std, np.shape(v))).astype(
                np.float32
            )
            for k, v in delta.items()
        }


@ATTACKS.register
class LabelFlip(Attack):
    """Train on flipped labels, ``y -> C - 1 - y``; the update itself is sent unchanged."""

    name = "label_flip"

    def poison_data(self, data, rng):
        return Dataset(data.name, data.x, data.num_classes - 1 - data.y, data.num_classes)


@ATTACKS.register
class ALIE(Attack):
    """ "A little is enough" (Baruch et al., 2019): per coordinate ``mean - z * std`` of the
    honest updates, small enough to pass distance- and median-based defences.

    With ``z=None``, ``z = Phi^-1((n - s) / n)`` with ``s = floor(n / 2 + 1) - m`` for `n`
    workers of which `m` are malicious (the paper's choice).
    """

    name = "alie"
    needs_honest = True

    def __init__(self, *, z: float | None = None) -> None:
        self.z = None if z is None else _number(self.name, "z", z, positive=False)

    def z_for(self, view: RoundView) -> float:
        """The deviation factor used in a round with `view`'s worker counts."""
        if self.z is not None:
            return self.z
        n, m = view.num_workers, view.num_malicious
        supporters = math.floor(n / 2 + 1) - m
        quantile = (n - supporters) / n if n else 0.5
        return NormalDist().inv_cdf(min(max(quantile, 0.5), 0.999))

    def poison_update(self, delta, view, rng):
        if not view.honest:
            raise ValueError("attack 'alie' needs the honest updates of the round")
        z = self.z_for(view)
        out = {}
        for k in delta:
            stack = np.stack([np.asarray(h[k], np.float64) for h in view.honest])
            out[k] = (stack.mean(axis=0) - z * stack.std(axis=0)).astype(np.float32)
        return out


def _honest_mean(attack: str, view: RoundView) -> dict[str, np.ndarray]:
    if not view.honest:
        raise ValueError(f"attack {attack!r} needs the honest updates of the round")
    return {
        k: np.mean([np.asarray(h[k], np.float64) for h in view.honest], axis=0)
        for k in view.honest[0]
    }


@ATTACKS.register
class IPM(Attack):
    """Inner product manipulation (Xie et al., 2020): ``-epsilon`` times the honest mean, so
    the aggregate's inner product with the true gradient turns negative."""

    name = "ipm"
    needs_honest = True

    def __init__(self, *, epsilon: float = 0.5) -> None:
        self.epsilon = _number(self.name, "epsilon", epsilon)

    def poison_update(self, delta, view, rng):
        mean = _honest_mean(self.name, view)
        return {k: (-self.epsilon * v).astype(np.float32) for k, v in mean.items()}


@ATTACKS.register
class Adaptive(Attack):
    """The attacker that knows the defences: it sends the opposite of the honest mean at the
    largest scale whose loss increase on its own data stays within `margin` times the task's
    validation threshold (bisection, 12 steps), and whose L2 norm stays within the task's
    norm bound. Without a threshold only the norm bound limits it."""

    name = "adaptive"
    needs_honest = True
    _STEPS = 12

    def __init__(self, *, margin: float = 0.9) -> None:
        self.margin = _number(self.name, "margin", margin)

    def poison_update(self, delta, view, rng):
        direction = {k: -v for k, v in _honest_mean(self.name, view).items()}
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in direction.values()))
        if norm == 0:
            return {k: v.astype(np.float32) for k, v in direction.items()}
        high = 0.99 * (view.norm_bound or 100.0) / norm  # the largest scale the bound allows

        def scaled(s: float) -> dict[str, np.ndarray]:
            return {k: (s * v).astype(np.float32) for k, v in direction.items()}

        if view.loss is not None and view.validation_threshold is not None:
            allowed = view.loss(scaled(0.0)) + self.margin * view.validation_threshold
            if view.loss(scaled(high)) > allowed:
                low = 0.0
                for _ in range(self._STEPS):
                    middle = (low + high) / 2
                    low, high = (
                        (middle, high) if view.loss(scaled(middle)) <= allowed else (low, middle)
                    )
                high = low
        return scaled(high)


@ATTACKS.register
class NonFinite(Attack):
    """Put NaN or +/-inf into a `fraction` of the coordinates (at least one per tensor)."""

    name = "nan"
    _VALUES: ClassVar[dict[str, float]] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}

    def __init__(self, *, value: str = "nan", fraction: float = 0.01) -> None:
        if value not in self._VALUES:
            raise ValueError(f"attack 'nan': 'value' must be one of {sorted(self._VALUES)}")
        self.value = value
        self.fraction = _number(self.name, "fraction", fraction)
        if self.fraction > 1:
            raise ValueError(f"attack 'nan': 'fraction' must be in (0, 1], got {fraction!r}")

    def poison_update(self, delta, view, rng):
        out = {}
        for k, v in delta.items():
            flat = np.array(v, dtype=np.float32).reshape(-1)
            count = max(1, int(self.fraction * flat.size))
            flat[rng.choice(flat.size, size=count, replace=False)] = self._VALUES[self.value]
            out[k] = flat.reshape(np.shape(v))
        return out


def attack_names() -> tuple[str, ...]:
    """The names `make_attack` accepts, sorted."""
    return ATTACKS.names()


def make_attack(name: str, **params: Any) -> Attack:
    """The attack called `name` with keyword `params` (see the module docstring).

    Raises ValueError for an unknown name (listing the valid ones) or unknown or bad
    parameters (naming them).
    """
    return ATTACKS.make(name, params)


def malicious_count(n_workers: int, fraction: float) -> int:
    """How many of `n_workers` a malicious `fraction` means: rounded to nearest, half down."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, int | float)
        or not (0 <= fraction <= 1)
    ):
        raise ValueError(f"malicious fraction must be in [0, 1], got {fraction!r}")
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0, got {n_workers}")
    return math.ceil(fraction * n_workers - 0.5 - 1e-9) if fraction else 0


def choose_malicious(n_workers: int, fraction: float, seed: int) -> frozenset[int]:
    """The indices (0-based) of the malicious workers: `malicious_count` of them, drawn
    without replacement from ``numpy.random.default_rng(seed)``.

    Raises ValueError when `fraction` is outside [0, 1] (naming it) or `n_workers` < 0.
    """
    count = malicious_count(n_workers, fraction)
    chosen = np.random.default_rng(seed).choice(n_workers, size=count, replace=False)
    return frozenset(int(i) for i in chosen)
