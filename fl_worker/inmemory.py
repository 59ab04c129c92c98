"""The run without the ledger: the same coordinator and workers over the in-memory contract.

`run_in_memory(config)` is the comparison run of `fedfabric run`. It is not a second
implementation: `Coordinator` and `Worker` run exactly as on Fabric, over `MemoryFL` (the
real `FLContract` over a memory world state, one block per transaction) instead of a
gateway. Same seeds, same contract checks, same aggregation: given the ledger run's
identities (the ledger's key order, and so Krum's tie-breaking, follows them) it commits the
ledger run's global models, byte for byte.

When the config sets a ``validation_threshold``, org-private validation runs as on the
ledger: each organisation has its own `FLContract`, built from the same settings its chaincode
server gets in `fedfabric run` (`fl.numpy_loss` on the org's `validation_split`, written to a
temporary file), and every update is endorsed by a majority of them as the Fabric gateway
does it (`MemoryFL`). The contract's own check decides; only the transport differs. The
organisation a config makes malicious (``malicious_org``) runs no validator: it endorses
whatever its workers send, so only the other organisations' validation stands in the way.

Example::

    result = await run_in_memory(RunConfig(rounds=3, seed=1))
    print([f"{r.accuracy:.3f}" for r in result.rounds])
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fabric_protos.msp import identities_pb2

from fedfabric.chaincode import fl
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.async_rounds import coordinator_for
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import RoundOutcome
from fedfabric.fl_worker.federation import federation_workers, prepare, write_validation_split
from fedfabric.fl_worker.ledger import MemoryFL
from fedfabric.fl_worker.strategies import Strategy
from fedfabric.fl_worker.worker import WorkerResources

TASK_ID = "in-memory"


@dataclass(frozen=True)
class MemoryRun:
    """A whole in-memory run: the initial model's scores, each round, the final model."""

    config: RunConfig
    initial_accuracy: float
    initial_loss: float
    rounds: tuple[RoundOutcome, ...]
    malicious: tuple[str, ...]
    final_model: bytes

    @property
    def final_accuracy(self) -> float:
        """Test accuracy after the last round."""
        last = self.rounds[-1].accuracy if self.rounds else None
        return self.initial_accuracy if last is None else last


def identities(config: RunConfig) -> tuple[bytes, list[bytes]]:
    """Stand-in identities for a run without a network: an admin of ``Org1MSP`` and worker
    ``j`` of org ``k`` as ``worker<j>`` of ``Org<k>MSP``."""
    admin = fake_identity("Org1MSP", role="admin", name="admin")
    workers = [
        fake_identity(f"Org{i // config.workers_per_org + 1}MSP", name=f"worker{i}")
        for i in range(config.num_workers)
    ]
    return admin, workers


async def run_in_memory(
    config: RunConfig,
    *,
    strategy: Strategy | None = None,
    admin: bytes | None = None,
    workers: Sequence[bytes] | None = None,
    on_round: Callable[[RoundOutcome], Any] | None = None,
) -> MemoryRun:
    """Run `config` over a fresh `MemoryFL`; return the initial scores and every round.

    `admin` and `workers` are ``SerializedIdentity`` bytes (default: `identities`); pass a
    ledger run's own to reproduce its models bit for bit. `strategy` replaces the configured
    one (its rule must be registered with `fedfabric.chaincode.fl.register_rule`). Raises
    `ConfigError`, the data errors of `prepare`, and `RoundIncompleteError` when a round gets
    fewer updates than the rule needs.
    """
    fed = prepare(config, strategy=strategy)
    if admin is None or workers is None:
        admin, workers = identities(config)
    msp_ids = list(
        dict.fromkeys(identities_pb2.SerializedIdentity.FromString(w).mspid for w in workers)
    )
    with tempfile.TemporaryDirectory(prefix="fedfabric-validation-") as folder:
        contracts = None
        if config.validation_threshold is not None:
            contracts = {}
            for k, msp in enumerate(msp_ids):
                settings = {"msp_id": msp}
                if config.malicious_org != k + 1:  # a malicious org endorses anything
                    settings.update(write_validation_split(fed, k, Path(folder) / f"{msp}.npz"))
                contracts[msp] = fl.FLContract(settings)
        world = MemoryFL(contracts)
        resources = WorkerResources(train_concurrency=2)
        # Each org's admin registers its workers; who signs does not change any model.
        registrars = [world.ledger(fake_identity(m, role="admin", name="admin")) for m in msp_ids]
        coordinator = coordinator_for(
            fed,
            world.ledger(admin),
            task=TASK_ID,
            allowed_orgs=msp_ids,
            resources=resources,
            registrars=registrars,
        )
        team = federation_workers(fed, [world.ledger(w) for w in workers], resources=resources)
        await coordinator.create_or_load_task()
        initial_loss, initial_accuracy = await coordinator.evaluate(fed.initial_model)
        outcomes = await coordinator.run(team, on_round=on_round)
    return MemoryRun(
        config=config,
        initial_accuracy=initial_accuracy,
        initial_loss=initial_loss,
        rounds=tuple(outcomes),
        malicious=tuple(fed.worker_name(i) for i in sorted(fed.malicious)),
        final_model=outcomes[-1].model if outcomes else coordinator.initial_model(),
    )
