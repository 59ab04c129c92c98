"""Workers, coordinator, resume and audit over the in-memory FL ledger (`MemoryFL`).

The ledger is the real `FLContract` over a memory world state, so refusals, replays and
aggregation are the contract's own; runs are compared with `run_in_memory`, the same loop.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from fedfabric.chaincode import fl
from fedfabric.chaincode.fl import _audit
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.audit import audit_task, verify_model
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import (
    Coordinator,
    CoordinatorError,
    RoundIncompleteError,
    TaskMismatchError,
)
from fedfabric.fl_worker.federation import (
    device_shards,
    federation_workers,
    prepare,
)
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.ledger import MemoryFL
from fedfabric.fl_worker.participant import ParticipantError, take_part
from fedfabric.fl_worker.worker import (
    COMMITTED,
    REPLAYED,
    Retry,
    WorkerResources,
)
from fedfabric.gateway import CommitStatusError, GatewayError

ORGS = ["Org1MSP", "Org2MSP", "Org3MSP"]
TASK = "digits-test"
FAST = Retry(attempts=3, backoff=0.0)
# A clean IID run; the contract's own checks, without org-private validation.
CONFIG = RunConfig(rounds=2, orgs=3, workers_per_org=2, epochs=1, batch_size=32, seed=5)
CONFIG = CONFIG.replace(alpha=None, attack=None, validation_threshold=None)


class Run:
    """A federation, a memory ledger, its admin coordinator and one worker per identity."""

    def __init__(
        self,
        config: RunConfig = CONFIG,
        world: MemoryFL | None = None,
        identities: dict[str, bytes] | None = None,
        train_concurrency: int = 1,
    ) -> None:
        self.config = config
        self.fed = prepare(config)
        self.world = world or MemoryFL()
        self.ids = identities or {
            f"w{i}": fake_identity(ORGS[i // config.workers_per_org], name=f"worker{i}")
            for i in range(config.num_workers)
        } | {"admin": fake_identity("Org1MSP", role="admin", name="admin")}
        resources = WorkerResources(train_concurrency=train_concurrency)
        self.coordinator = Coordinator(
            self.fed,
            self.world.ledger(self.ids["admin"]),
            task=TASK,
            allowed_orgs=ORGS,
            event_timeout=5,
            retry=FAST,
            resources=resources,
            registrars=[
                self.world.ledger(fake_identity(m, role="admin", name="admin")) for m in ORGS
            ],
        )
        self.workers = federation_workers(
            self.fed,
            [self.world.ledger(self.ids[f"w{i}"]) for i in range(config.num_workers)],
            resources=resources,
            retry=FAST,
        )

    async def start(self):
        """Create (or load) the task and have each org's admin register its workers."""
        info = await self.coordinator.create_or_load_task()
        await self.coordinator.register(self.workers)
        return info

    def again(self) -> Run:
        """A fresh process's view of the same ledger and identities (nothing cached)."""
        return Run(self.config, self.world, self.ids)

    async def final_model(self) -> bytes:
        return await self.coordinator.ledger.global_model(TASK, self.config.rounds)


async def test_refused_updates_are_reported_with_check_and_orgs_and_match_the_baseline():
    config = CONFIG.replace(
        attack="scaling", attack_params={"factor": 1e4}, malicious=0.34, norm_bound=20.0
    )
    run = Run(config)
    await run.start()

    outcome = await run.coordinator.run_round(1, run.workers)

    baseline = await run_in_memory(config)
    assert outcome.model_digest == baseline.rounds[0].model_digest
    refused = {name: (org, r.check) for name, org, r in outcome.refused}
    assert sorted(refused) == sorted(name for name, _, _ in baseline.rounds[0].refused)
    assert refused and all(check == "norm" for _, check in refused.values())
    for _, org, r in outcome.refused:
        assert r.orgs == (org,) and "exceeds the bound 20.0" in r.message
        assert outcome.per_org[org].refused >= 1
    # Each refused worker declined the round on the ledger, with the contract's reason.
    page = await run.coordinator.ledger.round_updates(TASK, 1)
    declined = {d["worker"]: d["reason"] for d in page["declined"]}
    assert set(declined) == {r.worker_id for r in outcome.workers if r.status == "refused"}
    assert all(reason.startswith("norm: ") for reason in declined.values())


async def test_resubmitting_after_an_unknown_commit_outcome_is_success_not_a_double_count():
    run = Run()
    await run.start()
    lost = CommitStatusError("tx", code=grpc.StatusCode.DEADLINE_EXCEEDED, grpc_message="slow")
    run.world.fail_next("SubmitUpdate", lost, after_commit=True)

    result = await run.workers[0].run_round(TASK, 1)

    page = await run.coordinator.ledger.round_updates(TASK, 1)
    assert (result.status, result.attempts) == (REPLAYED, 2)
    assert [u["worker"] for u in page["updates"]] == [run.workers[0].worker_id]


async def test_an_unavailable_gateway_is_retried():
    run = Run()
    await run.start()
    run.world.fail_next("SubmitUpdate", GatewayError("down", code=grpc.StatusCode.UNAVAILABLE))

    result = await run.workers[1].run_round(TASK, 1)

    assert (result.status, result.attempts) == (COMMITTED, 2)


async def test_a_worker_whose_retries_run_out_keeps_the_round_open():
    run = Run()
    await run.start()
    for _ in range(FAST.attempts):
        run.world.fail_next("SubmitUpdate", GatewayError("down", code=grpc.StatusCode.UNAVAILABLE))

    with pytest.raises(RoundIncompleteError) as info:
        await run.coordinator.run_round(1, run.workers)

    point = await run.coordinator.resume_point()
    assert info.value.round == 1 and len(info.value.missing) == 1
    assert (point.round, point.phase, len(point.updates)) == (1, "open", 5)


async def test_resume_point_follows_the_round_phases():
    run = Run()
    await run.start()
    ledger = run.coordinator.ledger
    phases = [await run.coordinator.resume_point()]
    await asyncio.gather(*(w.run_round(TASK, 1) for w in run.workers[:2]))
    phases.append(await run.coordinator.resume_point())
    await ledger.advance_round(TASK, 1)  # as a coordinator that stopped right after would
    phases.append(await run.coordinator.resume_point())
    outcome = await run.coordinator.run_round(1, run.workers)  # continues from "aggregated"

    assert [(p.round, p.phase, len(p.updates)) for p in phases] == [
        (1, "open", 0),
        (1, "open", 2),
        (2, "open", 0),
    ]
    assert outcome.phase_on_entry == "aggregated" and outcome.workers == ()
    assert len(outcome.updates) == 2 and outcome.aggregate["rule"] == CONFIG.strategy
    assert outcome.model == await ledger.global_model(TASK, 1)


async def test_loading_a_task_made_with_other_settings_is_refused():
    run = Run()
    await run.start()
    other = Run(CONFIG.replace(seed=6), run.world, run.ids)
    again = Run(CONFIG, run.world, run.ids)

    with pytest.raises(TaskMismatchError) as info:
        await other.coordinator.create_or_load_task()
    loaded = await again.coordinator.create_or_load_task()

    assert info.value.field == "initial_model"
    assert loaded.created is False and loaded.spec.model == dict(run.fed.model_spec)


async def test_audit_recomputes_every_round_once_and_detects_a_tampered_model(
    tmp_path, monkeypatch
):
    run = Run()
    await run.start()
    await run.coordinator.run(run.workers)
    final = await run.final_model()
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(final)
    bad.write_bytes(final[:-4] + bytes(4))
    aggregated = []
    original = _audit.aggregate_round
    for module in (_audit, fl):  # wherever an auditor may call it from
        monkeypatch.setattr(
            module, "aggregate_round", lambda *a: aggregated.append(1) or original(*a)
        )

    report = await audit_task(run.coordinator.ledger, TASK)
    same = await verify_model(run.coordinator.ledger, TASK, good)
    tampered = await verify_model(run.coordinator.ledger, TASK, bad)

    assert report.ok and report.problems == ()
    assert [r.match for r in report.rounds] == [True, True] and len(aggregated) == 2
    assert report.final_model_digest == fl.read_header(final)["content_digest"]
    assert {org: len(w) for org, w in report.rounds[0].contributors.items()} == dict.fromkeys(
        ORGS, 2
    )
    assert same.matches and same.round == 2
    assert not tampered.matches and "different bytes" in tampered.reason


def test_an_org_cannot_have_more_devices_than_training_samples():
    fed = prepare(CONFIG)

    with pytest.raises(ValueError, match="training samples for 100000 devices"):
        device_shards(fed, 100_000)


def admin_of(msp_id: str) -> bytes:
    return fake_identity(msp_id, role="admin", name=f"admin-{msp_id}")


async def test_a_task_another_org_created_is_never_adopted():
    world = MemoryFL()
    workers = Run(CONFIG, world).ids
    theirs = Run(CONFIG, world, {**workers, "admin": admin_of("Org2MSP")})
    mine = Run(CONFIG, world, {**workers, "admin": admin_of("Org1MSP")})
    await theirs.coordinator.create_or_load_task()  # Org2 takes the task id first

    with pytest.raises(TaskMismatchError) as info:
        await mine.coordinator.create_or_load_task()

    assert info.value.field == "coordinators"
    assert "Org2MSP created it" in str(info.value) and "Org1MSP never adopts" in str(info.value)


async def test_a_round_advanced_by_another_coordinator_is_an_error_not_done():
    run = Run()
    run.coordinator.coordinators = ("Org1MSP", "Org2MSP")
    await run.start()
    await asyncio.gather(*(w.run_round(TASK, 1) for w in run.workers[:2]))
    await run.world.ledger(admin_of("Org2MSP")).advance_round(TASK, 1)  # early, by Org2

    with pytest.raises(CoordinatorError, match="round 1 of 'digits-test' was advanced by Org2MSP:"):
        await run.coordinator.run_round(1, run.workers)


async def test_a_round_the_coordinator_opened_is_not_read_again_yet_early_updates_count():
    run = Run()
    await run.start()
    reads: list[int] = []
    ledger = run.coordinator.ledger
    read = ledger.round_updates

    async def counted(task: str, round_no: int):
        reads.append(round_no)
        return await read(task, round_no)

    ledger.round_updates = counted  # type: ignore[method-assign]
    await run.coordinator.run_round(1, run.workers)
    # Another process's worker submits to round 2 before this coordinator runs it.
    early = await run.workers[0].run_round(TASK, 2)

    outcome = await run.coordinator.run_round(2, run.workers)

    baseline = await run_in_memory(CONFIG)
    assert reads == [1]  # round 2 was opened by this coordinator's own AdvanceRound
    assert early.status == COMMITTED and outcome.workers[0].status == REPLAYED
    assert len(outcome.updates) == CONFIG.num_workers
    assert outcome.model_digest == baseline.rounds[1].model_digest


async def test_an_admitted_org_joins_a_running_task_from_the_next_round():
    config = CONFIG.replace(orgs=4)
    late = "Org4MSP"
    ids = {f"w{i}": fake_identity(f"Org{i // 2 + 1}MSP", name=f"worker{i}") for i in range(8)}
    run = Run(config, identities={**ids, "admin": admin_of("Org1MSP")})
    await run.start()  # the task allows the three founding orgs, not the late one

    record = await run.coordinator.admit(late, registrar=run.world.ledger(admin_of(late)))
    first = await run.coordinator.run_round(1, run.workers)
    second = await run.coordinator.run_round(2, run.workers)

    assert record["from_round"] == 2 and run.coordinator.allowed_orgs == tuple(ORGS)
    refused = {org: r.check for _, org, r in first.refused}
    assert refused == {late: "authorised"} and len(first.updates) == 6
    assert sorted(second.per_org) == [*ORGS, late] and len(second.updates) == 8
    assert second.per_org[late].accepted == 2
    organisations = await run.coordinator.ledger.organisations(TASK)
    assert organisations["founding"] == ORGS and organisations["admitted"] == [record]
    assert await run.coordinator.admit(late) == record  # again: the same record


async def across_hosts(run: Run) -> tuple[list, list, list]:
    """Org1 coordinates and runs its own workers; Org2 and Org3 each take part with their own
    admin and workers (`take_part`), as on hosts of their own. The round outcomes, and Org2's
    and Org3's worker results."""
    run.coordinator.registrars = run.coordinator.registrars[:1]
    run.coordinator.expect_registered = True
    mine = [w for w in run.workers if w.org == "Org1MSP"]
    await run.coordinator.create_or_load_task()

    async def org(msp_id: str) -> list:
        admin = run.world.ledger(fake_identity(msp_id, role="admin", name="admin"))
        workers = [w for w in run.workers if w.org == msp_id]
        return await take_part(admin, TASK, workers, poll=0.01, timeout=30)

    async def coordinate() -> list:
        await asyncio.sleep(0.05)  # the others register first (else round 1 waits for none)
        return await run.coordinator.run(mine)

    return await asyncio.gather(coordinate(), org("Org2MSP"), org("Org3MSP"))


async def test_each_org_runs_its_own_workers_and_the_coordinator_waits_for_them():
    """Org1 coordinates and runs its workers; Org2 and Org3 each take part with their own
    admin and workers (`take_part`): every round has all six updates, as when one process
    runs them all."""
    run = Run()
    outcomes, second, third = await across_hosts(run)

    assert [len(o.updates) for o in outcomes] == [6, 6]
    assert [r.status for r in second + third] == [COMMITTED] * 8
    together = Run()
    await together.start()
    alone = await together.coordinator.run(together.workers)
    assert [o.model_digest for o in outcomes] == [o.model_digest for o in alone]


async def test_a_late_org_takes_part_once_admitted_from_the_round_its_admission_names():
    """Org4 joined the channel while the task runs: its host waits for the admission, then
    its workers take part from the round after the one open when it was admitted."""
    config = CONFIG.replace(orgs=4, rounds=3)
    late = "Org4MSP"
    ids = {f"w{i}": fake_identity(f"Org{i // 2 + 1}MSP", name=f"worker{i}") for i in range(8)}
    run = Run(config, identities={**ids, "admin": admin_of("Org1MSP")})
    run.coordinator.expect_registered = True
    founding = [w for w in run.workers if w.org != late]
    theirs = [w for w in run.workers if w.org == late]
    await run.coordinator.create_or_load_task()
    said: list[str] = []
    joining = asyncio.create_task(
        take_part(
            run.world.ledger(admin_of(late)), TASK, theirs, poll=0.01, timeout=30, say=said.append
        )  # fmt: skip
    )
    first = await run.coordinator.run_round(1, founding)
    await asyncio.sleep(0.05)
    assert not joining.done() and "waiting for Org1MSP to admit Org4MSP" in said[0]
    await run.coordinator.admit(late)  # round 2 is open: Org4 submits from round 3
    rounds = [first]
    for round_no in (2, 3):
        rounds.append(await run.coordinator.run_round(round_no, founding))
    results = await joining

    assert [len(r.updates) for r in rounds] == [6, 6, 8]
    assert [(r.round, r.status) for r in results] == [(3, COMMITTED), (3, COMMITTED)]
    assert "Org4MSP admitted, from round 3" in said[1]


async def test_a_late_org_not_admitted_in_time_is_told_so():
    config = CONFIG.replace(orgs=4)
    ids = {f"w{i}": fake_identity(f"Org{i // 2 + 1}MSP", name=f"worker{i}") for i in range(8)}
    run = Run(config, identities={**ids, "admin": admin_of("Org1MSP")})
    await run.coordinator.create_or_load_task()
    theirs = [w for w in run.workers if w.org == "Org4MSP"]
    admin = run.world.ledger(admin_of("Org4MSP"))
    with pytest.raises(ParticipantError, match="Org4MSP was not admitted to task"):
        await take_part(admin, TASK, theirs, poll=0.01, timeout=0.05)


async def test_a_refused_worker_of_another_host_declines_and_the_round_does_not_wait():
    """Org2 and Org3 run their own workers (`take_part`); an update one of them submits is
    refused, which Org1's coordinator never sees: the worker declines the round on the
    ledger, and the round closes at once, not after the event timeout."""
    config = CONFIG.replace(
        attack="scaling", attack_params={"factor": 1e4}, malicious=0.34, norm_bound=20.0
    )
    run = Run(config)
    run.coordinator.wait_for_all = False
    run.coordinator.event_timeout = 60
    bad = {run.workers[i].org for i in run.fed.malicious}
    assert bad - {"Org1MSP"}, "the attack must hit a worker of another host"
    mine = [w for w in run.workers if w.org == "Org1MSP"]

    started = asyncio.get_running_loop().time()
    outcomes, second, third = await across_hosts(run)

    assert asyncio.get_running_loop().time() - started < 30  # no round waited 60 s
    refused = [r for r in second + third if r.status == "refused"]
    assert refused and all(r.refusal.check == "norm" for r in refused)
    for round_no, outcome in enumerate(outcomes, start=1):
        page = await run.coordinator.ledger.round_updates(TASK, round_no)
        declined = {d["worker"] for d in page["declined"]}
        here = {r.worker_id for r in outcome.workers if r.status == "refused"}  # they decline too
        assert declined == {r.worker_id for r in refused if r.round == round_no} | here
        assert "norm: " in page["declined"][0]["reason"]
        assert len(outcome.updates) == 6 - len(bad_in(run, round_no, second + third, mine))


def bad_in(run: Run, round_no: int, remote: list, mine: list) -> list:
    """The workers whose update round `round_no` refused, here and on the other hosts."""
    names = {w.name for w in mine}
    here = [i for i in run.fed.malicious if run.fed.worker_name(i) in names]
    return [r for r in remote if r.round == round_no and r.status == "refused"] + here


async def test_a_registered_worker_of_another_org_that_never_submits_fails_the_round():
    run = Run()
    run.coordinator.expect_registered = True
    run.coordinator.event_timeout = 0.2
    mine = [w for w in run.workers if w.org != "Org3MSP"]
    await run.coordinator.create_or_load_task()
    absent = run.world.ledger(fake_identity("Org3MSP", role="admin", name="admin"))
    away = [w for w in run.workers if w.org == "Org3MSP"]
    await absent.register_workers(TASK, [w.ledger.enrolment_id for w in away])

    with pytest.raises(RoundIncompleteError) as failed:
        await run.coordinator.run_round(1, mine)

    assert sorted(failed.value.missing) == sorted(w.worker_id for w in away)


async def test_take_part_refuses_workers_of_another_org_and_a_missing_task():
    run = Run()
    admin = run.world.ledger(fake_identity("Org2MSP", role="admin", name="admin"))
    with pytest.raises(ValueError, match="another organisation than Org2MSP"):
        await take_part(admin, TASK, run.workers)
    mine = [w for w in run.workers if w.org == "Org2MSP"]
    with pytest.raises(ParticipantError, match="no task"):
        await take_part(admin, "no-such-task", mine, poll=0.01, timeout=0.05)


async def test_without_wait_for_all_a_silent_org_only_delays_the_round():
    """Across hosts (`fedfabric run --org`) one organisation's registered workers that never
    submit cannot stop the others' task: the round closes after the event timeout."""
    run = Run()
    run.coordinator.expect_registered = True
    run.coordinator.wait_for_all = False
    run.coordinator.event_timeout = 0.2
    mine = [w for w in run.workers if w.org != "Org3MSP"]
    await run.coordinator.create_or_load_task()
    silent = run.world.ledger(fake_identity("Org3MSP", role="admin", name="admin"))
    away = [w for w in run.workers if w.org == "Org3MSP"]
    await silent.register_workers(TASK, [w.ledger.enrolment_id for w in away])

    outcome = await run.coordinator.run_round(1, mine)

    assert len(outcome.updates) == 4 and outcome.aggregate
    assert sorted(outcome.per_org) == ["Org1MSP", "Org2MSP"]
