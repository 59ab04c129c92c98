"""Aggregation rules: one implementation each, shared by the chaincode and the workers.

A rule is a small `Rule` subclass that overrides `Rule.combine`: it receives the
round's updates as an int64 fixed-point matrix (one row per update, see `_fixedpoint`) with
their sample counts, and returns the aggregate delta and which rows it used. The base class
does everything else once: checks names and shapes, converts to fixed point, applies the
optional norm-clipping pre-step (``clip_norm``), adds the delta to the global model and
converts back to float32.

Rules by name (`make_rule`; the task JSON names them in ``aggregation.rule``)::

    fedavg                       mean weighted by num_samples
    median                       coordinate-wise median (even count: mean of the middle two)
    trimmed-mean   beta          drop floor(beta * n) lowest and highest per coordinate, mean
    centered-clip  -             the coordinate-wise median plus the weighted mean of every
                                 update's deviation from it, each deviation clipped to the
                                 median deviation norm (one step of centered clipping)
    krum           f             the update with the lowest Krum score
    multi-krum     f, m          sample-weighted mean of the m lowest Krum scores
    every rule     clip_norm     clip each update to this L2 norm first

Updates are always taken in the order given (the contract passes them in ledger key order),
and ties (equal Krum scores) are broken by that order, so the result is a function of the
ledger alone.

Weighting (`WEIGHTINGS`, the task's ``weighting``) decides what the rule's rows are:

    org       each organisation's updates are first merged into one row by the rule itself,
              weighted by sample counts (by their weighted mean when the org has fewer than
              the rule needs); the rule then runs over organisations, each of weight 1, so
              `f` counts organisations, extra identities buy no influence, and a robust rule
              also bounds an attacker inside an otherwise honest organisation
    samples   one row per update, weighted by its (bounded) sample count
    equal     one row per update, every weight 1

`Rule.cost` estimates a rule's time on n rows of d parameters; tasks keep it within
`AGGREGATION_BUDGET_S` at their largest round (see `fedfabric.chaincode.fl._task`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedfabric.chaincode.fl import _fixedpoint as fx
from fedfabric.chaincode.fl._errors import AggregationError
from fedfabric.chaincode.fl._registry import Registry

WEIGHTINGS = ("org", "samples", "equal")

# Time per fixed-point cell (one parameter of one row) of the linear rules, of the rules that
# sort each coordinate (median, trimmed mean, centered clipping), and per n*n*d of Krum's exact
# Gram matrix, measured on a 2-core x86-64 VM (largest over n = 30..2000, d = 2 410..1 M, with
# a margin); `scripts/bench chaincode` re-measures whole AdvanceRounds at the cap
# (``aggregate_s_at_cap_*``).
NS_PER_CELL = 30.0
# Time per row (one update) on top of its cells: decoding and range-checking it, which
# dominates small models with many rows (device fleets): 9 999 updates of 2 410 parameters
# took 1.09 s, not the 0.72 s of their cells alone (same VM).
NS_PER_ROW = 50_000.0
NS_PER_SORTED_CELL = 60.0
NS_PER_KRUM_CELL = 2.5
NS_PER_KRUM_PAIR = 1000.0
AGGREGATION_BUDGET_S = 2.0


@dataclass(frozen=True)
class Update:
    """One worker's model delta: `tensors` (name -> float array), its sample count and
    its organisation (the group `weighting="org"` merges)."""

    id: str
    tensors: Mapping[str, np.ndarray]
    num_samples: int
    org: str = ""


@dataclass(frozen=True)
class Exclusion:
    """An update the rule left out of the aggregate, and why."""

    update_id: str
    reason: str


@dataclass(frozen=True)
class Combination:
    """What `Rule.combine` returns: the aggregate delta and the rows it used."""

    delta: np.ndarray
    used: tuple[int, ...]
    excluded: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class AggregateResult:
    """A new global model plus the record of which updates were used, excluded or clipped."""

    model: dict[str, np.ndarray]
    used: tuple[str, ...]
    excluded: tuple[Exclusion, ...] = ()
    clipped: tuple[str, ...] = ()
    notes: Mapping[str, Any] = field(default_factory=dict)

    def record(self) -> dict:
        """The JSON-ready record written next to the model on the ledger."""
        return {
            "clipped": list(self.clipped),
            "excluded": [{"id": e.update_id, "reason": e.reason} for e in self.excluded],
            "used": list(self.used),
        }


class Rule:
    """Base class of aggregation rules; subclasses set `name` and override `combine`.

    `aggregate(global_model, updates)` is the entry point. Raises `AggregationError` when
    there are fewer updates than `min_updates`, names or shapes differ from the global
    model, or values leave the fixed-point range.

    Example::

        rule = make_rule("trimmed-mean", {"beta": 0.2, "clip_norm": 5.0})
        result = rule.aggregate({"w": np.zeros(3)}, [Update("a", {"w": np.ones(3)}, 10)])
    """

    name: ClassVar[str] = ""
    ns_per_cell: ClassVar[float] = NS_PER_CELL

    def __init__(self, *, clip_norm: float | None = None) -> None:
        if clip_norm is not None:
            clip_norm = _number("clip_norm", clip_norm, low=0.0, strict=True)
        self.clip_norm = clip_norm

    @property
    def min_updates(self) -> int:
        """The fewest updates this rule can aggregate."""
        return 1

    def params(self) -> dict:
        """The rule's parameters as given to `make_rule` (for records)."""
        return {"clip_norm": self.clip_norm} if self.clip_norm is not None else {}

    def cost(self, rows: int, size: int) -> float:
        """Estimated seconds to combine `rows` rows of `size` parameters (each row's decoding
        included)."""
        return (self.ns_per_cell * size + NS_PER_ROW) * rows * 1e-9

    def combine(self, deltas: np.ndarray, weights: tuple[int, ...]) -> Combination:
        """Aggregate fixed-point `deltas` (n, d) with sample counts; override in rules."""
        raise NotImplementedError

    def _merge(self, rows: np.ndarray, weights: list[int]) -> np.ndarray:
        """One organisation's row: its updates combined by this rule (weighted by samples),
        or their weighted mean when it has fewer than the rule needs."""
        if len(weights) >= self.min_updates:
            return self.combine(rows, tuple(weights)).delta
        return fx.weighted_mean(rows, weights)

    def aggregate(
        self,
        global_model: Mapping[str, np.ndarray],
        updates: Sequence[Update],
        weighting: str = "samples",
        factors: Sequence[int] | None = None,
    ) -> AggregateResult:
        """Return the new global model: `global_model` plus the combined update deltas,
        with rows and weights as `weighting` says (see the module docstring).

        `factors` (asynchronous tasks: staleness) scale each update's delta by
        ``factor / 2**30`` (`fx.scale`) after clipping and before the rule."""
        if weighting not in WEIGHTINGS:
            raise AggregationError(
                f"weighting must be one of {list(WEIGHTINGS)}, got {weighting!r}"
            )
        groups = _groups(updates, weighting)
        unit = "organisations" if weighting == "org" else "updates"
        if len(groups) < self.min_updates:
            raise AggregationError(
                f"rule {self.name!r} needs at least {self.min_updates} {unit}, got {len(groups)}"
            )
        names = sorted(global_model)
        shapes = {n: np.shape(global_model[n]) for n in names}
        size = sum(int(np.prod(shapes[n], dtype=np.int64)) for n in names)
        deltas = np.empty((len(updates), size), dtype=np.int64)
        for row, update in zip(deltas, updates, strict=True):
            if sorted(update.tensors) != names:
                raise AggregationError(f"update {update.id!r} has tensors {sorted(update.tensors)}")
            for n in names:
                if np.shape(update.tensors[n]) != shapes[n]:
                    raise AggregationError(f"update {update.id!r}: tensor {n!r} has wrong shape")
            _flatten(update.tensors, names, out=row)
        clipped = []
        if self.clip_norm is not None:
            bound = fx.fixed_scalar(self.clip_norm)
            for i in range(len(updates)):
                deltas[i], changed = fx.clip_to_norm(deltas[i], bound)
                if changed:
                    clipped.append(updates[i].id)
        for i, factor in enumerate(factors or ()):
            if factor != 1 << fx.FACTOR_BITS:
                deltas[i] = fx.scale(deltas[i], factor)
        samples = [int(u.num_samples) for u in updates]
        if weighting == "org":
            rows = np.stack([self._merge(deltas[g], [samples[i] for i in g]) for g in groups])
            weights = (1,) * len(groups)
        else:
            rows, weights = deltas, tuple(samples if weighting == "samples" else [1] * len(samples))
        combo = self.combine(rows, weights)
        new = _flatten(global_model, names) + combo.delta
        if fx.peak(new) > fx.MAX_ABS * fx.SCALE:
            raise AggregationError("the new global model leaves the fixed-point range")
        model, offset = {}, 0
        for n in names:
            size = int(np.prod(shapes[n], dtype=np.int64))
            model[n] = fx.from_fixed(new[offset : offset + size]).reshape(shapes[n])
            offset += size

        def reason(g: int, why: str) -> str:
            return f"organisation {updates[groups[g][0]].org}: {why}" if weighting == "org" else why

        return AggregateResult(
            model=model,
            used=tuple(updates[i].id for g in combo.used for i in groups[g]),
            excluded=tuple(
                Exclusion(updates[i].id, reason(g, why))
                for g, why in combo.excluded
                for i in groups[g]
            ),
            clipped=tuple(clipped),
        )


def _groups(updates: Sequence[Update], weighting: str) -> list[list[int]]:
    """The update indices of each row: one per update, or per organisation (in order of
    first appearance) when `weighting` is ``org``."""
    if weighting != "org":
        return [[i] for i in range(len(updates))]
    by_org: dict[str, list[int]] = {}
    for i, update in enumerate(updates):
        by_org.setdefault(update.org, []).append(i)
    return list(by_org.values())


def _flatten(
    tensors: Mapping[str, np.ndarray], names: Sequence[str], out: np.ndarray | None = None
) -> np.ndarray:
    """The tensors in `names` order as one int64 fixed-point vector (written into `out`)."""
    if out is None:
        size = sum(np.size(tensors[n]) for n in names)
        out = np.empty(size, dtype=np.int64)
    offset = 0
    for n in names:
        flat = np.asarray(tensors[n]).reshape(-1)
        fx.to_fixed(flat, out=out[offset : offset + flat.size])
        offset += flat.size
    return out


def _number(name: str, value: Any, *, low: float, high: float | None = None, strict=False):
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AggregationError(f"parameter {name!r} must be a finite number, got {value!r}")
    if value < low or (strict and value == low) or (high is not None and value >= high):
        bounds = f"{'>' if strict else '>='} {low}" + (f" and < {high}" if high else "")
        raise AggregationError(f"parameter {name!r} must be {bounds}, got {value!r}")
    return value


def _integer(name: str, value: Any, *, low: int) -> int:
    if type(value) is not int or value < low:
        raise AggregationError(f"parameter {name!r} must be an integer >= {low}, got {value!r}")
    return value


RULES: Registry[Rule] = Registry("aggregation rule", AggregationError)


def register_rule(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make `cls` available to `make_rule` under `cls.name`."""
    return RULES.register(cls)


def rule_names() -> tuple[str, ...]:
    """The registered rule names, sorted."""
    return RULES.names()


def make_rule(name: str, params: Mapping[str, Any] | None = None) -> Rule:
    """Build the rule registered as `name` with keyword `params`.

    Raises `AggregationError` for an unknown name, unknown parameters or bad values.
    """
    return RULES.make(name, params)


@register_rule
class FedAvg(Rule):
    """Mean of the updates weighted by their sample counts (McMahan et al.)."""

    name = "fedavg"

    def combine(self, deltas, weights):
        return Combination(fx.weighted_mean(deltas, weights), tuple(range(len(weights))))


def coordinate_median(rows: np.ndarray) -> np.ndarray:
    """Per coordinate, the median of fixed-point `rows`; with an even count, the rounded
    mean of the middle two."""
    ordered = np.sort(rows, axis=0)
    n = rows.shape[0]
    if n % 2:
        return ordered[n // 2]
    return fx.div_round(ordered[n // 2 - 1] + ordered[n // 2], 2)


@register_rule
class Median(Rule):
    """Coordinate-wise median; with an even count, the rounded mean of the middle two."""

    name = "median"
    ns_per_cell = NS_PER_SORTED_CELL

    def combine(self, deltas, weights):
        return Combination(coordinate_median(deltas), tuple(range(len(weights))))


@register_rule
class TrimmedMean(Rule):
    """Per coordinate, drop the floor(beta * n) lowest and highest values and average the rest."""

    name = "trimmed-mean"
    ns_per_cell = NS_PER_SORTED_CELL

    def __init__(self, *, beta: float = 0.1, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        self.beta = _number("beta", beta, low=0.0, high=0.5)

    def params(self):
        return {**super().params(), "beta": self.beta}

    def combine(self, deltas, weights):
        n = len(weights)
        cut = int(np.floor(np.float64(self.beta) * n))
        kept = np.sort(deltas, axis=0)[cut : n - cut]
        return Combination(fx.div_round(kept.sum(axis=0), n - 2 * cut), tuple(range(n)))


@register_rule
class CenteredClip(Rule):
    """One step of centered clipping (Karimireddy et al., 2021) around the coordinate-wise
    median: each row's deviation from the median is clipped to the median of the rows'
    deviation norms, then the clipped deviations are averaged (weighted) onto the median.

    Honest rows, about as far from the median as one another, pass almost unchanged, so the
    result is close to the mean under non-IID data, where the median alone is biased; a row
    that is far off moves the result by at most that median norm divided by the rows'
    total weight share. Every step is exact integer arithmetic.
    """

    name = "centered-clip"
    ns_per_cell = NS_PER_SORTED_CELL

    def __init__(self, *, radius: float = 1.0, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        self.radius = _number("radius", radius, low=0.0, strict=True)

    def params(self):
        return {**super().params(), "radius": self.radius}

    def combine(self, deltas, weights):
        n = len(weights)
        median = coordinate_median(deltas)
        deviations = deltas - median
        squares = sorted(fx.sum_squares(d) for d in deviations)
        scale = fx.fixed_scalar(self.radius)  # radius in fixed point: exact on every peer
        tau = math.isqrt(squares[(n - 1) // 2]) * scale // fx.SCALE
        clipped = np.stack([fx.clip_to_norm(d, tau)[0] for d in deviations])
        return Combination(median + fx.weighted_mean(clipped, weights), tuple(range(n)))


def krum_scores(deltas: np.ndarray, f: int) -> list[int]:
    """Krum score of each row: sum of its n - f - 2 smallest squared distances to others."""
    n = deltas.shape[0]
    dist = fx.squared_distances(deltas)
    closest = n - f - 2
    return [sum(sorted(dist[i][:i] + dist[i][i + 1 :])[:closest]) for i in range(n)]


@register_rule
class MultiKrum(Rule):
    """Sample-weighted mean of the `m` updates with the lowest Krum scores (Blanchard et al.).

    Tolerates `f` Byzantine updates out of n >= 2f + 3. Scores are exact integers
    (squared distances in fixed-point units squared); ties go to the earlier update.
    """

    name = "multi-krum"

    def __init__(self, *, f: int = 0, m: int = 1, clip_norm: float | None = None) -> None:
        super().__init__(clip_norm=clip_norm)
        self.f = _integer("f", f, low=0)
        self.m = _integer("m", m, low=1)

    @property
    def min_updates(self) -> int:
        return max(2 * self.f + 3, self.m)

    def params(self):
        return {**super().params(), "f": self.f, "m": self.m}

    def cost(self, rows, size):
        pairs = rows * rows
        return (
            super().cost(rows, size) + (NS_PER_KRUM_CELL * size + NS_PER_KRUM_PAIR) * pairs * 1e-9
        )

    def combine(self, deltas, weights):
        scores = krum_scores(deltas, self.f)
        ranking = sorted(range(len(scores)), key=lambda i: (scores[i], i))
        chosen = tuple(sorted(ranking[: self.m]))
        excluded = tuple(
            (
                i,
                f"{self.name}: score {scores[i]} ranks {rank + 1} of {len(scores)}; "
                f"only the best {self.m} are used",
            )
            for rank, i in enumerate(ranking)
            if rank >= self.m
        )
        rows = deltas[list(chosen)]
        delta = fx.weighted_mean(rows, [weights[i] for i in chosen])
        return Combination(delta, chosen, tuple(sorted(excluded)))


@register_rule
class Krum(MultiKrum):
    """Krum: the single update with the lowest Krum score (Multi-Krum with m = 1)."""

    name = "krum"

    def __init__(self, *, f: int = 0, clip_norm: float | None = None) -> None:
        super().__init__(f=f, m=1, clip_norm=clip_norm)

    def params(self):
        return {k: v for k, v in super().params().items() if k != "m"}
