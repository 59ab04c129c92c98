"""AdmitOrganisation: an organisation that joined the channel later joins a running task from
the next round, without touching the keys that updates in flight read."""

from __future__ import annotations

import json

from fl_world import World, assert_refused, task_json, update

from fedfabric.chaincode.testing import MemoryLedger, ReadWriteSet, fake_identity

LATE = "Org9MSP"  # its admin is "admin9", its worker "outsider"


def kinds(keys) -> list[str]:
    """The key kinds (``fl.update``, ...) of composite keys."""
    return sorted(key.split("\x00")[1] for key in keys)


def stale_reads(ledger: MemoryLedger, rwset: ReadWriteSet) -> list[str]:
    """The keys a transaction read whose committed version has changed since (MVCC)."""
    return [key for key, version in rwset.reads if ledger.state.get(key, (b"", None))[1] != version]


async def admitted(world: World, task: dict | None = None) -> dict:
    """Start `task` (default: three orgs, three rounds), admit the late org while round 1 is
    open and have its admin register its worker."""
    await world.start(task or task_json(rounds=3))
    record = await world.json("AdmitOrganisation", "digits", LATE)
    await world.register("digits", [LATE])
    return record


async def test_a_driving_admin_admits_an_org_from_the_round_after_the_open_one(world):
    await world.start(task_json(rounds=3))

    result = await world.ok("AdmitOrganisation", "digits", LATE)

    record = json.loads(result.payload)
    assert record["msp_id"] == LATE and record["from_round"] == 2
    assert record["admitted_tx"] == result.tx_id and record["admitted_by"].startswith("Org1MSP:")
    assert result.event[0] == "OrganisationAdmitted"
    assert json.loads(result.event[1]) == {**record, "task": "digits"}
    assert kinds(key for key, _ in result.rwset.writes) == ["fl.admitted"]


async def test_the_admitted_orgs_workers_submit_from_from_round_on_and_not_before(world):
    await admitted(world)

    early = await world.call("SubmitUpdate", "digits", 1, update(0.5), 10, who="outsider")

    assert_refused(early, "authorised", LATE, "from round 2 on, not round 1")
    assert early.status == 403
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.125), 10, who="w2")
    await world.ok("AdvanceRound", "digits", 1)
    record = await world.json("SubmitUpdate", "digits", 2, update(0.5), 10, who="outsider")
    assert record["msp_id"] == LATE and record["round"] == 2


async def test_an_org_registers_its_workers_only_once_admitted(world):
    await world.start(task_json(rounds=3))
    refused = await world.call("RegisterWorkers", "digits", ["stranger"], who="admin9")
    assert_refused(refused, "authorised", LATE)

    await world.ok("AdmitOrganisation", "digits", LATE)

    registered = await world.json("RegisterWorkers", "digits", ["stranger"], who="admin9")
    assert registered["msp_id"] == LATE and registered["registered"] == 1


async def test_only_an_admin_of_a_driving_org_admits(world):
    await world.start(task_json(rounds=3))
    # A copy: the identities are shared by every test of the session.
    world.ids = {**world.ids, "peer1": fake_identity("Org1MSP", role="peer", name="peer0")}

    for who in ("w1", "peer1"):  # a client and a peer of the driving org
        result = await world.call("AdmitOrganisation", "digits", LATE, who=who)
        assert_refused(result, "role", "AdmitOrganisation needs an admin")
    for who in ("admin2", "admin9"):  # a member org's admin, the late org's own admin
        result = await world.call("AdmitOrganisation", "digits", LATE, who=who)
        assert_refused(result, "coordinator", "does not drive task 'digits'")
    assert (await world.json("GetOrganisations", "digits"))["admitted"] == []


async def test_a_named_coordinator_org_admits_and_the_creator_does_not(world):
    await world.start(task_json(rounds=3, coordinators=["Org2MSP"]))

    assert_refused(await world.call("AdmitOrganisation", "digits", LATE), "coordinator")
    await world.ok("AdmitOrganisation", "digits", LATE, who="admin2")


async def test_admitting_an_admitted_org_again_returns_its_record_and_writes_nothing(world):
    first = await admitted(world)
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.125), 10, who="w2")
    await world.ok("AdvanceRound", "digits", 1)

    again = await world.ok("AdmitOrganisation", "digits", LATE)

    assert json.loads(again.payload) == first  # from_round stays 2, round 2 open or not
    assert again.rwset.writes == () and again.event is None


async def test_a_founding_org_malformed_msp_id_or_unknown_task_is_refused(world):
    await world.start(task_json(rounds=3))

    founding = await world.call("AdmitOrganisation", "digits", "Org2MSP")
    assert_refused(founding, "admit", "Org2MSP is a founding organisation of task 'digits'")
    for bad in ("", "Org 9", "x" * 65, "Org9\x00MSP"):
        assert_refused(await world.call("AdmitOrganisation", "digits", bad), "admit", "MSP id")
    assert_refused(await world.call("AdmitOrganisation", "nothing", LATE), "not-found")


async def test_a_task_in_its_last_round_or_finished_admits_no_one(world):
    await world.start(task_json(rounds=1))
    last = await world.call("AdmitOrganisation", "digits", LATE)
    assert_refused(last, "admit", "no round left for Org9MSP to join")

    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.125), 10, who="w2")
    await world.ok("AdvanceRound", "digits", 1)

    assert_refused(await world.call("AdmitOrganisation", "digits", LATE), "admit", "no round")


async def test_an_admission_whose_rounds_could_overflow_the_weight_sums_is_refused(world):
    # 3 orgs x 150 workers x (2**31 - 1) samples fit the 2**40 weight sum; 4 orgs do not.
    await world.start(task_json(rounds=3, max_workers_per_org=150, max_samples=2**31 - 1))

    result = await world.call("AdmitOrganisation", "digits", LATE)

    assert_refused(result, "admit", "task field 'max_samples'", "600 updates")


async def test_contributions_workers_and_organisations_include_the_admitted_org(world):
    record = await admitted(world)
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.125), 10, who="w2")
    await world.ok("AdvanceRound", "digits", 1)
    await world.ok("SubmitUpdate", "digits", 2, update(0.5), 30, who="outsider")
    await world.ok("SubmitUpdate", "digits", 2, update(0.0625), 10, who="w1")
    await world.ok("AdvanceRound", "digits", 2)

    contributions = (await world.json("GetContributions", "digits"))["orgs"]
    workers = (await world.json("GetWorkers", "digits"))["orgs"]
    organisations = await world.json("GetOrganisations", "digits")

    assert list(contributions) == ["Org1MSP", "Org2MSP", LATE]
    assert contributions[LATE] == {"excluded": 0, "samples": 30, "updates": 1, "used": 1}
    assert list(workers) == ["Org1MSP", "Org2MSP", "Org3MSP", LATE]
    assert workers[LATE]["registered"] == 1
    assert organisations == {
        "admitted": [record],
        "founding": ["Org1MSP", "Org2MSP", "Org3MSP"],
        "task": "digits",
    }


async def test_a_founding_orgs_update_reads_no_admission_key(world):
    await admitted(world)
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.125), 10, who="w2")
    await world.ok("AdvanceRound", "digits", 1)

    founding = await world.ok("SubmitUpdate", "digits", 2, update(0.5), 10, who="w1")
    late = await world.ok("SubmitUpdate", "digits", 2, update(0.0625), 10, who="outsider")

    assert "fl.admitted" not in kinds(key for key, _ in founding.rwset.reads)
    assert founding.rwset.range_queries == ()
    assert "fl.admitted" in kinds(key for key, _ in late.rwset.reads)


async def test_an_admission_leaves_updates_in_flight_valid(world):
    await world.start(task_json(rounds=3))
    in_flight = await world.call(
        "SubmitUpdate", "digits", 1, update(0.25), 10, commit=False, who="w1"
    )
    assert in_flight.status == 200

    await world.ok("AdmitOrganisation", "digits", LATE)  # commits before the update does

    assert "fl.task" in kinds(key for key, _ in in_flight.rwset.reads)
    assert stale_reads(world.ledger, in_flight.rwset) == []


async def test_an_async_task_admits_from_the_next_model_version(world):
    task = task_json(
        mode="async", buffer_size=2, max_staleness=1, rounds=4, weighting="equal", min_updates=1
    )
    record = await admitted(world, task)
    assert record["from_round"] == 1  # the current version is 0

    early = await world.call("SubmitUpdate", "digits", 0, update(0.5), 10, who="outsider")
    assert_refused(early, "authorised", "from base version 1 on, not base version 0")
    ids = [
        json.loads((await world.ok("SubmitUpdate", "digits", 0, update(v), 10, who=w)).payload)[
            "id"
        ]
        for w, v in (("w1", 0.25), ("w2", 0.125))
    ]
    await world.ok("AggregateBuffer", "digits", 0, ids)
    later = await world.json("SubmitUpdate", "digits", 1, update(0.5), 10, who="outsider")
    assert later["msp_id"] == LATE and later["base_version"] == 1


async def test_admitting_twice_unconfirmed_gives_the_same_read_write_set(world):
    await world.start(task_json(rounds=3))

    one = await world.call("AdmitOrganisation", "digits", LATE, commit=False)
    two = await world.call("AdmitOrganisation", "digits", LATE, commit=False)

    assert one.status == 200 and one.rwset.writes
    assert (one.payload, one.event, one.rwset) == (two.payload, two.event, two.rwset)
