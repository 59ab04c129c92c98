"""The run without the ledger: plain federated learning in memory, the reference to match.

`run_baseline(config)` does what the ledger run does, minus Fabric: the same seeded
partition and initial model (`prepare`), the same local training per worker and round
(`local_update`), the same attacks, the same update encoding round trip
(`fedfabric.chaincode.fl.encode_update` with the run's quantisation and compression), the
contract's refusals that depend only on the update (encoding, size, non-finite values, norm
bound, replayed content) and the same aggregation the contract runs (the task's
`fedfabric.chaincode.fl` rule in integer fixed point, then `encode_model`, as
`fedfabric.chaincode.fl.aggregate_round` does).
With equal settings its global models are the ones the ledger run should commit, bit for
bit (Krum ties aside: the ledger breaks them in its key order, this run in worker order).

Not emulated: org-private validation (``validation_threshold``) and endorsement policies,
which need the orgs' peers; the result says so in `BaselineResult.notes`.

Example::

    result = run_baseline(RunConfig(rounds=3, seed=1))
    print([f"{r.accuracy:.3f}" for r in result.rounds])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker import task
from fedfabric.fl_worker.attacks import Attack, RoundView, choose_malicious
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.strategies import FitConfig, Strategy

# Independent random streams derived from the run seed (see `task.derive_seed`).
_STREAM_MALICIOUS, _STREAM_TRAIN, _STREAM_ATTACK, _STREAM_DATA = 1, 2, 3, 4
TASK_ID = "baseline"


@dataclass(frozen=True)
class Federation:
    """Everything a run derives from its config before round 1 (identical in every process).

    `workers` lists every worker's training data, org by org; worker ``i`` belongs to org
    ``i // workers_per_org``. `malicious` holds the indices of the attacking workers.
    """

    config: RunConfig
    dataset: task.Dataset
    partition: task.Partition
    model_spec: dict[str, Any]
    layout: fl.Layout
    initial_model: dict[str, np.ndarray]
    strategy: Strategy
    attack: Attack | None
    malicious: frozenset[int]

    @property
    def workers(self) -> tuple[task.Dataset, ...]:
        return self.partition.workers

    def worker_name(self, index: int) -> str:
        """A stable name for worker `index`: ``org<k>-worker<j>`` (1-based)."""
        per_org = self.config.workers_per_org
        return f"org{index // per_org + 1}-worker{index % per_org + 1}"


def prepare(config: RunConfig, *, strategy: Strategy | None = None) -> Federation:
    """Load the data, partition it and build the initial model, all seeded by `config.seed`.

    `strategy` overrides the configured one (e.g. a user's own `Strategy` instance). Raises
    `ConfigError` when the model spec does not fit the data, and FileNotFoundError or
    ValueError from `task.load_dataset` / `task.partition` for bad data.
    """
    data = task.load_dataset(config.dataset)
    spec = dict(config.model) if config.model is not None else task.default_model_spec(data)
    features, classes = fl.model_inputs(spec)
    if features != data.x.shape[1] or classes < data.num_classes:
        raise ConfigError(
            "model",
            f"the model takes {features} features and {classes} classes; dataset "
            f"{config.dataset!r} has {data.x.shape[1]} features and {data.num_classes} classes",
        )
    parts = task.partition(
        data,
        orgs=config.orgs,
        workers_per_org=config.workers_per_org,
        alpha=config.alpha,
        seed=config.seed,
    )
    malicious = choose_malicious(
        config.num_workers, config.malicious, task.derive_seed(config.seed, _STREAM_MALICIOUS)
    )
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
        rng = np.random.default_rng(task.derive_seed(config.seed, _STREAM_DATA, worker))
        data = fed.attack.poison_data(data, rng)
    model = fl.build_model(fed.model_spec)
    fl.set_weights(model, global_model)
    loss = task.train(
        model,
        data,
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=task.derive_seed(config.seed, _STREAM_TRAIN, round_no, worker),
        proximal_mu=fit.proximal_mu,
    )
    return task.weight_delta(fl.get_weights(model), global_model), len(data), loss


def poison_updates(
    fed: Federation, deltas: Mapping[int, Mapping[str, np.ndarray]], *, round_no: int
) -> dict[int, dict[str, np.ndarray]]:
    """Replace the malicious workers' deltas by their attack's output for round `round_no`."""
    out = {i: dict(d) for i, d in deltas.items()}
    if fed.attack is None:
        return out
    view = RoundView(
        honest=[deltas[i] for i in sorted(deltas) if i not in fed.malicious],
        num_workers=fed.config.num_workers,
        num_malicious=len(fed.malicious),
    )
    for i in sorted(fed.malicious & set(deltas)):
        rng = np.random.default_rng(task.derive_seed(fed.config.seed, _STREAM_ATTACK, round_no, i))
        out[i] = fed.attack.poison_update(deltas[i], view, rng)
    return out


@dataclass(frozen=True)
class RoundResult:
    """One round: test accuracy and loss of the new global model, and what happened to the
    updates (worker names). `aggregated` is False when too few updates were accepted; the
    global model then stays as it was."""

    round: int
    accuracy: float
    loss: float
    train_loss: float
    accepted: tuple[str, ...]
    refused: tuple[tuple[str, str], ...]
    used: tuple[str, ...]
    excluded: tuple[str, ...]
    clipped: tuple[str, ...]
    aggregated: bool
    update_bytes: int
    model_digest: str


@dataclass(frozen=True)
class BaselineResult:
    """A whole in-memory run: the initial model's scores, each round, the final model."""

    config: RunConfig
    initial_accuracy: float
    initial_loss: float
    rounds: tuple[RoundResult, ...]
    malicious: tuple[str, ...]
    final_model: bytes
    notes: tuple[str, ...] = ()

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        return self.rounds[-1].accuracy if self.rounds else self.initial_accuracy


def _refusal(spec: fl.TaskSpec, blob: bytes, seen: set[str]) -> str | None:
    """Why the contract would refuse `blob` on content alone, or None."""
    try:
        fl.check_update(spec, blob)
    except fl.FLError as exc:
        return str(exc)
    digest = fl.read_header(blob)["content_digest"]
    if digest in seen:
        return "replay: the same content was already submitted"
    seen.add(digest)
    return None


def run_baseline(
    config: RunConfig,
    *,
    strategy: Strategy | None = None,
    on_round: Callable[[RoundResult], None] | None = None,
) -> BaselineResult:
    """Run `config` in memory for `config.rounds` rounds; return per-round results.

    `strategy` replaces the configured strategy (a user's `Strategy` instance); its rule
    needs registering with `fedfabric.chaincode.fl.register_strategy` only for the ledger.
    `on_round` is called after each round (e.g. for progress).
    Raises `ConfigError` or the data errors of `prepare`.
    """
    fed = prepare(config, strategy=strategy)
    orgs = [f"org{i + 1}" for i in range(config.orgs)]
    spec = fl.TaskSpec.from_json(config.task_json(TASK_ID, fed.layout, orgs))
    minimum = max(config.min_updates or 0, fed.strategy.min_updates)
    model = fl.build_model(fed.model_spec)
    fl.set_weights(model, fed.initial_model)
    initial_loss, initial_accuracy = task.evaluate(model, fed.partition.test)
    base = fl.encode_model(fed.initial_model, fed.layout)
    global_model = fed.initial_model
    seen: set[str] = set()
    rounds = []
    for round_no in range(1, config.rounds + 1):
        fit = fed.strategy.fit_config(round_no)
        deltas, samples, losses = {}, {}, []
        for i in range(config.num_workers):
            deltas[i], samples[i], loss = local_update(
                fed, global_model, round_no=round_no, worker=i, fit=fit
            )
            losses.append(loss)
        deltas = poison_updates(fed, deltas, round_no=round_no)
        submissions, refused, size = [], [], 0
        for i in range(config.num_workers):
            name = fed.worker_name(i)
            try:
                blob = fl.encode_update(
                    deltas[i],
                    fed.layout,
                    quantization=config.quantization,
                    compression=config.compression,
                )
            except fl.UpdateError as exc:
                refused.append((name, str(exc)))
                continue
            reason = _refusal(spec, blob, seen)
            if reason is not None:
                refused.append((name, reason))
                continue
            size += len(blob)
            record = {
                "digest": fl.read_header(blob)["content_digest"],
                "num_samples": samples[i],
                "worker": name,
            }
            submissions.append((record, blob))
        aggregated = len(submissions) >= minimum
        used = excluded = clipped = ()
        if aggregated:
            # What aggregate_round (CommitAggregate) does: decode, rule, encode_model.
            updates = [
                fl.Update(r["worker"], fl.decode_update(b, fed.layout), r["num_samples"])
                for r, b in submissions
            ]
            result = fed.strategy.aggregate(global_model, updates)
            base = fl.encode_model(result.model, fed.layout)
            global_model = fl.decode_update(base, fed.layout)
            used, clipped = result.used, result.clipped
            excluded = tuple(e.update_id for e in result.excluded)
        fl.set_weights(model, global_model)
        loss, accuracy = task.evaluate(model, fed.partition.test)
        result_round = RoundResult(
            round=round_no,
            accuracy=accuracy,
            loss=loss,
            train_loss=float(np.mean(losses)),
            accepted=tuple(r["worker"] for r, _ in submissions),
            refused=tuple(refused),
            used=used,
            excluded=excluded,
            clipped=clipped,
            aggregated=aggregated,
            update_bytes=size,
            model_digest=fl.read_header(base)["content_digest"],
        )
        rounds.append(result_round)
        if on_round is not None:
            on_round(result_round)
    notes = ()
    if config.validation_threshold is not None:
        notes = ("org-private validation is not emulated in memory",)
    return BaselineResult(
        config=config,
        initial_accuracy=initial_accuracy,
        initial_loss=initial_loss,
        rounds=tuple(rounds),
        malicious=tuple(fed.worker_name(i) for i in sorted(fed.malicious)),
        final_model=base,
        notes=notes,
    )
