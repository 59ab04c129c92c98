"""SubmitBatch on the memory ledger: device certificates, signatures, per-entry refusals."""

from __future__ import annotations

import datetime
import json
import math
import struct

import pytest
from fl_world import ORGS, World, assert_refused, task_json, update

from fedfabric.chaincode.fl import (
    MAX_BATCH_ENTRIES,
    FLContract,
    TaskError,
    TaskSpec,
    decode_batch,
    encode_batch,
    read_header,
)
from fedfabric.chaincode.testing import invoke
from tests.fixtures.devices import OrgCA

CHANNEL = "testchannel"  # what `invoke` tells the contract


@pytest.fixture(scope="module")
def cas() -> dict[str, OrgCA]:
    return {msp: OrgCA(msp) for msp in ORGS}


@pytest.fixture
def batch_world(identities, cas, tmp_path) -> World:
    folder = tmp_path / "ca-certs"
    for ca in cas.values():
        ca.write(folder)
    return World(identities, FLContract({"ca_certs": str(folder)}))


@pytest.fixture(scope="module")
def devices(cas):
    """Five Org1 devices and one Org2 device, issued by their orgs' CAs."""
    org1 = [cas["Org1MSP"].issue(f"device{i}") for i in range(5)]
    return {"org1": org1, "org2": cas["Org2MSP"].issue("device-org2")}


async def start(world: World, devices, **task) -> None:
    await world.start(task_json(**task))
    enrolments = [f"device{i}" for i in range(len(devices["org1"]))]
    await world.ok("RegisterWorkers", "digits", enrolments, who="admin")
    await world.ok("RegisterWorkers", "digits", ["device-org2"], who="admin2")


def with_nan(blob: bytes) -> bytes:
    offset = read_header(blob)["body_offset"]
    return blob[:offset] + struct.pack("<f", math.nan) + blob[offset + 4 :]


async def test_a_batch_with_a_forged_signature_and_a_nan_update_commits_the_others(
    batch_world, devices
):
    world = batch_world
    await start(world, devices)
    org1 = devices["org1"]
    entries = [org1[i].entry(CHANNEL, "digits", 1, update(0.1 * (i + 1))) for i in range(4)]
    forged = entries[1]  # device1's certificate and update, signed by device4
    other = org1[4].entry(CHANNEL, "digits", 1, forged.update).signature
    entries[1] = type(forged)(forged.certificate, forged.update, forged.num_samples, other)
    entries[2] = org1[2].entry(CHANNEL, "digits", 1, with_nan(update(0.3)))

    result = await world.ok("SubmitBatch", "digits", 1, encode_batch(entries), who="w1")

    outcome = json.loads(result.payload)
    page = await world.json("GetRoundUpdates", "digits", 1)
    recorded = {u["worker"] for u in page["updates"]}
    assert recorded == set(outcome["accepted"]) and len(recorded) == 2
    [batch] = await world.json("GetBatches", "digits", 1)
    assert batch == {k: v for k, v in outcome.items() if k != "records"}
    refused = {r["entry"]: r for r in batch["refused"]}
    assert sorted(refused) == [1, 2]
    assert refused[1]["check"] == "signature" and "CN=device1" in refused[1]["reason"]
    assert refused[2]["check"] == "non-finite" and "holds NaN" in refused[2]["reason"]
    assert refused[1]["worker"] and refused[2]["worker"]
    assert not {refused[1]["worker"], refused[2]["worker"]} & recorded
    event_name, event = result.event
    assert event_name == "BatchSubmitted"
    assert [r["entry"] for r in json.loads(event)["refused"]] == [1, 2]
    assert [a["worker"] for a in json.loads(event)["accepted"]] == outcome["accepted"]


async def test_each_device_is_recorded_exactly_as_submit_update_records_a_worker(
    batch_world, devices
):
    world = batch_world
    await start(world, devices, weighting="samples")
    single = await world.json("SubmitUpdate", "digits", 1, update(0.2), 10, who="w1")
    entry = devices["org1"][0].entry(CHANNEL, "digits", 1, update(0.4), samples=30)

    outcome = await world.json("SubmitBatch", "digits", 1, encode_batch([entry]), who="w1")

    [record] = outcome["records"]
    assert sorted(record) == sorted(single)
    assert record["subject"] == "CN=device0,OU=client" and record["num_samples"] == 30
    assert record["worker"].startswith("Org1MSP:")
    stored = await world.ok("GetUpdate", "digits", 1, record["worker"])
    assert stored.payload == update(0.4)
    history = await world.json("GetWorkerHistory", "digits", record["worker"])
    assert history[0]["record"] == record
    aggregate = await world.json("AdvanceRound", "digits", 1)
    assert sorted(aggregate["used"]) == sorted([single["worker"], record["worker"]])
    contributions = await world.json("GetContributions", "digits")
    assert contributions["orgs"]["Org1MSP"]["updates"] == 2
    assert contributions["orgs"]["Org1MSP"]["samples"] == 40


@pytest.mark.parametrize(
    ("case", "check", "fragment"),
    [
        ("other round", "signature", "did not sign this update"),
        ("other task", "signature", "did not sign this update"),
        ("other channel", "signature", "did not sign this update"),
        ("other samples", "signature", "did not sign this update"),
        ("other org's device", "certificate", "was not issued by Org1MSP's CA"),
        ("forged certificate", "certificate", "the signature is not Org1MSP's CA's"),
        ("expired", "certificate", "not at 2024-01-01"),
        ("not registered", "registered", "is not registered for task 'digits'"),
        ("garbage certificate", "certificate", "not a DER X.509 certificate"),
        ("too large", "size", "1001 bytes"),
        ("a CA as device", "certificate", "is a CA certificate, not a device's"),
    ],
)
async def test_an_entry_that_is_not_its_devices_own_for_this_round_is_refused(
    batch_world, devices, cas, case, check, fragment
):
    world = batch_world
    await start(world, devices)
    device = devices["org1"][0]
    blob = update(0.5)
    entry = device.entry(CHANNEL, "digits", 1, blob)
    if case == "other round":
        entry = device.entry(CHANNEL, "digits", 2, blob)
    elif case == "other task":
        entry = device.entry(CHANNEL, "other", 1, blob)
    elif case == "other channel":
        entry = device.entry("otherchannel", "digits", 1, blob)
    elif case == "other samples":
        signed = device.entry(CHANNEL, "digits", 1, blob, samples=10)
        entry = type(signed)(signed.certificate, blob, 1000, signed.signature)
    elif case == "other org's device":
        entry = devices["org2"].entry(CHANNEL, "digits", 1, blob)
    elif case == "forged certificate":  # same issuer name, another key
        entry = (
            cas["Org1MSP"]
            .issue("device0", signed_by=OrgCA("Org1MSP").key)
            .entry(CHANNEL, "digits", 1, blob)
        )
    elif case == "expired":
        old = datetime.datetime(2023, 1, 1, tzinfo=datetime.UTC)
        entry = cas["Org1MSP"].issue("device0", not_after=old).entry(CHANNEL, "digits", 1, blob)
    elif case == "not registered":
        entry = cas["Org1MSP"].issue("stranger").entry(CHANNEL, "digits", 1, blob)
    elif case == "garbage certificate":
        entry = type(entry)(b"\x30\x03abc", blob, 10, entry.signature)
    elif case == "a CA as device":
        entry = cas["Org1MSP"].issue("device0", ca=True).entry(CHANNEL, "digits", 1, blob)
    elif case == "too large":  # the task's max_update_bytes is 1000
        entry = device.entry(CHANNEL, "digits", 1, blob + b"\x00" * (1001 - len(blob)))
    good = devices["org1"][1].entry(CHANNEL, "digits", 1, update(0.25))

    outcome = await world.json("SubmitBatch", "digits", 1, encode_batch([entry, good]), who="w1")

    [refused] = outcome["refused"]
    assert refused["entry"] == 0 and refused["check"] == check, refused
    assert refused["reason"].startswith(f"{check}: ") and fragment in refused["reason"], refused
    assert len(outcome["accepted"]) == 1


async def test_repeats_inside_one_batch_and_across_batches_are_refused(batch_world, devices):
    world = batch_world
    await start(world, devices)
    org1 = devices["org1"]
    first = org1[0].entry(CHANNEL, "digits", 1, update(0.5))
    entries = [
        first,
        org1[0].entry(CHANNEL, "digits", 1, update(0.6)),  # the same device again
        org1[1].entry(CHANNEL, "digits", 1, update(0.5)),  # another device, same content
    ]

    outcome = await world.json("SubmitBatch", "digits", 1, encode_batch(entries), who="w1")
    again = await world.json("SubmitBatch", "digits", 1, encode_batch([first]), who="w1")

    assert [(r["entry"], r["check"]) for r in outcome["refused"]] == [
        (1, "one-per-round"),
        (2, "copy"),
    ]
    assert [(r["entry"], r["check"]) for r in again["refused"]] == [(0, "replay")]
    assert again["accepted"] == [] and len(outcome["accepted"]) == 1


async def test_the_batch_refusal_setting_refuses_the_whole_batch_with_every_reason(
    batch_world, devices
):
    world = batch_world
    await start(world, devices, batch_refusal="batch")
    org1 = devices["org1"]
    entries = [
        org1[0].entry(CHANNEL, "digits", 1, update(0.5)),
        org1[1].entry(CHANNEL, "digits", 1, with_nan(update(0.5))),
    ]

    result = await world.call("SubmitBatch", "digits", 1, encode_batch(entries), who="w1")

    assert_refused(result, "batch", "1 of 2 entries refused", "entry 1 (Org1MSP:", "holds NaN")
    assert (await world.json("GetRoundUpdates", "digits", 1))["updates"] == []


async def test_whole_batch_refusals(batch_world, devices, identities):
    world = batch_world
    await start(world, devices, allowed_orgs=["Org1MSP", "Org2MSP"])
    entry = devices["org1"][0].entry(CHANNEL, "digits", 1, update(0.5))
    batch = encode_batch([entry])

    outsider = await world.call("SubmitBatch", "digits", 1, batch, who="w3")
    closed = await world.call("SubmitBatch", "digits", 3, batch, who="w1")
    truncated = await world.call("SubmitBatch", "digits", 1, batch[:-1], who="w1")
    trailing = await world.call("SubmitBatch", "digits", 1, batch + b"x", who="w1")
    many = b"FLB1" + struct.pack(">I", MAX_BATCH_ENTRIES + 1)
    too_many = await world.call("SubmitBatch", "digits", 1, many, who="w1")

    assert_refused(outsider, "authorised", "Org3MSP may not submit")
    assert_refused(closed, "round-open", "round 3 of 'digits' is new")
    assert_refused(truncated, "batch-format", "entry 0: signature runs past the end")
    assert_refused(trailing, "batch-format", "1 bytes follow the last entry")
    assert_refused(too_many, "batch-format", f"a batch holds 1..{MAX_BATCH_ENTRIES}")


async def test_an_endorser_without_the_orgs_ca_refuses_each_entry_saying_why(identities, devices):
    world = World(identities)  # no ca_certs setting
    await start(world, devices)
    entry = devices["org1"][0].entry(CHANNEL, "digits", 1, update(0.5))

    outcome = await world.json("SubmitBatch", "digits", 1, encode_batch([entry]), who="w1")

    [refused] = outcome["refused"]
    assert refused["check"] == "certificate" and refused["worker"] is None
    assert "no CA certificate for Org1MSP (chaincode server setting ca_certs" in refused["reason"]


async def test_a_batch_endorses_to_the_same_read_write_set_twice(batch_world, devices):
    world = batch_world
    await start(world, devices)
    org1 = devices["org1"]
    entries = [org1[i].entry(CHANNEL, "digits", 1, update(0.1 * (i + 1))) for i in range(3)]
    entries.append(org1[3].entry(CHANNEL, "digits", 1, with_nan(update(1.0))))
    batch = encode_batch(entries)

    runs = [
        await invoke(world.contract, "fl:SubmitBatch", "digits", "1", batch,
                     creator=world.ids["w1"], ledger=world.ledger, commit=False)
        for _ in range(2)
    ]  # fmt: skip

    assert runs[0].status == 200
    assert runs[0].rwset == runs[1].rwset and runs[0].payload == runs[1].payload
    assert runs[0].event == runs[1].event


def test_batches_round_trip_and_the_task_setting_is_checked(devices):
    entries = [d.entry(CHANNEL, "t", 1, update(0.5)) for d in devices["org1"][:2]]

    assert decode_batch(encode_batch(entries)) == entries
    with pytest.raises(TaskError, match="'batch_refusal': must be one of \\['entry', 'batch'\\]"):
        TaskSpec.from_json(task_json(batch_refusal="device"))
    assert TaskSpec.from_json(task_json(batch_refusal="batch")).to_json()["batch_refusal"] == (
        "batch"
    )
    assert "batch_refusal" not in TaskSpec.from_json(task_json()).to_json()


@pytest.mark.parametrize("others", [0, 300])  # the registry read in one scan, or key by key
async def test_removed_and_unknown_devices_are_refused_however_the_registry_is_read(
    batch_world, devices, cas, others
):
    world = batch_world
    await start(world, devices, max_workers_per_org=400)
    if others:
        await world.ok("RegisterWorkers", "digits", [f"other{i}" for i in range(others)])
    await world.ok("RemoveWorkers", "digits", ["device1"])
    org1 = devices["org1"]
    entries = [
        org1[0].entry(CHANNEL, "digits", 1, update(0.1)),
        org1[1].entry(CHANNEL, "digits", 1, update(0.2)),
        cas["Org1MSP"].issue("stranger").entry(CHANNEL, "digits", 1, update(0.3)),
    ]

    outcome = await world.json("SubmitBatch", "digits", 1, encode_batch(entries), who="w1")

    assert len(outcome["accepted"]) == 1
    assert [(r["entry"], r["check"]) for r in outcome["refused"]] == [
        (1, "registered"),
        (2, "registered"),
    ]
    assert "was removed from task" in outcome["refused"][0]["reason"]
    assert "is not registered for task" in outcome["refused"][1]["reason"]
