"""Workers, coordinator, resume and audit over the in-memory FL ledger (`MemoryFL`).

The ledger is the real `FLContract` over a memory world state, so refusals, replays and
aggregation are the contract's own; the runs are compared with the in-memory baseline.
"""

from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from fedfabric.chaincode import fl
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.audit import audit_task, verify_model
from fedfabric.fl_worker.baseline import prepare, run_baseline
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import (
    Coordinator,
    RoundIncompleteError,
    TaskMismatchError,
)
from fedfabric.fl_worker.devices import DeviceTrainer, device_shards
from fedfabric.fl_worker.ledger import MemoryFL
from fedfabric.fl_worker.worker import (
    COMMITTED,
    REPLAYED,
    SKIPPED,
    Retry,
    Worker,
    WorkerResources,
)
from fedfabric.gateway import CommitStatusError, GatewayError
from tests.fixtures.gated import Gated, interrupt_run

ORGS = ["Org1MSP", "Org2MSP", "Org3MSP"]
TASK = "digits-test"
FAST = Retry(attempts=3, backoff=0.0)
CONFIG = RunConfig(rounds=2, orgs=3, workers_per_org=2, epochs=1, batch_size=32, seed=5)


class Run:
    """A federation, a memory ledger, its admin coordinator and one worker per identity."""

    def __init__(self, config: RunConfig = CONFIG, world: MemoryFL | None = None,
                 identities: dict[str, bytes] | None = None, train_concurrency: int = 1) -> None:
        self.config = config
        self.fed = prepare(config)
        self.world = world or MemoryFL()
        self.ids = identities or {
            f"w{i}": fake_identity(ORGS[i // config.workers_per_org], name=f"worker{i}")
            for i in range(config.num_workers)
        } | {"admin": fake_identity("Org1MSP", role="admin", name="admin")}
        self.coordinator = Coordinator(self.fed, self.world.ledger(self.ids["admin"]), task=TASK,
                                       allowed_orgs=ORGS, event_timeout=5, retry=FAST)
        resources = WorkerResources(train_concurrency=train_concurrency)
        self.workers = [
            Worker.for_federation(self.fed, i, self.world.ledger(self.ids[f"w{i}"]),
                                  resources=resources, retry=FAST)
            for i in range(config.num_workers)
        ]

    def again(self) -> Run:
        """A fresh process's view of the same ledger and identities (nothing cached)."""
        return Run(self.config, self.world, self.ids)

    async def final_model(self) -> bytes:
        return await self.coordinator.ledger.global_model(TASK, self.config.rounds)


async def test_a_ledger_run_commits_exactly_the_baselines_models():
    run = Run()
    await run.coordinator.create_or_load_task()
    initial_loss, initial_accuracy = await run.coordinator.evaluate(
        run.coordinator.initial_model())

    outcomes = await run.coordinator.run(run.workers)

    baseline = run_baseline(CONFIG)
    assert [o.model_digest for o in outcomes] == [r.model_digest for r in baseline.rounds]
    assert await run.final_model() == baseline.final_model
    assert outcomes[-1].accuracy > initial_accuracy + 0.2
    first = outcomes[0]
    assert [r.status for r in first.workers] == [COMMITTED] * 6
    assert len(first.updates) == 6 and first.events == 6
    assert {org: s.accepted for org, s in first.per_org.items()} == dict.fromkeys(ORGS, 2)
    assert sorted(first.used) == sorted(w.name for w in run.workers)
    assert first.update_bytes == sum(r.size for r in first.workers) > 0
    assert {"open", "train_submit", "events", "aggregate", "total"} <= set(first.timings)


async def test_refused_updates_are_reported_with_check_and_orgs_and_match_the_baseline():
    config = CONFIG.replace(attack="scaling", attack_params={"factor": 1e4}, malicious=0.34,
                            norm_bound=20.0)
    run = Run(config)
    await run.coordinator.create_or_load_task()

    outcome = await run.coordinator.run_round(1, run.workers)

    baseline = run_baseline(config)
    assert outcome.model_digest == baseline.rounds[0].model_digest
    refused = {name: (org, r.check) for name, org, r in outcome.refused}
    assert sorted(refused) == sorted(name for name, _ in baseline.rounds[0].refused)
    assert refused and all(check == "norm" for _, check in refused.values())
    for _, org, r in outcome.refused:
        assert r.orgs == (org,) and "exceeds the bound 20.0" in r.message
        assert outcome.per_org[org].refused >= 1


async def test_resubmitting_after_an_unknown_commit_outcome_is_success_not_a_double_count():
    run = Run()
    await run.coordinator.create_or_load_task()
    await run.coordinator.ledger.open_round(TASK, 1)
    lost = CommitStatusError("tx", code=grpc.StatusCode.DEADLINE_EXCEEDED, grpc_message="slow")
    run.world.fail_next("SubmitUpdate", lost, after_commit=True)

    result = await run.workers[0].run_round(TASK, 1)

    page = await run.coordinator.ledger.round_updates(TASK, 1)
    assert (result.status, result.attempts) == (REPLAYED, 2)
    assert [u["worker"] for u in page["updates"]] == [run.workers[0].worker_id]


async def test_an_unavailable_gateway_is_retried():
    run = Run()
    await run.coordinator.create_or_load_task()
    await run.coordinator.ledger.open_round(TASK, 1)
    run.world.fail_next("SubmitUpdate", GatewayError("down", code=grpc.StatusCode.UNAVAILABLE))

    result = await run.workers[1].run_round(TASK, 1)

    assert (result.status, result.attempts) == (COMMITTED, 2)


async def test_a_worker_whose_retries_run_out_keeps_the_round_open():
    run = Run()
    await run.coordinator.create_or_load_task()
    for _ in range(FAST.attempts):
        run.world.fail_next("SubmitUpdate", GatewayError("down", code=grpc.StatusCode.UNAVAILABLE))

    with pytest.raises(RoundIncompleteError) as info:
        await run.coordinator.run_round(1, run.workers)

    point = await run.coordinator.resume_point()
    assert info.value.round == 1 and len(info.value.missing) == 1
    assert (point.round, point.phase, len(point.updates)) == (1, "open", 5)


async def test_resume_after_the_coordinator_is_cancelled_mid_round_gives_the_same_model():
    run = Run(train_concurrency=6)
    await run.coordinator.create_or_load_task()
    await run.coordinator.run_round(1, run.workers)
    gate = threading.Event()
    for worker in run.workers[2:]:
        worker.trainer = Gated(worker.trainer, gate)

    await interrupt_run(run.coordinator, run.workers, round_no=2, updates=2, gate=gate,
                        timeout=30)
    point = await run.coordinator.resume_point()
    resumed = run.again()

    outcomes = await resumed.coordinator.run(resumed.workers)

    assert (point.round, point.phase, len(point.updates)) == (2, "open", 2)
    assert [o.round for o in outcomes] == [2]
    assert [r.status for r in outcomes[0].workers] == [SKIPPED] * 2 + [COMMITTED] * 4
    assert await resumed.final_model() == run_baseline(CONFIG).final_model


async def test_resume_point_follows_the_round_phases():
    run = Run()
    await run.coordinator.create_or_load_task()
    ledger = run.coordinator.ledger
    phases = [await run.coordinator.resume_point()]
    await ledger.open_round(TASK, 1)
    await asyncio.gather(*(w.run_round(TASK, 1) for w in run.workers[:2]))
    phases.append(await run.coordinator.resume_point())
    await ledger.close_round(TASK, 1)
    phases.append(await run.coordinator.resume_point())
    outcome = await run.coordinator.run_round(1, run.workers)  # continues from "closed"
    phases.append(await run.coordinator.resume_point())

    assert [(p.round, p.phase, len(p.updates)) for p in phases] == [
        (1, "new", 0), (1, "open", 2), (1, "closed", 2), (2, "new", 0)]
    assert outcome.phase_on_entry == "closed" and outcome.workers == ()
    assert len(outcome.updates) == 2 and outcome.aggregate["rule"] == "fedavg"


async def test_loading_a_task_made_with_other_settings_is_refused():
    run = Run()
    await run.coordinator.create_or_load_task()
    other = Run(CONFIG.replace(seed=6), run.world, run.ids)
    again = Run(CONFIG, run.world, run.ids)

    with pytest.raises(TaskMismatchError) as info:
        await other.coordinator.create_or_load_task()
    loaded = await again.coordinator.create_or_load_task()

    assert info.value.field == "initial_model"
    assert loaded.created is False and loaded.spec.model == dict(run.fed.model_spec)


async def test_audit_recomputes_every_round_and_detects_a_tampered_model(tmp_path):
    run = Run()
    await run.coordinator.create_or_load_task()
    await run.coordinator.run(run.workers)
    final = await run.final_model()
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(final)
    bad.write_bytes(final[:-4] + bytes(4))

    report = await audit_task(run.coordinator.ledger, TASK)
    same = await verify_model(run.coordinator.ledger, TASK, good)
    tampered = await verify_model(run.coordinator.ledger, TASK, bad)

    assert report.ok and report.problems == ()
    assert [r.match for r in report.rounds] == [True, True]
    assert report.final_model_digest == fl.read_header(final)["content_digest"]
    assert {org: len(w) for org, w in report.rounds[0].contributors.items()} == dict.fromkeys(
        ORGS, 2)
    assert same.matches and same.round == 2
    assert not tampered.matches and "different bytes" in tampered.reason


async def test_devices_each_sign_with_their_own_identity_and_split_their_orgs_data():
    config = CONFIG.replace(rounds=1)
    run = Run(config)
    shards = device_shards(run.fed, 5)
    devices = [
        Worker(f"device{i}", run.world.ledger(fake_identity(ORGS[i // 5], name=f"device{i}")),
               DeviceTrainer(run.fed, i, shards[i], malicious=False, total=15, num_malicious=0),
               retry=FAST)
        for i in range(15)
    ]
    await run.coordinator.create_or_load_task()

    outcome = await run.coordinator.run_round(1, devices)

    org_samples = [sum(len(w) for w in org.workers) for org in run.fed.partition.orgs]
    assert [sum(len(s) for s in shards[5 * k: 5 * k + 5]) for k in range(3)] == org_samples
    assert [r.status for r in outcome.workers] == [COMMITTED] * 15
    assert len({r.worker_id for r in outcome.workers}) == 15
    assert len(outcome.aggregate["used"]) == 15


def test_an_org_cannot_have_more_devices_than_training_samples():
    fed = prepare(CONFIG)

    with pytest.raises(ValueError, match="training samples for 100000 devices"):
        device_shards(fed, 100_000)
