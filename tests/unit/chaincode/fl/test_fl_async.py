"""Asynchronous tasks (mode "async", FedBuff) on the memory ledger: submissions with a base
version, staleness refusals, one pending update per worker, AggregateBuffer with staleness
factors, determinism and the audit of every version."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fl_world import LAYOUT, World, assert_refused, task_json, update

from fedfabric.chaincode.fl import FLContract, TaskError, TaskSpec, decode_update, verify_audit

ONE = 1 << 30
SQRT_HALF = 759250125  # round(2**30 / sqrt(2)): the factor of staleness 1, exponent 0.5


def async_task(**overrides) -> dict:
    task = task_json(
        mode="async",
        buffer_size=2,
        max_staleness=1,
        rounds=4,
        weighting="equal",
        min_updates=1,
    )
    task.update(overrides)
    return task


async def submit(world: World, base: int, value: float, who: str, samples: int = 10):
    return await world.call("SubmitUpdate", "digits", base, update(value), samples, who=who)


async def submitted(world: World, base: int, value: float, who: str) -> str:
    result = await submit(world, base, value, who)
    assert result.status == 200, result.message
    return json.loads(result.payload)["id"]


async def model(world: World, version: int) -> dict[str, np.ndarray]:
    return decode_update((await world.ok("GetGlobalModel", "digits", version)).payload, LAYOUT)


# -- the task --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"mode": "fedbuff"}, "mode", "must be one of ['sync', 'async']"),
        ({"buffer_size": None}, "buffer_size", "is required in mode 'async'"),
        ({"max_staleness": None}, "max_staleness", "is required in mode 'async'"),
        ({"buffer_size": 0}, "buffer_size", "integer >= 1"),
        ({"max_staleness": -1}, "max_staleness", "integer >= 0"),
        ({"staleness": {"rule": "hinge"}}, "staleness", "got {'rule': 'hinge'}"),
        ({"staleness": {"rule": "polynomial", "exponent": 9}}, "staleness", "[0, 4]"),
        ({"staleness": {"rule": "constant", "exponent": 1}}, "staleness", "no parameters"),
        ({"buffer_size": 31}, "buffer_size", "exceeds the 30 updates that can be pending"),
        (
            {
                "weighting": "samples",
                "min_updates": 5,
                "aggregation": {"rule": "krum", "params": {"f": 1}},
            },
            "buffer_size",
            "needs at least 5 updates, got 2",
        ),
        (
            {"weighting": "org", "aggregation": {"rule": "krum", "params": {"f": 0}}},
            "buffer_size",
            "needs at least 21 updates so that every buffer spans 3 organisations",
        ),
    ],
)
def test_async_task_fields_are_checked(change, field, words):
    task = {k: v for k, v in {**async_task(), **change}.items() if v is not None}
    with pytest.raises(TaskError) as caught:
        TaskSpec.from_json(task)
    assert caught.value.field == field and words in str(caught.value)


def test_a_sync_task_refuses_async_settings_and_keeps_its_canonical_form():
    with pytest.raises(TaskError, match="'buffer_size': is a setting of mode 'async'"):
        TaskSpec.from_json(task_json(buffer_size=3))
    assert "mode" not in TaskSpec.from_json(task_json()).to_json()
    spec = TaskSpec.from_json(async_task())
    assert spec.to_json()["staleness"] == {"exponent": 0.5, "rule": "polynomial"}
    assert TaskSpec.from_json(spec.to_json()) == spec


# -- submitting --------------------------------------------------------------------------------


async def test_an_update_names_its_base_version_and_gets_an_id(world):
    await world.start(async_task())

    result = await submit(world, 0, 0.5, "w1")

    record = json.loads(result.payload)
    assert record["base_version"] == 0 and record["seq"] == 1
    assert record["id"] == f"{record['worker']}#1"
    event = json.loads(result.event[1])
    assert (event["id"], event["base_version"]) == (record["id"], 0)
    kinds = sorted({key.split("\x00")[1] for key, _ in result.rwset.writes})
    assert kinds == ["fl.blob", "fl.digest", "fl.seal", "fl.slot", "fl.update", "fl.worker"]
    # Nothing another worker's submission or an aggregation of another version writes (and
    # no model: this task does not validate; fl.update is this worker's own round key, which
    # an asynchronous task never writes).
    read = sorted({key.split("\x00")[1] for key, _ in result.rwset.reads})
    assert read == ["fl.digest", "fl.member", "fl.round", "fl.slot", "fl.task", "fl.update"]


async def test_a_worker_has_one_pending_update_at_a_time(world):
    await world.start(async_task())
    await submitted(world, 0, 0.5, "w1")

    assert_refused(await submit(world, 0, 0.25, "w1"), "pending", "#1 waiting for aggregation")
    assert_refused(await submit(world, 0, 0.5, "w1"), "replay", "identical update")


async def test_a_base_version_not_yet_committed_is_refused(world):
    await world.start(async_task())
    assert_refused(await submit(world, 1, 0.5, "w1"), "version", "version 1 of 'digits'")
    assert_refused(await submit(world, -1, 0.5, "w1"), "version", "0..3, got -1")


async def test_a_stale_update_is_refused_with_the_versions(world):
    await world.start(async_task(max_staleness=0))
    ids = [await submitted(world, 0, 0.5, "w1"), await submitted(world, 0, 0.25, "w2")]
    await world.ok("AggregateBuffer", "digits", 0, ids)

    result = await submit(world, 0, 0.125, "w3")

    assert_refused(
        result,
        "stale",
        "trained from version 0, but version 1 is already committed",
        "max_staleness 0",
    )


# -- aggregating -------------------------------------------------------------------------------


async def test_the_kth_update_makes_a_version_with_staleness_factors(world):
    await world.start(async_task(), initial=1.0)
    first = [await submitted(world, 0, 0.5, "w1"), await submitted(world, 0, 0.25, "w2")]
    assert_refused(
        await world.call("AggregateBuffer", "digits", 0, first[:1]),
        "buffer",
        "expected 2 distinct update ids",
    )
    done = await world.ok("AggregateBuffer", "digits", 0, first)
    stale = await submitted(world, 0, 0.75, "w3")  # trained from version 0, one behind
    fresh = await submitted(world, 1, -0.25, "w1")

    record = await world.json("AggregateBuffer", "digits", 1, [stale, fresh])

    assert json.loads(done.event[1])["version"] == 1
    np.testing.assert_array_equal((await model(world, 1))["w"], np.full((2, 2), 1.375))
    # Version 2: the stale update weighs 1/sqrt(2), in fixed point, truncated toward zero.
    scaled = (int(0.75 * 2**24) * SQRT_HALF) >> 30
    expected = 1.375 + (scaled / 2**24 - 0.25) / 2
    np.testing.assert_allclose((await model(world, 2))["w"], expected, rtol=0, atol=2**-24)
    assert record["staleness"] == [
        {"base_version": 0, "factor": SQRT_HALF, "id": stale, "staleness": 1},
        {"base_version": 1, "factor": ONE, "id": fresh, "staleness": 0},
    ]
    assert record["ids"] == [stale, fresh] and record["version"] == 2
    assert (await world.json("GetAsyncState", "digits"))["version"] == 2


async def test_an_update_that_became_too_stale_is_excluded_with_the_reason(world):
    await world.start(async_task(max_staleness=1, buffer_size=1), initial=1.0)
    old = await submitted(world, 0, 0.5, "w1")
    for version, who in ((0, "w2"), (1, "w3")):
        ident = await submitted(world, version, 0.1 * (version + 1), who)
        await world.ok("AggregateBuffer", "digits", version, [ident])

    record = await world.json("AggregateBuffer", "digits", 2, [old])

    assert record["excluded"] == [
        {
            "id": old,
            "reason": "stale: trained from version 0, 2 versions behind version 2 "
            "(max_staleness 1)",
        }
    ]
    assert record["used"] == [] and "failed" in record  # nothing left: the model stays
    np.testing.assert_array_equal((await model(world, 3))["w"], (await model(world, 2))["w"])


async def test_aggregate_buffer_refusals(world):
    await world.start(async_task())
    ids = [await submitted(world, 0, 0.5, "w1"), await submitted(world, 0, 0.25, "w2")]
    bogus = ids[0].rpartition("#")[0] + "#7"

    cases = [
        (("AggregateBuffer", "digits", 0, ids), "w1", "role"),
        (("AggregateBuffer", "digits", 0, ids), "admin2", "coordinator"),
        (("AggregateBuffer", "digits", 1, ids), "admin", "version"),
        (("AggregateBuffer", "digits", 0, [ids[0], ids[0]]), "admin", "buffer"),
        (("AggregateBuffer", "digits", 0, [ids[0], bogus]), "admin", "not-pending"),
        (("AggregateBuffer", "digits", 0, [ids[0], "w#1"]), "admin", "update-id"),
        (("AdvanceRound", "digits", 1), "admin", "mode"),
    ]
    for call, who, check in cases:
        assert_refused(await world.call(*call, who=who), check)
    await world.ok("AggregateBuffer", "digits", 0, ids)
    assert_refused(await world.call("AggregateBuffer", "digits", 0, ids), "version")


async def test_the_task_ends_after_its_last_version(world):
    await world.start(async_task(rounds=1, buffer_size=1))
    await world.ok("AggregateBuffer", "digits", 0, [await submitted(world, 0, 0.5, "w1")])

    assert_refused(await submit(world, 0, 0.25, "w2"), "done", "all its 1 versions")
    assert_refused(await world.call("AggregateBuffer", "digits", 1, ["x"]), "done")


async def test_org_weighting_holds_over_the_buffer(world):
    """Org1 fills two places of a three-update buffer; it still has one row of two."""
    task = async_task(weighting="org", buffer_size=3, max_workers_per_org=2)
    await world.start(task, initial=1.0)
    ids = [
        await submitted(world, 0, 1.0, "w1"),
        await submitted(world, 0, 0.5, "w1b"),
        await submitted(world, 0, -0.75, "w2"),
    ]

    await world.ok("AggregateBuffer", "digits", 0, ids)

    # Org1's row is the mean of its two (0.75), Org2's is -0.75: the orgs weigh the same.
    np.testing.assert_array_equal((await model(world, 1))["w"], np.full((2, 2), 1.0))


async def test_aggregate_buffer_is_deterministic(world):
    await world.start(async_task(), initial=1.0)
    ids = [await submitted(world, 0, 0.5, "w1"), await submitted(world, 0, 0.25, "w2")]
    await world.ok("AggregateBuffer", "digits", 0, ids)
    ids = [await submitted(world, 0, 0.3, "w3"), await submitted(world, 1, 0.1, "w1")]

    one = await world.call("AggregateBuffer", "digits", 1, ids, commit=False)
    two = await world.call("AggregateBuffer", "digits", 1, ids, commit=False)

    assert one.status == 200 and one.rwset.writes
    assert (one.payload, one.event, one.rwset) == (two.payload, two.event, two.rwset)
    assert one.rwset.range_queries == ()  # explicit keys only: no phantom reads


# -- validation and audit ----------------------------------------------------------------------


async def test_private_validation_scores_the_update_on_its_base_version(identities):
    seen = []

    def validator(model) -> float:
        seen.append(float(model["w"][0, 0]))
        return float(np.abs(model["w"]).sum())

    world = World(identities, FLContract({"msp_id": "Org2MSP"}, validator=validator))
    await world.start(async_task(validation_threshold=0.5), initial=1.0)
    ids = [await submitted(world, 0, -0.5, "w1"), await submitted(world, 0, -0.25, "w2")]
    await world.ok("AggregateBuffer", "digits", 0, ids)  # version 1: w = 0.625

    result = await submit(world, 0, 2.0, "w3")  # from version 0 (w = 1): loss +8 > 0.5

    assert_refused(result, "private-validation", "Org2MSP refuses the update")
    # Version 0's score (1.0, computed once), then each update applied to version 0.
    assert seen == [1.0, 0.5, 0.75, 3.0]


async def test_the_audit_recomputes_every_version(world):
    await world.start(async_task(), initial=1.0)
    ids = [await submitted(world, 0, 0.5, "w1"), await submitted(world, 0, 0.25, "w2")]
    await world.ok("AggregateBuffer", "digits", 0, ids)
    ids = [await submitted(world, 0, 0.3, "w3"), await submitted(world, 1, 0.1, "w1")]
    await world.ok("AggregateBuffer", "digits", 1, ids)
    await submitted(world, 2, 0.2, "w2")  # pending

    audit = await world.json("GetAudit", "digits", 1)
    models = {v: (await world.ok("GetGlobalModel", "digits", v)).payload for v in (0, 1, 2)}
    updates = {
        (e["round"], u["id"]): (await world.ok("GetUpdate", "digits", 0, u["id"])).payload
        for e in audit["rounds"]
        for u in e["updates"]
    }

    assert [(e["round"], e["state"]["status"], len(e["updates"])) for e in audit["rounds"]] == [
        (1, "aggregated", 2),
        (2, "aggregated", 2),
        (3, "open", 1),
    ]
    assert verify_audit(audit, models, updates) == []
    altered = {**models, 2: models[1]}
    assert "round 2: stored model differs from the recomputed one" in verify_audit(
        audit, altered, updates
    )
    audit["rounds"][1]["aggregate"]["staleness"][0]["factor"] = 1 << 30
    assert "round 2: aggregate field 'staleness' differs" in verify_audit(audit, models, updates)
