"""A federation: what a run derives from its settings, and how each of its workers trains.

`prepare(config)` loads the data, partitions it across organisations and workers and builds
the initial model, all seeded by ``config.seed``, so every process (a ledger run, the
in-memory run, a resumed run) gets the same `Federation`. The trainers turn it into local
updates for `fedfabric.fl_worker.worker.Worker`:

- `FederationTrainer`: worker ``i`` of the federation (honest training, then the run's attack
  if the worker is malicious), deterministic in (seed, round, worker);
- `DeviceTrainer`: a simulated device holding a small shard of its organisation's data
  (`device_shards`).

Each organisation also holds a private validation split of its own data
(`validation_split`), which `write_validation_split` writes for its chaincode server's
validator (`fl.numpy_loss`: numpy only, so the servers need no torch).

Example::

    fed = prepare(RunConfig(rounds=3, seed=1))
    workers = federation_workers(fed, ledgers)   # one `Worker` per worker of the federation
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker import ml
from fedfabric.fl_worker.attacks import Attack, RoundView, choose_malicious
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.ledger import Ledger
from fedfabric.fl_worker.strategies import FitConfig, Strategy
from fedfabric.fl_worker.worker import LocalUpdate, Retry, Worker, WorkerResources, encode

Tensors = Mapping[str, np.ndarray]

VALIDATOR = "fedfabric.chaincode.fl:numpy_loss"
"""The org-private validator of a run: the cross-entropy of the model on the org's split,
computed with numpy (the same loss as ``fl.torch_loss``), so no server needs torch."""

# Independent random streams derived from the run seed (see `ml.derive_seed`).
_STREAM_MALICIOUS, _STREAM_TRAIN, _STREAM_ATTACK, _STREAM_DATA = 1, 2, 3, 4
_STREAM_DEVICE_MALICIOUS, _STREAM_DEVICE_TRAIN, _STREAM_DEVICE_ATTACK = 11, 12, 13


@dataclass(frozen=True)
class Federation:
    """Everything a run derives from its config before round 1 (identical in every process).

    `workers` lists every worker's training data, org by org; worker ``i`` belongs to org
    ``i // workers_per_org``. `malicious` holds the indices of the attacking workers.
    """

    config: RunConfig
    dataset: ml.Dataset
    partition: ml.Partition
    model_spec: dict[str, Any]
    layout: fl.Layout
    initial_model: dict[str, np.ndarray]
    strategy: Strategy
    attack: Attack | None
    malicious: frozenset[int]

    @property
    def workers(self) -> tuple[ml.Dataset, ...]:
        return self.partition.workers

    def worker_name(self, index: int) -> str:
        """A stable name for worker `index`: ``org<k>-worker<j>`` (1-based)."""
        per_org = self.config.workers_per_org
        return f"org{index // per_org + 1}-worker{index % per_org + 1}"


def prepare(config: RunConfig, *, strategy: Strategy | None = None) -> Federation:
    """Load the data, partition it and build the initial model, all seeded by `config.seed`.

    `strategy` overrides the configured one (e.g. a user's own `Strategy` instance). Raises
    `ConfigError` when the model spec does not fit the data, and FileNotFoundError or
    ValueError from `ml.load_dataset` / `ml.partition` for bad data.
    """
    data = ml.load_dataset(config.dataset)
    spec = dict(config.model) if config.model is not None else ml.default_model_spec(data)
    features, classes = fl.model_inputs(spec)
    if features != data.x.shape[1] or classes < data.num_classes:
        raise ConfigError(
            "model",
            f"the model takes {features} features and {classes} classes; dataset "
            f"{config.dataset!r} has {data.x.shape[1]} features and {data.num_classes} classes",
        )
    parts = ml.partition(
        data,
        orgs=config.orgs,
        workers_per_org=config.workers_per_org,
        alpha=config.alpha,
        validation_fraction=config.validation_fraction,
        seed=config.seed,
    )
    malicious = _attackers(config, config.workers_per_org, _STREAM_MALICIOUS)
    return Federation(
        config=config,
        dataset=data,
        partition=parts,
        model_spec=spec,
        layout=fl.model_layout(spec),
        initial_model=fl.get_weights(fl.build_model(spec, seed=config.seed)),
        strategy=strategy if strategy is not None else config.make_strategy(),
        attack=config.make_attack() if malicious else None,
        malicious=malicious,
    )


def _attackers(config: RunConfig, per_org: int, stream: int) -> frozenset[int]:
    """The malicious workers (or devices) among `per_org` per org: every one of
    ``malicious_org``, or a seeded draw of the ``malicious`` fraction."""
    if config.malicious_org is not None:
        first = (config.malicious_org - 1) * per_org
        return frozenset(range(first, first + per_org))
    n = config.orgs * per_org
    return choose_malicious(n, config.malicious, ml.derive_seed(config.seed, stream))


def validation_split(fed: Federation, org: int) -> ml.Dataset:
    """Organisation `org`'s (0-based) private validation split.

    `ml.partition` carves it from that organisation's own share of the data only: a seeded
    random ``config.validation_fraction`` of the share, taken before the rest is divided
    among the org's workers, so it is disjoint from every training set and the same in
    every process. It stays with the organisation: written only to a file its own chaincode
    server reads (`write_validation_split`), never to the ledger.
    """
    if not 0 <= org < fed.config.orgs:
        raise ValueError(f"organisation index {org} is not in 0..{fed.config.orgs - 1}")
    return fed.partition.orgs[org].validation


def write_validation_split(fed: Federation, org: int, path: Path) -> dict[str, str]:
    """Write organisation `org`'s `validation_split` for `VALIDATOR` to `path` (mode
    0600, atomically) and return the chaincode server settings that validate with it."""
    split = validation_split(fed, org)
    temporary = path.with_name(f".{path.stem}.tmp.npz")  # np.savez adds .npz to other names
    fl.write_validation_data(temporary, split.x, split.y, fed.model_spec)
    temporary.chmod(0o600)
    temporary.replace(path)
    return {"validator": VALIDATOR, "validation_data": str(path)}


def local_update(
    fed: Federation,
    global_model: Mapping[str, np.ndarray],
    *,
    round_no: int,
    worker: int,
    fit: FitConfig,
) -> tuple[dict[str, np.ndarray], int, float]:
    """Train worker `worker` from `global_model` for one round; return its honest delta,
    its sample count and its mean training loss.

    A malicious worker with a data-side attack (label flipping) trains on poisoned data
    here; update-side attacks are applied afterwards by `poison_updates`.
    """
    config = fed.config
    data = fed.workers[worker]
    if worker in fed.malicious and fed.attack is not None:
        rng = np.random.default_rng(ml.derive_seed(config.seed, _STREAM_DATA, worker))
        data = fed.attack.poison_data(data, rng)
    seed = ml.derive_seed(config.seed, _STREAM_TRAIN, round_no, worker)
    delta, loss = _train(fed, fl.build_model(fed.model_spec), global_model, data, fit, seed)
    return delta, len(data), loss


def _train(
    fed: Federation, model: Any, base: Tensors, data: ml.Dataset, fit: FitConfig, seed: int
) -> tuple[dict[str, np.ndarray], float]:
    """Train `model` from `base` on `data` with the run's settings; the delta and the loss."""
    config = fed.config
    fl.set_weights(model, base)
    loss = ml.train(
        model,
        data,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=seed,
        proximal_mu=fit.proximal_mu,
    )
    return ml.weight_delta(fl.get_weights(model), base), loss


def poison_updates(
    fed: Federation,
    deltas: Mapping[int, Mapping[str, np.ndarray]],
    *,
    round_no: int,
    base: Tensors | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Replace the malicious workers' deltas by their attack's output for round `round_no`;
    with the round's global model `base`, each attacker can score candidates on its own data
    (`RoundView.loss`)."""
    out = {i: dict(d) for i, d in deltas.items()}
    if fed.attack is None:
        return out
    config = fed.config
    view = RoundView(
        honest=[deltas[i] for i in sorted(deltas) if i not in fed.malicious],
        num_workers=config.num_workers,
        num_malicious=len(fed.malicious),
        validation_threshold=_threshold_met(config),
        norm_bound=config.norm_bound,
    )
    for i in sorted(fed.malicious & set(deltas)):
        rng = np.random.default_rng(ml.derive_seed(config.seed, _STREAM_ATTACK, round_no, i))
        mine = view if base is None else replace(view, loss=partial(_loss, fed, base, i))
        out[i] = fed.attack.poison_update(deltas[i], mine, rng)
    return out


def _threshold_met(config: RunConfig) -> float | None:
    """The validation threshold that binds an attacker's update: its own organisation
    endorses first with ``own_org_threshold``, unless the whole organisation is malicious
    (``malicious_org``) and endorses anything; then only the others' threshold counts."""
    if config.malicious_org is not None or config.own_org_threshold is None:
        return config.validation_threshold
    if config.validation_threshold is None:
        return None
    return min(config.validation_threshold, config.own_org_threshold)


def _loss(fed: Federation, base: Tensors, worker: int, delta: Tensors) -> float:
    """The loss of ``base + delta`` on worker `worker`'s own data."""
    net = fl.build_model(fed.model_spec)
    fl.set_weights(net, {k: np.asarray(base[k], np.float32) + delta[k] for k in base})
    return ml.evaluate(net, fed.workers[worker])[0]


class DeltaCache:
    """Honest deltas by (round, worker, base model digest), computed once per process.

    Thread-safe: trainers run in worker threads. An attacker that needs the honest updates
    of its round (ALIE) reads them here instead of training every honest worker again.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[int, int, str], tuple[dict[str, np.ndarray], int, float]] = {}
        self._locks: dict[tuple[int, int, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def get(
        self, fed: Federation, base: Tensors, base_digest: str, round_no: int, worker: int
    ) -> tuple[dict[str, np.ndarray], int, float]:
        """`local_update` of `worker`, cached."""
        key = (round_no, worker, base_digest)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._values:
                fit = fed.strategy.fit_config(round_no)
                self._values[key] = local_update(
                    fed, base, round_no=round_no, worker=worker, fit=fit
                )
            return self._values[key]

    def forget_before(self, round_no: int) -> None:
        """Drop the deltas of rounds before `round_no` (they are never needed again)."""
        with self._guard:
            for key in [k for k in self._values if k[0] < round_no]:
                del self._values[key]
                self._locks.pop(key, None)


class FederationTrainer:
    """Worker `index` of `fed`: its honest local update, then the attack if it is malicious."""

    def __init__(self, fed: Federation, index: int, deltas: DeltaCache | None = None) -> None:
        if not 0 <= index < fed.config.num_workers:
            raise ValueError(f"worker index {index} is not in 0..{fed.config.num_workers - 1}")
        self.fed = fed
        self.index = index
        self.layout = fed.layout
        self.deltas = deltas if deltas is not None else DeltaCache()

    def compute(self, base: Tensors, base_digest: str, round_no: int) -> LocalUpdate:
        fed, index = self.fed, self.index
        self.deltas.forget_before(round_no)
        delta, samples, loss = self.deltas.get(fed, base, base_digest, round_no, index)
        if index in fed.malicious and fed.attack is not None:
            known = {index: delta}
            if fed.attack.needs_honest:
                for i in range(fed.config.num_workers):
                    if i not in fed.malicious:
                        known[i] = self.deltas.get(fed, base, base_digest, round_no, i)[0]
            delta = poison_updates(fed, known, round_no=round_no, base=base)[index]
        return encode(
            delta, self.layout, fed.config.quantization, fed.config.compression, samples, loss
        )


def federation_workers(
    fed: Federation,
    ledgers: Sequence[Ledger],
    *,
    which: Sequence[int] | None = None,
    resources: WorkerResources | None = None,
    retry: Retry | None = None,
) -> list[Worker]:
    """One `Worker` per worker of `fed` (``ledgers[i]`` is worker ``i``'s identity), named
    ``org<k>-worker<j>``, sharing `resources`. With `which`, only those workers of `fed`
    (``ledgers[i]`` is worker ``which[i]``'s): one organisation's, on its own host."""
    indices = list(range(fed.config.num_workers)) if which is None else list(which)
    if len(ledgers) != len(indices) or not set(indices) <= set(range(fed.config.num_workers)):
        raise ValueError(
            f"{len(ledgers)} ledgers for workers {indices} of {fed.config.num_workers}"
        )
    resources = resources if resources is not None else WorkerResources()
    return [
        Worker(
            fed.worker_name(i),
            ledger,
            FederationTrainer(fed, i, resources.deltas),
            resources=resources,
            retry=retry,
        )
        for i, ledger in zip(indices, ledgers, strict=True)
    ]


def device_trainers(fed: Federation, devices_per_org: int) -> list[DeviceTrainer]:
    """The trainers of `devices_per_org` simulated devices per org of `fed`, org by org; the
    run's malicious fraction applies to the devices.

    Raises ValueError when an org has fewer training samples than devices, or when the run's
    attack needs the honest updates of the round (ALIE), which devices never see.
    """
    shards = device_shards(fed, devices_per_org)
    malicious = _attackers(fed.config, devices_per_org, _STREAM_DEVICE_MALICIOUS)
    if fed.attack is not None and fed.attack.needs_honest and malicious:
        raise ValueError(
            f"attack {fed.attack.name!r} needs the honest updates of a round; "
            "device mode does not share them"
        )
    return [
        DeviceTrainer(
            fed, i, shard, malicious=i in malicious, total=len(shards), num_malicious=len(malicious)
        )
        for i, shard in enumerate(shards)
    ]


def device_shards(fed: Federation, devices_per_org: int) -> list[ml.Dataset]:
    """Each org's training data split across its devices (a seeded split), org by org."""
    if devices_per_org < 1:
        raise ValueError(f"devices_per_org must be >= 1, got {devices_per_org}")
    shards = []
    for k, org in enumerate(fed.partition.orgs):
        x = np.concatenate([w.x for w in org.workers])
        y = np.concatenate([w.y for w in org.workers])
        if len(y) < devices_per_org:
            raise ValueError(
                f"org {k + 1} has {len(y)} training samples for {devices_per_org} "
                "devices; every device needs one"
            )
        data = ml.Dataset(org.workers[0].name, x, y, org.workers[0].num_classes)
        order = np.random.default_rng(ml.derive_seed(fed.config.seed, 10, k)).permutation(len(y))
        shards += [data.subset(np.sort(part)) for part in np.array_split(order, devices_per_org)]
    return shards


class DeviceTrainer:
    """A device's local training: the run's epochs over its few samples, seeded by
    (seed, round, device); a malicious device applies the run's attack on its own."""

    _local = threading.local()

    def __init__(
        self,
        fed: Federation,
        index: int,
        data: ml.Dataset,
        *,
        malicious: bool,
        total: int,
        num_malicious: int,
    ) -> None:
        self.fed = fed
        self.index = index
        self.data = data
        self.malicious = malicious and fed.attack is not None
        self.layout = fed.layout
        self._view = RoundView(num_workers=total, num_malicious=num_malicious)

    def compute(
        self, base: Mapping[str, np.ndarray], base_digest: str, round_no: int
    ) -> LocalUpdate:
        config, attack = self.fed.config, self.fed.attack
        data = self.data
        if self.malicious and attack is not None:
            rng = np.random.default_rng(
                ml.derive_seed(config.seed, _STREAM_DEVICE_ATTACK, 0, self.index)
            )
            data = attack.poison_data(data, rng)
        seed = ml.derive_seed(config.seed, _STREAM_DEVICE_TRAIN, round_no, self.index)
        fit = self.fed.strategy.fit_config(round_no)
        delta, loss = _train(self.fed, self._model(), base, data, fit, seed)
        if self.malicious and attack is not None:
            rng = np.random.default_rng(
                ml.derive_seed(config.seed, _STREAM_DEVICE_ATTACK, round_no, self.index)
            )
            delta = attack.poison_update(delta, self._view, rng)
        return encode(
            delta, self.layout, config.quantization, config.compression, len(self.data), loss
        )

    def _model(self) -> Any:
        """One torch model per thread and spec, reused (building one per device is slow)."""
        cache = getattr(self._local, "models", None)
        if cache is None:
            cache = self._local.models = {}
        key = json.dumps(self.fed.model_spec, sort_keys=True)
        if key not in cache:
            cache[key] = fl.build_model(self.fed.model_spec)
        return cache[key]
