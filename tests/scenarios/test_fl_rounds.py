"""Federated learning end to end, the same scenarios on every backend (in memory, real Fabric).

A consortium trains, is interrupted and resumes, and runs fleets of devices; on every backend
the committed global models are the in-memory run's, byte for byte, and the audit recomputes
each of them from the ledger alone.
"""

from __future__ import annotations

import threading

import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.audit import audit_task, verify_model
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import Coordinator
from fedfabric.fl_worker.federation import prepare
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.worker import COMMITTED, SKIPPED, WorkerResources
from tests.fixtures.gated import Gated, interrupt_run
from tests.scenarios.conftest import RETRY, Backend

# A clean IID run: these scenarios are about rules, resuming and devices; the session
# network's FL servers validate with `tests.fixtures.flval`, not with this run's splits.
CONFIG = RunConfig(
    rounds=2,
    orgs=3,
    workers_per_org=2,
    epochs=1,
    batch_size=32,
    seed=11,
    alpha=None,
    attack=None,
    validation_threshold=None,
)
# Parameters for every aggregation rule; six workers a round are enough for each of them
# (Krum's 2f + 3 rows need weighting by update: three organisations are too few).
RULES = {
    "centered-clip": {},
    "fedavg": {},
    "median": {"clip_norm": 2.0},
    "trimmed-mean": {"beta": 0.2},
    "krum": {"f": 1},
    "multi-krum": {"f": 1, "m": 3},
}


async def coordinator(
    team, fed, admin, task: str, resources: WorkerResources, per_org: int | None = None
) -> Coordinator:
    return Coordinator(
        fed,
        admin,
        task=task,
        allowed_orgs=team.msp_ids,
        event_timeout=60,
        retry=RETRY,
        resources=resources,
        registrars=await team.registrars(),
        max_workers_per_org=per_org,
    )


def test_every_rule_is_covered() -> None:
    assert set(RULES) == set(fl.rule_names())


@pytest.mark.parametrize("rule", sorted(RULES))
async def test_each_rule_commits_the_in_memory_runs_models_and_the_audit_recomputes_them(
    backend: Backend, rule: str, tmp_path
) -> None:
    weighting = "samples" if "krum" in rule else "org"
    config = CONFIG.replace(strategy=rule, strategy_params=RULES[rule], weighting=weighting)
    task = f"rounds-{rule}"
    async with backend.fresh() as team:
        fed, resources = prepare(config), WorkerResources(train_concurrency=2)
        boss = await coordinator(team, fed, await team.admin(), task, resources)
        info = await boss.create_or_load_task()

        outcomes = await boss.run(await team.workers(fed, resources))

        admin, workers = await team.creators(config)
        expected = await run_in_memory(config, admin=admin, workers=workers)
        report = await audit_task(boss.ledger, task)
        tampered = tmp_path / "tampered.bin"
        tampered.write_bytes(outcomes[-1].model[:-4] + bytes(4))
        check = await verify_model(boss.ledger, task, tampered)
    assert info.created
    assert [o.model_digest for o in outcomes] == [r.model_digest for r in expected.rounds]
    assert outcomes[-1].model == expected.final_model
    assert [o.aggregate["used"] for o in outcomes] == [r.aggregate["used"] for r in expected.rounds]
    assert all(r.status == COMMITTED for o in outcomes for r in o.workers)
    assert [len(o.updates) for o in outcomes] == [6, 6] and outcomes[0].events == 6
    assert {"train_submit", "events", "aggregate", "total"} <= set(outcomes[0].timings)
    assert {org: s.accepted for org, s in outcomes[0].per_org.items()} == dict.fromkeys(
        team.msp_ids, 2
    )
    assert report.ok and [r.match for r in report.rounds] == [True, True]
    assert not check.matches


async def test_a_run_cancelled_mid_round_resumes_from_the_ledger_to_the_same_model(
    backend: Backend,
) -> None:
    task, gate = "rounds-resume", threading.Event()
    async with backend.fresh() as team:
        fed, resources = prepare(CONFIG), WorkerResources(train_concurrency=6)
        boss = await coordinator(team, fed, await team.admin(), task, resources)
        workers = await team.workers(fed, resources)
        await boss.create_or_load_task()
        await boss.run_round(1, workers)
        for worker in workers[2:]:
            worker.trainer = Gated(worker.trainer, gate)
        await interrupt_run(boss, workers, round_no=2, updates=2, gate=gate, timeout=120)
        point = await boss.resume_point()

    async with backend.fresh() as team:  # a new process: nothing but the ledger
        fed, resources = prepare(CONFIG), WorkerResources()
        boss = await coordinator(team, fed, await team.admin(), task, resources)
        await boss.create_or_load_task()
        outcomes = await boss.run(await team.workers(fed, resources))
        admin, creators = await team.creators(CONFIG)
        expected = await run_in_memory(CONFIG, admin=admin, workers=creators)

    assert (point.round, point.phase, len(point.updates)) == (2, "open", 2)
    assert [o.round for o in outcomes] == [2]
    assert [r.status for r in outcomes[0].workers] == [SKIPPED] * 2 + [COMMITTED] * 4
    assert outcomes[0].model == expected.final_model


async def test_devices_each_sign_with_their_own_identity_and_split_their_orgs_data(
    backend: Backend,
) -> None:
    config = CONFIG.replace(rounds=1)
    async with backend.fresh() as team:
        fed, resources = prepare(config), WorkerResources()
        boss = await coordinator(team, fed, await team.admin(), "rounds-devices", resources, 10)
        devices = await team.devices(fed, 10, resources)
        await boss.create_or_load_task()

        outcome = await boss.run_round(1, devices)

    shards = [d.trainer.data for d in devices]
    org_samples = [sum(len(w) for w in org.workers) for org in fed.partition.orgs]
    assert [sum(len(s) for s in shards[10 * k : 10 * k + 10]) for k in range(3)] == org_samples
    assert [r.status for r in outcome.workers] == [COMMITTED] * 30
    assert len({r.worker_id for r in outcome.workers}) == 30
    assert len(outcome.aggregate["used"]) == 30
    assert {org: s.accepted for org, s in outcome.per_org.items()} == dict.fromkeys(
        team.msp_ids, 10
    )
