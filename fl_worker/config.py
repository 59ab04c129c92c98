"""`RunConfig`: every setting of one federated run, checked before anything starts.

A config comes from keyword arguments, a dict (`RunConfig.from_dict`) or a YAML file
(`RunConfig.from_yaml`); unknown keys are errors. Every problem is a `ConfigError` whose
`field` names the setting, raised before any data is loaded or any transaction is sent.

The defaults are the main job (`fedfabric run` with no flags): a consortium of 3 organisations
× 3 workers on digits with Dirichlet(0.5) label skew, in which 2 of the 9 workers add Gaussian
noise to their updates, and each organisation's chaincode server validates every update on its
own private split before endorsing it.

Example YAML (every key optional; these are the defaults except where noted)::

    dataset: digits              # or breast_cancer, or a path to .npz / .csv
    model: null                  # null: an MLP sized to the data (64-32-10 for digits)
    orgs: 3
    workers_per_org: 3
    rounds: 10
    epochs: 2
    lr: 0.1
    batch_size: 16
    seed: 0
    alpha: 0.5                   # Dirichlet(alpha) label skew; null: IID
    strategy: centered-clip      # the aggregation rule (fedavg, median, trimmed-mean, krum,
    strategy_params: {}          #   multi-krum, centered-clip) and its parameters
    weighting: org               # org: the rule runs over one merged update per organisation
                                 # (safe against one malicious org of three); samples | equal
    attack: gaussian             # none (or null): every worker is honest
    attack_params: {}
    malicious: 0.2222222222222222  # fraction of workers that attack (2/9: 2 of 9); 0 with none
    malicious_org: null          # or k: every worker of the k-th org attacks (a malicious
                                 # member with all the identities it may register)
    quantization: int8           # float32 | fp16 | int8
    compression: zlib            # none | zlib
    min_updates: null            # null: the strategy's minimum
    norm_bound: 100.0            # largest L2 norm of an update the contract accepts
    validation_threshold: 1.0    # null: no org-private validation (see below)
    own_org_threshold: 0.05      # the same for updates of the org's own workers
    validation_fraction: 0.1     # share of each org's data held out as its validation split
    mode: sync                   # or async: buffered asynchronous aggregation (see below)
    buffer_size: null            # async: updates a version (null: see below)
    max_staleness: 3             # async: versions an update may lag behind
    staleness_exponent: 0.5      # async: factor (1 + staleness) ** -exponent (0: constant)
    async_order: free            # async: free (workers run concurrently) | fixed

Asynchronous mode (``mode: async``, FedBuff): ``rounds`` is the number of model versions;
workers train continuously on the latest version and the coordinator aggregates every
``buffer_size`` committed updates, damping each by its staleness (see
`fedfabric.chaincode.fl._async`). The default ``buffer_size`` is half the workers, rounded up,
and at least ``workers_per_org + 1`` (5 of the default 9): a buffer of more updates than one
organisation has workers always holds two organisations, and half the workers keeps a
version coming while the other half trains (with all of them, as a worker has one pending
update at a time, every version would wait for every worker: rounds again).
``async_order: fixed`` makes the arrival order reproducible: the workers take turns
round-robin, one at a time, each training on the version it saw at its last committed
update, or on the oldest one within ``max_staleness`` if that is newer (a worker whose
update is still pending passes its turn), so a resumed run commits the same models as an
uninterrupted one; ``free`` lets them run concurrently, as they would.

Org-private validation: each organisation keeps `validation_fraction` of its own data out of
its workers' training sets (`fedfabric.fl_worker.federation.validation_split`); its chaincode
server refuses to endorse an update when the global model plus that update has a loss on the
split above the global model's loss plus `validation_threshold`.

The default threshold, 1.0 (cross-entropy, in nats), was measured on the default run in memory
with validation emulated (`run_in_memory`, seeds 0-7 clean and 0-5 attacked, 10 rounds): an
honest update raised an org's validation loss by at most 0.81, a Gaussian attacker's by at least
20. So it refuses no honest update (none in seeds 0-3 at 10 rounds of 2 epochs or 20 of 1) and
every Gaussian attacker's. It is also the room an attacker who knows it has (the `adaptive`
attack): at 2.0 that attacker cut the final accuracy by up to 12 points more than at 1.0.

An organisation judges its own workers' updates by ``own_org_threshold`` (0.05): its split
comes from the same data as theirs, so an honest update of its own worker rarely raises that
loss at all (robustness table, 3 seeds, clean: at most 10 of 180 honest updates refused, final
accuracy unchanged), while a sign-flipped or scaled one does. The submitter's organisation
endorses first with a veto, so this is the threshold an attacker inside an honest organisation
meets; the looser ``validation_threshold`` is for other organisations' updates, whose data
differs.

The default rule is the safe one against one malicious organisation of three: ``weighting:
org`` gives each organisation one row however many identities it registers, and
``centered-clip`` bounds how far one row can move the result while matching FedAvg on honest
rows more closely than the median does (clean digits, 20 rounds, seed 1: 0.942 against
FedAvg's 0.942 and the median's 0.794).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedfabric.chaincode import fl
from fedfabric.fl_worker import attacks, strategies

_BUILTIN_DATASETS = ("breast_cancer", "digits")
NO_ATTACK = "none"
DEFAULT_MALICIOUS = 2 / 9
DEFAULT_VALIDATION_THRESHOLD = 1.0
DEFAULT_OWN_ORG_THRESHOLD = 0.05


class ConfigError(ValueError):
    """A run setting is invalid; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config field '{field}': {message}")
        self.field = field
        self.detail = message


def _int(name: str, value: Any, low: int) -> None:
    if type(value) is not int or value < low:
        raise ConfigError(name, f"must be an integer >= {low}, got {value!r}")


def _positive(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(name, f"must be a number > 0, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """All settings of a run (see the module docstring for each field and its default)."""

    dataset: str = "digits"
    model: Mapping[str, Any] | None = None
    orgs: int = 3
    workers_per_org: int = 3
    rounds: int = 10
    epochs: int = 2
    lr: float = 0.1
    batch_size: int = 16
    seed: int = 0
    alpha: float | None = 0.5
    strategy: str = "centered-clip"
    strategy_params: Mapping[str, Any] = field(default_factory=dict)
    weighting: str = "org"
    attack: str | None = "gaussian"
    attack_params: Mapping[str, Any] = field(default_factory=dict)
    malicious: float = DEFAULT_MALICIOUS
    malicious_org: int | None = None
    quantization: str = "float32"
    compression: str = "none"
    min_updates: int | None = None
    norm_bound: float = 100.0
    validation_threshold: float | None = DEFAULT_VALIDATION_THRESHOLD
    own_org_threshold: float | None = DEFAULT_OWN_ORG_THRESHOLD
    validation_fraction: float = 0.1
    mode: str = "sync"
    buffer_size: int | None = None
    max_staleness: int = 3
    staleness_exponent: float = 0.5
    async_order: str = "free"

    def __post_init__(self) -> None:
        self._check()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Build from a mapping. Raises `ConfigError` for an unknown key or a bad value."""
        if not isinstance(data, Mapping):
            raise ConfigError("config", f"must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting; known: {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RunConfig:
        """Read a YAML file (see the module docstring). Raises `ConfigError`."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror}") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError("config", f"{str(path)!r} is not valid YAML: {exc}") from exc
        return cls.from_dict(data or {})

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes` applied (checked again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain YAML/JSON-ready data."""
        data = dataclasses.asdict(self)
        for key in ("model", "strategy_params", "attack_params"):
            if data[key] is not None:
                data[key] = dict(data[key])
        return data

    @property
    def num_workers(self) -> int:
        """Workers in the whole federation."""
        return self.orgs * self.workers_per_org

    @property
    def versions_buffer(self) -> int:
        """The async buffer size: `buffer_size`, else the default (module docstring)."""
        if self.buffer_size is not None:
            return self.buffer_size
        half = -(-self.num_workers // 2)
        return min(self.num_workers, max(half, self.workers_per_org + 1))

    def make_strategy(self) -> strategies.Strategy:
        """The configured strategy (the settings are already checked)."""
        return strategies.get_strategy(self.strategy, **self.strategy_params)

    def make_attack(self) -> attacks.Attack | None:
        """The configured attack, or None when every worker is honest."""
        if self.attack is None or self.attack == NO_ATTACK:
            return None
        return attacks.make_attack(self.attack, **self.attack_params)

    def _check(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ConfigError("dataset", f"must be a name or a path, got {self.dataset!r}")
        if self.dataset not in _BUILTIN_DATASETS:
            path = Path(self.dataset)
            if path.suffix not in (".npz", ".csv"):
                raise ConfigError(
                    "dataset",
                    f"{self.dataset!r} is neither {' nor '.join(_BUILTIN_DATASETS)} "
                    "nor a .npz / .csv file",
                )
            if not path.is_file():
                raise ConfigError("dataset", f"file {self.dataset!r} does not exist")
        if self.model is not None:
            try:
                fl.model_layout(self.model)
            except fl.TaskError as exc:
                raise ConfigError("model", exc.detail) from exc
        _int("orgs", self.orgs, 1)
        _int("workers_per_org", self.workers_per_org, 1)
        _int("rounds", self.rounds, 1)
        _int("epochs", self.epochs, 1)
        _int("batch_size", self.batch_size, 1)
        _int("seed", self.seed, 0)
        _positive("lr", self.lr)
        _positive("alpha", self.alpha, allow_none=True)
        _positive("norm_bound", self.norm_bound)
        if self.norm_bound > 2**15:
            raise ConfigError("norm_bound", f"must be <= 32768, got {self.norm_bound!r}")
        for name in ("validation_threshold", "own_org_threshold"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or value < 0
            ):
                raise ConfigError(name, "must be null or a number >= 0")
        if (
            isinstance(self.validation_fraction, bool)
            or not isinstance(self.validation_fraction, int | float)
            or not 0 < self.validation_fraction < 1
        ):
            raise ConfigError(
                "validation_fraction",
                f"must be a number in (0, 1), got {self.validation_fraction!r}",
            )
        for name in ("strategy_params", "attack_params"):
            if not isinstance(getattr(self, name), Mapping):
                raise ConfigError(name, f"must be a mapping, got {getattr(self, name)!r}")
        try:
            strategy = self.make_strategy()
        except ValueError as exc:
            raise ConfigError("strategy", str(exc)) from exc
        try:
            attack = self.make_attack()
        except ValueError as exc:
            raise ConfigError("attack", str(exc)) from exc
        try:
            attacks.malicious_count(self.num_workers, self.malicious)
        except ValueError as exc:
            raise ConfigError("malicious", str(exc)) from exc
        if self.attack == NO_ATTACK:
            object.__setattr__(self, "attack", None)
        if attack is None and self.malicious:
            # Without an attack nobody attacks: the default fraction reads 0, another is an error.
            if self.malicious != DEFAULT_MALICIOUS:
                raise ConfigError("malicious", f"is {self.malicious} but attack is none")
            object.__setattr__(self, "malicious", 0.0)
        if self.malicious_org is not None:
            if type(self.malicious_org) is not int or not 1 <= self.malicious_org <= self.orgs:
                raise ConfigError("malicious_org", f"must be null or an org number 1..{self.orgs}")
            if attack is None:
                raise ConfigError("malicious_org", "needs an attack")
            # A malicious org replaces the fraction: the default reads 0, another is an error.
            if self.malicious not in (0, DEFAULT_MALICIOUS):
                raise ConfigError("malicious_org", "excludes a 'malicious' fraction")
            object.__setattr__(self, "malicious", 0.0)
        if self.quantization not in fl.QUANTIZATIONS:
            raise ConfigError("quantization", f"must be one of {list(fl.QUANTIZATIONS)}")
        if self.compression not in fl.COMPRESSIONS:
            raise ConfigError("compression", f"must be one of {list(fl.COMPRESSIONS)}")
        if self.min_updates is not None:
            _int(
                "min_updates",
                self.min_updates,
                1 if self.weighting == "org" else strategy.min_updates,
            )
            if self.min_updates > self.num_workers:
                raise ConfigError(
                    "min_updates",
                    f"{self.min_updates} exceeds the {self.num_workers} workers of the run",
                )
        if self.weighting not in fl.WEIGHTINGS:
            raise ConfigError("weighting", f"must be one of {list(fl.WEIGHTINGS)}")
        rows, unit = (
            (self.orgs, "organisations")
            if self.weighting == "org"
            else (self.num_workers, "workers")
        )
        self._check_async(strategy)
        if strategy.min_updates > rows:
            raise ConfigError(
                "strategy",
                f"{self.strategy!r} needs at least {strategy.min_updates} {unit} per round "
                f"but the run has {rows} (weighting {self.weighting!r})",
            )

    def _check_async(self, strategy: strategies.Strategy) -> None:
        if self.mode not in fl.MODES:
            raise ConfigError("mode", f"must be one of {list(fl.MODES)}, got {self.mode!r}")
        if self.async_order not in ("free", "fixed"):
            raise ConfigError("async_order", f"must be free or fixed, got {self.async_order!r}")
        if self.buffer_size is not None:
            _int("buffer_size", self.buffer_size, 1)
        _int("max_staleness", self.max_staleness, 0)
        exponent = self.staleness_exponent
        if isinstance(exponent, bool) or not isinstance(exponent, int | float):
            raise ConfigError("staleness_exponent", f"must be a number, got {exponent!r}")
        if not 0 <= exponent <= fl.MAX_STALENESS_EXPONENT:
            raise ConfigError(
                "staleness_exponent", f"must be in [0, {fl.MAX_STALENESS_EXPONENT:g}]"
            )
        if self.mode != "async":
            return
        size = self.versions_buffer
        if size > self.num_workers:
            raise ConfigError(
                "buffer_size",
                f"{size} exceeds the {self.num_workers} workers (each has one pending update "
                "at a time, so the buffer would never fill)",
            )
        floor = fl.buffer_floor(strategy.min_updates, self.weighting, self.workers_per_org)
        if size < floor:
            raise ConfigError(
                "buffer_size",
                f"{self.strategy!r} with weighting {self.weighting!r} needs a buffer of at "
                f"least {floor} updates, got {size}",
            )

    def task_json(
        self,
        task_id: str,
        layout: fl.Layout,
        allowed_orgs: list[str],
        *,
        max_update_bytes: int | None = None,
        strategy: strategies.Strategy | None = None,
        max_workers_per_org: int | None = None,
    ) -> dict[str, Any]:
        """The ``CreateTask`` JSON for this run (parsed by `fedfabric.chaincode.fl.TaskSpec`).

        `max_update_bytes` defaults to the float32 size of the layout plus headroom;
        `strategy` replaces the configured one (a user's own `Strategy`);
        `max_workers_per_org` (default `workers_per_org`) is what each org may register.
        """
        strategy = strategy or self.make_strategy()
        names = sum(len(n.encode()) + 3 + 4 * len(s) for n, s in layout.tensors)
        return {
            "id": task_id,
            "layout": layout.to_json(),
            "rounds": self.rounds,
            "min_updates": strategy.min_updates if self.min_updates is None else self.min_updates,
            "norm_bound": float(self.norm_bound),
            "max_update_bytes": max_update_bytes or 4 * layout.size + names + 4096,
            "aggregation": strategy.aggregation(),
            "weighting": self.weighting,
            "allowed_orgs": list(allowed_orgs),
            "max_workers_per_org": max_workers_per_org or self.workers_per_org,
            "validation_threshold": self.validation_threshold,
            **(
                {"own_org_threshold": self.own_org_threshold}
                if self.own_org_threshold is not None and self.validation_threshold is not None
                else {}
            ),
            **(self._async_task() if self.mode == "async" else {}),
        }

    def _async_task(self) -> dict[str, Any]:
        exponent = float(self.staleness_exponent)
        return {
            "mode": "async",
            "buffer_size": self.versions_buffer,
            "max_staleness": self.max_staleness,
            "staleness": {"rule": "polynomial", "exponent": exponent}
            if exponent
            else {"rule": "constant"},
        }
