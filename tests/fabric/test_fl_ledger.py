"""Federated learning over three real Fabric peers: workers, coordinator, resume, audit.

3 orgs × 3 workers train the digits MLP for 2 rounds; every update is endorsed by the
policy's orgs, every aggregate is recomputed by the endorsers, and the global models are the
in-memory baseline's, byte for byte.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fedfabric.fl_worker.audit import audit_task, verify_model
from fedfabric.fl_worker.baseline import prepare, run_baseline
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import Coordinator
from fedfabric.fl_worker.devices import Clients
from fedfabric.fl_worker.worker import COMMITTED, SKIPPED, WorkerResources
from fedfabric.gateway import EvaluateError
from fedfabric.network import FabricNetwork
from tests.fixtures.gated import Gated, interrupt_run

CONFIG = RunConfig(rounds=2, orgs=3, workers_per_org=3, epochs=1, seed=11)


@pytest.fixture(scope="module")
def baseline():
    return run_baseline(CONFIG)


@pytest.fixture(scope="module", autouse=True)
async def endorsers_discovered(network: FabricNetwork) -> None:
    """Wait (with a deadline) until every org's gateway knows every org's ``fl`` endorser."""
    deadline = time.monotonic() + 60
    async with Clients(network) as clients:
        for org in clients.org_names(3):
            ledger = clients.ledger(org, network.identity(org, "User1"))
            for msp in clients.msp_ids(3):
                while True:
                    try:
                        await ledger.contract.evaluate("org.hyperledger.fabric:GetMetadata",
                                                       endorsing_orgs=[msp])
                        break
                    except EvaluateError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.25)


async def federation(network: FabricNetwork, clients: Clients, task: str,
                     config: RunConfig = CONFIG, train_concurrency: int = 1):
    fed = prepare(config)
    admin = await clients.admin_ledger("energy")
    coordinator = Coordinator(fed, admin, task=task, allowed_orgs=clients.msp_ids(3),
                              event_timeout=60)
    resources = WorkerResources(train_concurrency=train_concurrency)
    workers = await clients.federation_workers(fed, resources=resources)
    return fed, coordinator, workers


async def test_a_consortium_trains_the_baselines_model_and_the_audit_recomputes_it(
        network, baseline, tmp_path) -> None:
    async with Clients(network) as clients:
        fed, coordinator, workers = await federation(network, clients, "ledger-e2e")
        info = await coordinator.create_or_load_task()
        _, initial_accuracy = await coordinator.evaluate(coordinator.initial_model())

        outcomes = await coordinator.run(workers)

        report = await audit_task(coordinator.ledger, "ledger-e2e")
        final = outcomes[-1].model
        tampered = tmp_path / "tampered.bin"
        tampered.write_bytes(final[:-4] + bytes(4))
        check = await verify_model(coordinator.ledger, "ledger-e2e", tampered)
    for o in outcomes:
        print(f"round {o.round}: {o.timings['total']:.2f}s {dict(o.timings)}")
    assert info.created
    assert outcomes[-1].accuracy > initial_accuracy + 0.2
    assert final == baseline.final_model
    assert [o.model_digest for o in outcomes] == [r.model_digest for r in baseline.rounds]
    assert all(r.status == COMMITTED for o in outcomes for r in o.workers)
    assert [len(o.updates) for o in outcomes] == [9, 9] and outcomes[0].events == 9
    assert sorted(outcomes[0].per_org) == ["EnergyMSP", "HealthMSP", "TransportMSP"]
    assert all(s.accepted == 3 for s in outcomes[0].per_org.values())
    assert report.ok and [r.match for r in report.rounds] == [True, True]
    assert not check.matches


async def test_a_run_cancelled_mid_round_resumes_from_the_ledger_to_the_same_model(
        network, baseline) -> None:
    task = "ledger-resume"
    gate = threading.Event()
    async with Clients(network) as clients:
        _, coordinator, workers = await federation(network, clients, task,
                                                   train_concurrency=9)
        await coordinator.create_or_load_task()
        await coordinator.run_round(1, workers)
        for worker in workers[5:]:
            worker.trainer = Gated(worker.trainer, gate)
        await interrupt_run(coordinator, workers, round_no=2, updates=5, gate=gate,
                            timeout=120)
        point = await coordinator.resume_point()

    async with Clients(network) as clients:  # a new process: nothing but the ledger
        _, coordinator, workers = await federation(network, clients, task)
        await coordinator.create_or_load_task()
        outcomes = await coordinator.run(workers)

    assert (point.round, point.phase, len(point.updates)) == (2, "open", 5)
    assert [o.round for o in outcomes] == [2]
    assert [r.status for r in outcomes[0].workers] == [SKIPPED] * 5 + [COMMITTED] * 4
    assert outcomes[0].model == baseline.final_model


async def test_thirty_devices_with_their_own_identities_train_one_round(network) -> None:
    config = CONFIG.replace(rounds=1)
    async with Clients(network) as clients:
        fed = prepare(config)
        admin = await clients.admin_ledger("transport")
        coordinator = Coordinator(fed, admin, task="ledger-devices",
                                  allowed_orgs=clients.msp_ids(3), event_timeout=60)
        devices = await clients.device_workers(fed, 10)
        await coordinator.create_or_load_task()
        started = time.perf_counter()

        outcome = await coordinator.run_round(1, devices)

        elapsed = time.perf_counter() - started
    print(f"30 devices: round {elapsed:.2f}s {dict(outcome.timings)}")
    assert [r.status for r in outcome.workers] == [COMMITTED] * 30
    assert len({r.worker_id for r in outcome.workers}) == 30
    assert len(outcome.aggregate["used"]) == 30
    assert {org: s.accepted for org, s in outcome.per_org.items()} == {
        "EnergyMSP": 10, "HealthMSP": 10, "TransportMSP": 10}
