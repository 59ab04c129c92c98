"""FLContract on the memory ledger: the round lifecycle, every refusal, queries and audit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2
from fl_world import LAYOUT, ORGS, World, assert_refused, task_json, tensors, update

from fedfabric.chaincode.fl import Layout, decode_update, encode_update, read_header, verify_audit
from fedfabric.chaincode.testing import fake_identity


async def submit_round(world: World, round_no: int, values: dict[str, float]) -> None:
    for who, value in values.items():
        await world.ok("SubmitUpdate", "digits", round_no, update(value), 10, who=who)


async def test_a_round_from_submission_to_aggregate(world):
    await world.start(task_json(weighting="samples"), initial=1.0)
    first = await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    assert first.event[0] == "UpdateSubmitted"
    assert json.loads(first.event[1])["num_samples"] == 10
    await world.ok("SubmitUpdate", "digits", 1, update(-1.0), 30, who="w2")

    committed = await world.ok("AdvanceRound", "digits", 1)
    record = json.loads(committed.payload)

    model = decode_update(await world_model(world, 1), LAYOUT)
    np.testing.assert_array_equal(model["w"], np.full((2, 2), 1 + (5 - 30) / 40))
    assert committed.event[0] == "AggregateCommitted"
    assert json.loads(committed.event[1])["model_digest"] == record["model_digest"]
    assert record["rule"] == "fedavg" and len(record["used"]) == 2 and record["excluded"] == []
    assert (await world.json("GetRoundUpdates", "digits", 1))["state"]["status"] == "aggregated"


async def test_org_weighting_merges_each_orgs_updates_before_the_rule(world):
    await world.start(initial=1.0)  # the default: weighting "org"
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    await world.ok("SubmitUpdate", "digits", 1, update(1.0), 30, who="w1b")
    await world.ok("SubmitUpdate", "digits", 1, update(-1.0), 1000, who="w2")

    record = await world.json("AdvanceRound", "digits", 1)

    # Org1's row is its sample-weighted mean (0.875); the orgs then weigh the same.
    model = decode_update(await world_model(world, 1), LAYOUT)
    np.testing.assert_array_equal(model["w"], np.full((2, 2), 1 + (0.875 - 1.0) / 2))
    assert record["weighting"] == "org" and len(record["used"]) == 3


async def world_model(world: World, round_no: int) -> bytes:
    return (await world.ok("GetGlobalModel", "digits", round_no)).payload


async def fetch_audit(world: World, task: str = "digits"):
    """The audit index (every page) plus every model and update it lists, one query each."""
    audit = await world.json("GetAudit", task, 1)
    while audit["next_round"] is not None:
        page = await world.json("GetAudit", task, audit["next_round"])
        audit = {**page, "rounds": audit["rounds"] + page["rounds"]}
    aggregated = [e["round"] for e in audit["rounds"] if e["aggregate"]]
    models = {r: (await world.ok("GetGlobalModel", task, r)).payload for r in [0, *aggregated]}
    updates = {
        (e["round"], u["worker"]): (
            await world.ok("GetUpdate", task, e["round"], u["worker"])
        ).payload
        for e in audit["rounds"]
        for u in e["updates"]
    }
    return audit, models, updates


async def test_two_rounds_audit_contributions_and_worker_history(world):
    await world.start(task_json(aggregation={"rule": "median", "params": {"clip_norm": 1.0}}))
    await submit_round(world, 1, {"w1": 0.25, "w2": 4.0, "w3": -0.125})
    await world.ok("AdvanceRound", "digits", 1)
    await submit_round(world, 2, {"w1": 0.5, "w2": 0.0625})
    await world.ok("AdvanceRound", "digits", 2)

    audit, models, updates = await fetch_audit(world)
    assert [r["round"] for r in audit["rounds"]] == [1, 2]
    assert "update" not in audit["rounds"][0]["updates"][0]
    assert verify_audit(audit, models, updates) == []
    assert audit["rounds"][0]["aggregate"]["clipped"] == [
        u["worker"] for u in audit["rounds"][0]["updates"] if u["msp_id"] == "Org2MSP"
    ]

    contributions = (await world.json("GetContributions", "digits"))["orgs"]
    assert contributions["Org1MSP"] == {"excluded": 0, "samples": 20, "updates": 2, "used": 2}
    assert contributions["Org3MSP"]["updates"] == 1

    worker = next(u["worker"] for u in audit["rounds"][0]["updates"] if u["msp_id"] == "Org1MSP")
    history = await world.json("GetWorkerHistory", "digits", worker)
    assert sorted(h["record"]["round"] for h in history) == [1, 2]


async def test_audit_detects_a_tampered_model(world):
    await world.start()
    await submit_round(world, 1, {"w1": 0.5, "w2": 1.0})
    await world.ok("AdvanceRound", "digits", 1)
    audit, models, updates = await fetch_audit(world)
    models[1] = models[1][:-1] + b"\x00"
    assert verify_audit(audit, models, updates) == [
        "round 1: stored model differs from the recomputed one"
    ]


async def test_audit_detects_an_altered_update(world):
    await world.start()
    await submit_round(world, 1, {"w1": 0.5, "w2": 1.0})
    await world.ok("AdvanceRound", "digits", 1)
    audit, models, updates = await fetch_audit(world)
    key = next(iter(updates))
    updates[key] = update(0.75)
    problems = verify_audit(audit, models, updates)
    assert problems[0] == f"round 1: update of {key[1]} altered"


async def test_get_update_returns_the_submitted_bytes_or_refuses(world):
    await world.start()
    data = update(0.5)
    record = await world.json("SubmitUpdate", "digits", 1, data, 10, who="w1")
    assert (await world.ok("GetUpdate", "digits", 1, record["worker"])).payload == data
    assert_refused(await world.call("GetUpdate", "digits", 2, record["worker"]), "not-found")
    assert_refused(await world.call("GetUpdate", "digits", 1, "nobody"), "worker")


async def test_krum_excludes_the_outlier_and_says_why(world):
    task = task_json(
        min_updates=5, aggregation={"rule": "krum", "params": {"f": 1}}, weighting="equal"
    )
    task["allowed_orgs"] = ["Org1MSP", "Org2MSP", "Org3MSP", "Org9MSP"]
    await world.start(task)
    await submit_round(world, 1, {"w1": 0.1, "w1b": 0.2, "w2": 0.3, "w3": 0.4, "outsider": 4.0})
    record = json.loads((await world.ok("AdvanceRound", "digits", 1)).payload)
    assert len(record["used"]) == 1 and len(record["excluded"]) == 4
    reasons = {e["id"].split(":")[0]: e["reason"] for e in record["excluded"]}
    assert "ranks 5 of 5" in reasons["Org9MSP"]


# -- CreateTask ------------------------------------------------------------------------------


async def test_create_task_needs_an_admin(world):
    result = await world.call("CreateTask", task_json(), update(0.0), who="w1")
    assert_refused(result, "role", "CreateTask needs an admin", "client")
    assert result.status == 403


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": "bad id"}, "id"),
        ({"rounds": 0}, "rounds"),
        ({"norm_bound": 1e9}, "norm_bound"),
        ({"allowed_orgs": []}, "allowed_orgs"),
        ({"aggregation": {"rule": "nope"}}, "aggregation"),
        (
            {"aggregation": {"rule": "krum", "params": {"f": 1}}, "weighting": "equal"},
            "min_updates",
        ),
        ({"aggregation": {"rule": "krum", "params": {"f": 1}}}, "allowed_orgs"),
        ({"weighting": "by-vote"}, "weighting"),
        ({"max_workers_per_org": 0}, "max_workers_per_org"),
        ({"max_workers_per_org": 100_001}, "max_workers_per_org"),
        # 3 orgs x 1000 workers x (2**31 - 1) samples would overflow the 2**40 weight sum.
        ({"max_workers_per_org": 1000, "max_samples": 2**31 - 1}, "max_samples"),
        # A full round of multi-krum over 3 000 updates of 4 000 parameters: far over budget.
        (
            {
                "max_workers_per_org": 1000,
                "weighting": "samples",
                "min_updates": 5,
                "layout": {"tensors": [{"name": "w", "shape": [4000]}]},
                "aggregation": {"rule": "multi-krum", "params": {"f": 1, "m": 3}},
            },
            "max_workers_per_org",
        ),
        ({"layout": {"tensors": []}}, "layout"),
        ({"colour": "red"}, "colour"),
        ({"validation_threshold": -1}, "validation_threshold"),
        ({"max_update_bytes": 50_000_001}, "max_update_bytes"),
        ({"layout": {"tensors": [{"name": "w", "shape": [12_500_000]}]}}, "layout"),
        ({"validation_threshold": float("nan")}, "validation_threshold"),
        ({"validation_threshold": float("inf")}, "validation_threshold"),
        ({"aggregation": {"rule": "median", "params": {"clip_norm": float("nan")}}}, "aggregation"),
        (
            {"aggregation": {"rule": "trimmed-mean", "params": {"beta": float("inf")}}},
            "aggregation",
        ),
        ({"layout": {"tensors": [{"name": "w\ud800", "shape": [2, 2]}]}}, "layout"),
        ({"coordinators": ["Org1MSP", ""]}, "coordinators"),
    ],
)
async def test_create_task_refuses_bad_specs(world, change, field):
    # As a client sends it: JSON text (NaN, Infinity and "\ud800" escapes included).
    result = await world.call("CreateTask", json.dumps(task_json(**change)), update(0.0))
    assert_refused(result, "task", f"task field '{field}'")


async def test_create_task_refuses_duplicates_and_bad_initial_models(world):
    await world.ok("CreateTask", task_json(), update(0.0))
    assert_refused(await world.call("CreateTask", task_json(), update(0.0)), "exists")
    other = task_json(id="other")
    assert_refused(await world.call("CreateTask", other, b"junk"), "initial-model", "format")
    too_big = update(0.0, 40000.0)
    assert_refused(await world.call("CreateTask", other, too_big), "initial-model", "range")


# -- rounds ----------------------------------------------------------------------------------


async def test_create_task_opens_round_1_and_only_round_1(world):
    await world.ok("CreateTask", task_json(), update(0.0))

    assert (await world.json("GetRoundUpdates", "digits", 1))["state"]["status"] == "open"
    assert (await world.json("GetRoundUpdates", "digits", 2))["state"]["status"] == "new"
    assert_refused(await world.call("AdvanceRound", "digits", 2), "round-state", "new")
    assert_refused(await world.call("AdvanceRound", "nothing", 1), "not-found", "'nothing'")


async def test_advance_round_aggregates_and_opens_the_next_round_in_one_transaction(world):
    await world.start()
    assert_refused(await world.call("AdvanceRound", "digits", 1, who="w1"), "role")
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    assert_refused(await world.call("AdvanceRound", "digits", 1), "min-updates", "1 of 2")
    await world.ok("SubmitUpdate", "digits", 1, update(0.25), 10, who="w2")

    first = await world.ok("AdvanceRound", "digits", 1)

    event = json.loads(first.event[1])
    assert first.event[0] == "AggregateCommitted"
    assert event["next_round"] == 2 and len(json.loads(first.payload)["used"]) == 2
    page = await world.json("GetRoundUpdates", "digits", 1)
    assert page["state"]["status"] == "aggregated" and len(page["state"]["updates"]) == 2
    assert page["aggregate"] == json.loads(first.payload)
    assert (await world.json("GetRoundUpdates", "digits", 2))["state"]["status"] == "open"
    assert_refused(await world.call("AdvanceRound", "digits", 1), "round-state", "aggregated")
    assert_refused(
        await world.call("SubmitUpdate", "digits", 1, update(0.1), 10, who="w3"),
        "round-open",
        "is aggregated",
    )
    await submit_round(world, 2, {"w1": 0.125, "w2": 0.0625})
    last = await world.ok("AdvanceRound", "digits", 2)
    assert json.loads(last.event[1])["next_round"] is None
    assert (await world.json("GetAudit", "digits", 1))["rounds"][-1]["round"] == 2


async def test_only_admins_of_the_creating_org_advance_its_rounds(world):
    await world.start()
    await submit_round(world, 1, {"w1": 0.5, "w2": 0.25})

    for who in ("admin2", "admin9"):  # another member org's admin, an outsider's admin
        result = await world.call("AdvanceRound", "digits", 1, who=who)
        assert_refused(result, "coordinator", "does not drive task 'digits'", "Org1MSP")
        assert result.status == 403
    await world.ok("AdvanceRound", "digits", 1)

    state = (await world.json("GetRoundUpdates", "digits", 1))["state"]
    assert state["advanced_by"].startswith("Org1MSP:") and state["status"] == "aggregated"


async def test_a_task_can_name_other_coordinators(world):
    await world.start(task_json(coordinators=["Org2MSP"]))
    await submit_round(world, 1, {"w1": 0.5, "w2": 0.25})

    assert_refused(await world.call("AdvanceRound", "digits", 1), "coordinator", "Org2MSP")
    await world.ok("AdvanceRound", "digits", 1, who="admin2")

    stored = await world.json("GetTask", "digits")
    assert stored["created_by"] == "Org1MSP" and stored["spec"]["coordinators"] == ["Org2MSP"]


# -- SubmitUpdate: every check ----------------------------------------------------------------


async def test_certificates_of_one_enrolment_are_one_worker(world):
    await world.start()
    world.ids["w1-elsewhere"] = fake_identity("Org1MSP", name="worker1", locality="Elsewhere")
    first = await world.json("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")

    again = await world.call("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1-elsewhere")

    assert_refused(again, "one-per-round", first["worker"])
    workers = [u["worker"] for u in (await world.json("GetRoundUpdates", "digits", 1))["updates"]]
    assert workers == [first["worker"]]


async def test_a_certificate_without_an_enrolment_id_is_not_a_worker(world):
    await world.start()
    world.ids["nameless"] = fake_identity("Org1MSP", name=None)

    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 10, who="nameless")

    assert_refused(result, "authorised", "no enrolment id")


async def test_submit_needs_an_open_round(world):
    await world.start()
    result = await world.call("SubmitUpdate", "digits", 2, update(0.5), 10, who="w1")
    assert_refused(result, "round-open", "round 2 of 'digits' is new")
    await submit_round(world, 1, {"w1": 0.5, "w2": 0.25})
    await world.ok("AdvanceRound", "digits", 1)
    result = await world.call("SubmitUpdate", "digits", 1, update(0.1), 10, who="w3")
    assert_refused(result, "round-open", "is aggregated")


async def test_submit_from_an_org_outside_the_task(world):
    await world.start()
    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 10, who="outsider")
    assert_refused(result, "authorised", "Org9MSP")
    assert result.status == 403


# -- the worker registry ---------------------------------------------------------------------


async def test_only_workers_their_org_registered_may_submit(world):
    await world.ok("CreateTask", task_json(), update(0.0))
    await world.ok("RegisterWorkers", "digits", ["worker1"], who="admin")

    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    result = await world.call("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1b")
    assert_refused(result, "registered", "CN=worker1b", "is not registered")
    assert result.status == 403

    # An admin registers for its own organisation only: Org2's admin cannot admit worker1b.
    await world.ok("RegisterWorkers", "digits", ["worker1b"], who="admin2")
    result = await world.call("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1b")
    assert_refused(result, "registered")
    assert_refused(await world.call("RegisterWorkers", "digits", ["worker2"], who="w2"), "role")
    assert_refused(
        await world.call("RegisterWorkers", "digits", ["x"], who="admin9"), "authorised", "Org9MSP"
    )
    for bad in ([], [""], [7], ["x" * 257]):
        assert_refused(
            await world.call("RegisterWorkers", "digits", bad, who="admin"), "enrolment-ids"
        )


async def test_an_orgs_first_registration_seals_its_updates_to_its_own_peer(world):
    await world.ok("CreateTask", task_json(), update(0.0))

    first = await world.ok("RegisterWorkers", "digits", ["worker1"], who="admin")
    again = await world.ok("RegisterWorkers", "digits", ["worker1b"], who="admin")

    ((_, key, name, policy),) = first.rwset.metadata_writes
    assert "fl.seal" in key and name == "VALIDATION_PARAMETER"
    envelope = policies_pb2.SignaturePolicyEnvelope.FromString(policy)
    role = msp_principal_pb2.MSPRole.FromString(envelope.identities[0].principal)
    assert (role.msp_identifier, role.role) == ("Org1MSP", msp_principal_pb2.MSPRole.PEER)
    assert envelope.rule.n_out_of.n == 1 and len(envelope.identities) == 1
    assert again.rwset.metadata_writes == ()


async def test_a_removed_worker_stops_and_keeps_its_place_counted(world):
    await world.ok("CreateTask", task_json(max_workers_per_org=2), update(0.0))
    await world.ok("RegisterWorkers", "digits", ["worker1", "worker1"], who="admin")
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")

    await world.ok("RemoveWorkers", "digits", ["worker1"], who="admin")

    result = await world.call("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    assert_refused(result, "registered", "was removed from")
    registry = await world.json("GetWorkers", "digits")
    assert registry["orgs"]["Org1MSP"]["registered"] == 1
    assert [m["active"] for m in registry["orgs"]["Org1MSP"]["workers"]] == [False]
    assert len((await world.json("GetRoundUpdates", "digits", 1))["updates"]) == 1
    await world.ok("RegisterWorkers", "digits", ["worker1b"], who="admin")
    assert_refused(
        await world.call("RegisterWorkers", "digits", ["worker1c"], who="admin"),
        "registry-full",
        "would have registered 3",
        "allows 2",
    )
    # Registering the removed worker again re-admits it without taking another place.
    await world.ok("RegisterWorkers", "digits", ["worker1"], who="admin")
    assert (await world.json("GetWorkers", "digits"))["orgs"]["Org1MSP"]["registered"] == 2


async def test_an_org_with_many_identities_cannot_steer_the_default_task(world):
    # One malicious org of three registers all the identities it may and sends the same
    # far-off direction from each; the two honest orgs send small updates.
    await world.ok("CreateTask", task_json(aggregation={"rule": "median", "params": {}},
                                           max_workers_per_org=6), update(0.0))  # fmt: skip
    sybils = [f"sybil{i}" for i in range(6)]
    for name in sybils:
        world.ids[name] = fake_identity("Org3MSP", name=name)
    await world.ok("RegisterWorkers", "digits", sybils, who="admin3")
    world.ids["sybil6"] = fake_identity("Org3MSP", name="sybil6")
    assert_refused(
        await world.call("RegisterWorkers", "digits", ["sybil6"], who="admin3"), "registry-full"
    )
    await world.register("digits", ["Org1MSP", "Org2MSP"])
    await submit_round(world, 1, {"w1": 0.1, "w1b": 0.2, "w2": 0.3})
    for i, name in enumerate(sybils):
        await world.ok("SubmitUpdate", "digits", 1, update(3.0 + i / 64), 10, who=name)

    await world.ok("AdvanceRound", "digits", 1)

    # Six identities are one row: the median of the three org rows is the honest Org2.
    model = decode_update(await world_model(world, 1), LAYOUT)
    np.testing.assert_allclose(model["w"], np.full((2, 2), 0.3), atol=1e-6)


async def test_identical_resubmission_is_a_replay_not_a_second_update(world):
    await world.start()
    data = update(0.5)
    first = await world.ok("SubmitUpdate", "digits", 1, data, 10, who="w1")
    again = await world.call("SubmitUpdate", "digits", 1, data, 10, who="w1")
    assert_refused(again, "replay", "identical update already recorded", first.tx_id)
    other = await world.call("SubmitUpdate", "digits", 1, update(0.25), 10, who="w1")
    assert_refused(other, "one-per-round", "already submitted to round 1")
    assert len((await world.json("GetRoundUpdates", "digits", 1))["updates"]) == 1


async def test_a_copy_of_another_workers_update_is_refused_and_the_author_keeps_it(world):
    await world.start()
    original = await world.json("SubmitUpdate", "digits", 1, update(0.0625), 10, who="w1")
    copied = update(0.0625, compression="zlib")  # other bytes, same content
    result = await world.call("SubmitUpdate", "digits", 1, copied, 10, who="w2")
    assert_refused(result, "copy", f"first submitted by {original['worker']}", "keeps the credit")
    # Moved by one float32 ulp (2**-27 here), below the fixed-point resolution of 2**-24:
    # other floats, the same content for aggregation.
    nudged = tensors(0.0625)
    nudged["w"][0, 0] = np.nextafter(np.float32(0.0625), np.float32(1.0))
    assert nudged["w"][0, 0] != np.float32(0.0625)
    nudged_bytes = encode_update(nudged, LAYOUT)
    result = await world.call("SubmitUpdate", "digits", 1, nudged_bytes, 10, who="w3")
    assert_refused(result, "copy", original["worker"])
    updates = (await world.json("GetRoundUpdates", "digits", 1))["updates"]
    assert [u["worker"] for u in updates] == [original["worker"]]


async def test_the_same_content_from_its_author_in_a_later_round_is_a_replay(world):
    await world.start()
    await submit_round(world, 1, {"w1": 0.5, "w2": 0.25})
    await world.ok("AdvanceRound", "digits", 1)
    result = await world.call("SubmitUpdate", "digits", 2, update(0.5), 10, who="w1")
    assert_refused(result, "replay", "already submitted this content in round 1")


async def test_all_zero_updates_are_never_replays_or_copies(world):
    await world.start(task_json(rounds=3))
    for round_no in (1, 2):
        await submit_round(world, round_no, {"w1": 0.0, "w2": 0.0, "w3": 0.0})
        await world.ok("AdvanceRound", "digits", round_no)
    records = (await world.json("GetRoundUpdates", "digits", 2))["updates"]
    assert len(records) == 3 and {r["fingerprint"] for r in records} == {None}


async def test_submit_refuses_bad_sample_counts(world):
    await world.start(task_json(max_samples=500))
    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 0, who="w1")
    assert_refused(result, "num-samples", "got 0")

    # A claim is an aggregation weight: the task bounds it.
    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 501, who="w1")
    assert_refused(result, "num-samples", "1..500", "got 501")
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 500, who="w1")


async def test_the_default_task_bounds_sample_claims(world):
    await world.start()

    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 2**31 - 1, who="w1")

    assert_refused(result, "num-samples", "1..1000000")
    assert (await world.json("GetTask", "digits"))["spec"]["max_samples"] == 1_000_000


async def test_a_round_whose_aggregation_fails_still_ends_on_the_record(world):
    # A global model at the edge of the fixed-point range: these updates would push it out.
    edge = {"w": np.full((2, 2), 32767.0, np.float32), "b": np.full(2, 32767.0, np.float32)}
    await world.ok("CreateTask", task_json(norm_bound=100.0), encode_update(edge, LAYOUT))
    await world.register("digits", ORGS)
    await submit_round(world, 1, {"w1": 2.0, "w2": 3.0})

    advanced = await world.ok("AdvanceRound", "digits", 1)

    record = json.loads(advanced.payload)
    assert "leaves the fixed-point range" in record["failed"] and record["used"] == []
    assert {e["id"] for e in record["excluded"]} == {u["worker"] for u in record["updates"]}
    assert await world_model(world, 1) == await world_model(world, 0)
    assert (await world.json("GetRoundUpdates", "digits", 2))["state"]["status"] == "open"
    assert verify_audit(*await fetch_audit(world)) == []


def _mutate(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    out[offset] = value
    return bytes(out)


def _encode_as(shapes: dict[str, list[int]]) -> bytes:
    """An update encoded for another layout than the task's."""
    layout = Layout.from_json({"tensors": [{"name": n, "shape": s} for n, s in shapes.items()]})
    return encode_update({n: np.zeros(s) for n, s in shapes.items()}, layout)


BAD_UPDATES = [
    ("size", lambda: update(0.5) + b"\x00" * 1000),
    ("encoding-version", lambda: _mutate(update(0.5), 4, 9)),
    ("format", lambda: b"FFUP"),
    ("dtype", lambda: _mutate(update(0.5), 7, 1)),
    ("tensor-names", lambda: _encode_as({"w": [2, 2], "c": [2]})),
    ("shapes", lambda: _encode_as({"w": [4, 1], "b": [2]})),
    ("non-finite", lambda: update(0.5)[:-4] + np.float32(np.nan).tobytes()),
    ("digest", lambda: update(0.5)[:-4] + np.float32(0.75).tobytes()),
    ("norm", lambda: update(5.0)),
    ("norm", lambda: update(0.0, 20000.0)),
]


@pytest.mark.parametrize(("check", "make"), BAD_UPDATES, ids=[c for c, _ in BAD_UPDATES])
async def test_submit_refuses_malformed_or_oversized_updates(world, check, make):
    await world.start()
    result = await world.call("SubmitUpdate", "digits", 1, make(), 10, who="w1")
    assert_refused(result, check)
    assert result.rwset.writes == ()


async def test_norm_refusal_reports_the_norm_and_the_bound(world):
    await world.start()
    result = await world.call("SubmitUpdate", "digits", 1, update(5.0), 10, who="w1")
    assert_refused(result, "norm", "L2 norm 12.2474 exceeds the bound 10.0")


async def test_accepted_update_writes_exactly_its_own_keys(world):
    await world.start()
    result = await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    kinds = sorted(key.split("\x00")[1] for key, _ in result.rwset.writes)
    assert kinds == ["fl.blob", "fl.digest", "fl.seal", "fl.update", "fl.worker"]
    # The seal is written blindly: concurrent updates of one org never conflict on it.
    assert not [key for key, _ in result.rwset.reads if "fl.seal" in key]
    record = json.loads(result.payload)
    assert record["digest"] == read_header(update(0.5))["content_digest"]
    assert record["subject"] == "CN=worker1,OU=client" and record["msp_id"] == "Org1MSP"


# -- queries ---------------------------------------------------------------------------------


async def test_query_refusals(world):
    await world.start()
    assert_refused(await world.call("GetGlobalModel", "digits", 1), "not-found", "round 1")
    assert_refused(await world.call("GetWorkerHistory", "digits", "nobody"), "worker")
    assert_refused(await world.call("GetAudit", "nothing", 1), "not-found")
    assert_refused(await world.call("GetAudit", "digits", 0), "round")
    initial = (await world.ok("GetGlobalModel", "digits", 0)).payload
    np.testing.assert_array_equal(decode_update(initial, LAYOUT)["b"], [0.0, 0.0])


async def test_a_huge_sample_claim_weighs_no_more_than_its_organisation(world):
    await world.start(task_json(aggregation={"rule": "fedavg", "params": {}}))
    await world.ok("SubmitUpdate", "digits", 1, update(2.0), 1_000_000, who="w1")
    await submit_round(world, 1, {"w1b": 0.0625, "w2": 0.125, "w3": 0.25})

    await world.ok("AdvanceRound", "digits", 1)

    # Org1's row is ~2.0 (its own claims), but it is one of three organisations.
    model = decode_update(await world_model(world, 1), LAYOUT)
    org1 = (2.0 * 1_000_000 + 0.0625 * 10) / 1_000_010
    np.testing.assert_allclose(model["w"], np.full((2, 2), (org1 + 0.125 + 0.25) / 3), atol=1e-6)


async def test_the_audit_comes_in_pages_of_whole_rounds(world, monkeypatch):
    monkeypatch.setattr("fedfabric.chaincode.fl._contract.AUDIT_PAGE_UPDATES", 4)
    await world.start(task_json(rounds=4))
    for round_no in (1, 2, 3):
        await submit_round(world, round_no, {"w1": 0.01 * round_no, "w2": 0.1 + 0.01 * round_no})
        await world.ok("AdvanceRound", "digits", round_no)

    first = await world.json("GetAudit", "digits", 1)
    second = await world.json("GetAudit", "digits", first["next_round"])

    assert [r["round"] for r in first["rounds"]] == [1, 2] and first["next_round"] == 3
    assert [r["round"] for r in second["rounds"]] == [3, 4] and second["next_round"] is None
    assert second["rounds"][1]["state"]["status"] == "open"
    assert verify_audit(*await fetch_audit(world)) == []


async def test_contributions_read_one_total_per_organisation(world):
    await world.start(task_json(rounds=3))
    for round_no in (1, 2):
        await submit_round(world, round_no, {"w1": 0.01 * round_no, "w2": 0.1 + 0.01 * round_no})
        await world.ok("AdvanceRound", "digits", round_no)

    result = await world.ok("GetContributions", "digits")

    assert json.loads(result.payload)["orgs"]["Org2MSP"] == {
        "excluded": 0,
        "samples": 20,
        "updates": 2,
        "used": 2,
    }
    assert len(result.rwset.reads) == 1 + 3
    # ... and one scan, of the organisations admitted while the task ran.
    assert [start.split("\x00")[1] for start, _ in result.rwset.range_queries] == ["fl.admitted"]


async def test_list_tasks_names_every_task_in_id_order(world):
    assert await world.json("ListTasks") == {"tasks": []}
    await world.start(task_json(id="zeta", rounds=3))
    await world.start(task_json(id="alpha", aggregation={"rule": "median", "params": {}}))

    listed = (await world.json("ListTasks", who="w2"))["tasks"]  # any member may list

    assert [t["id"] for t in listed] == ["alpha", "zeta"]
    assert listed[1]["rounds"] == 3 and listed[0]["aggregation"] == "median"
    assert listed[0]["created_by"] == "Org1MSP" and listed[0]["mode"] == "sync"
    assert listed[0]["created_tx"] == (await world.json("GetTask", "alpha"))["created_tx"]
