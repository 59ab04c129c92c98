"""DeclineRound: a worker whose update was refused says on the ledger that it submits nothing
to the round, so a coordinator on another host need not wait for it."""

from __future__ import annotations

import json

from fl_world import assert_refused, task_json, update
from test_fl_admission import LATE, admitted, kinds

from fedfabric.chaincode.fl import MAX_REASON


async def test_a_registered_worker_declines_the_open_round_and_the_page_shows_it(world):
    await world.start()

    result = await world.ok("DeclineRound", "digits", 1, "private-validation: refused", who="w2")

    record = json.loads(result.payload)
    assert record["worker"].startswith("Org2MSP:") and record["round"] == 1
    assert record["reason"] == "private-validation: refused"
    assert record["declined_tx"] == result.tx_id
    assert result.event[0] == "RoundDeclined"
    assert json.loads(result.event[1]) == {**record, "task": "digits"}
    assert kinds(key for key, _ in result.rwset.writes) == ["fl.declined"]
    page = await world.json("GetRoundUpdates", "digits", 1)
    assert page["declined"] == [record] and page["updates"] == []
    again = await world.ok("DeclineRound", "digits", 1, "another reason", who="w2")
    assert json.loads(again.payload) == record and not again.rwset.writes


async def test_declining_changes_nothing_in_the_round(world):
    await world.start()
    await world.ok("DeclineRound", "digits", 1, "failed: no data", who="w3")
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w2")

    aggregate = await world.json("AdvanceRound", "digits", 1)

    assert len(aggregate["used"]) == 2
    assert not any(w.startswith("Org3MSP:") for w in aggregate["used"])


async def test_who_may_not_decline_and_when_is_named(world):
    await world.start()
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")

    submitted = await world.call("DeclineRound", "digits", 1, "changed my mind", who="w1")
    stranger = await world.call("DeclineRound", "digits", 1, "x", who="outsider")
    not_open = await world.call("DeclineRound", "digits", 2, "x", who="w2")
    long = await world.call("DeclineRound", "digits", 1, "x" * (MAX_REASON + 1), who="w2")
    missing = await world.call("DeclineRound", "nope", 1, "x", who="w2")

    assert_refused(submitted, "one-per-round", "has an update in round 1")
    assert_refused(stranger, "authorised", LATE)
    assert_refused(not_open, "round-open", "round 2")
    assert_refused(long, "decline", f"at most {MAX_REASON} characters")
    assert_refused(missing, "not-found")
    admin = await world.call("DeclineRound", "digits", 1, "x", who="admin2")
    assert_refused(admin, "registered", "is not a registered worker")


async def test_an_admitted_org_declines_from_its_first_round_on(world):
    await admitted(world)  # from round 2

    early = await world.call("DeclineRound", "digits", 1, "x", who="outsider")

    assert_refused(early, "authorised", "from round 2 on, not round 1")


async def test_an_asynchronous_task_has_no_rounds_to_decline(world):
    await world.start(task_json(mode="async", buffer_size=2, max_staleness=1, rounds=4,
                                weighting="equal", min_updates=1))  # fmt: skip

    result = await world.call("DeclineRound", "digits", 1, "x", who="w2")

    assert_refused(result, "decline", "asynchronous")
