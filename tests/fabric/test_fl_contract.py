"""The FL contract as Python chaincode-as-a-service behind three real Fabric peers.

Every org's chaincode server validates updates on its own data (`tests.fixtures.flval`):
Transport on coordinates 6-7, Energy on 0-2, Health on 3-5. Workers submit through
Transport's peer, whose org endorses first and can veto (fabric-protocol.md §3.1); the policy
OutOf(2, 3 orgs) then needs Energy or Health, so a refusal by one of them is bypassed and a
refusal by both is not.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfabric.chaincode.fl import (
    BatchEntry,
    Layout,
    Update,
    decode_update,
    encode_batch,
    encode_model,
    encode_update,
    entry_message,
    make_rule,
    read_header,
    verify_audit,
    worker_enrolment,
    worker_id,
)
from fedfabric.fl_worker.endorsers import Endorsers
from fedfabric.fl_worker.ledger import FLLedger, refusal
from fedfabric.gateway import (
    CommitError,
    Contract,
    EndorseError,
    EvaluateError,
    connect_profile,
    load_private_key,
)
from fedfabric.gateway.signers import new_private_key_signer
from fedfabric.network import FabricNetwork
from tests.fixtures.flval import LAYOUT, TRUE_WEIGHTS

ORGS = {"transport": "TransportMSP", "energy": "EnergyMSP", "health": "HealthMSP"}
LAYOUT_OBJ = Layout.from_json(LAYOUT)
THRESHOLD = 0.05
ENERGY_ONLY = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=np.float32)  # Energy's coordinates
ENERGY_AND_HEALTH = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=np.float32)

Contracts = Callable[..., Awaitable[Contract]]


@pytest.fixture
async def fl(network: FabricNetwork) -> AsyncIterator[Contracts]:
    """``await fl(org, user)``: the ``fl`` contract seen by that identity (connections reused)."""
    opened: dict[tuple[str, str], Contract] = {}
    gateways = []

    async def contract(org: str = "transport", user: str = "User1") -> Contract:
        if (org, user) not in opened:
            gateway = connect_profile(network.profile(org), user)
            gateways.append(gateway)
            channel = gateway.get_network(network.topology.channel)
            opened[org, user] = channel.get_contract("fl")
        return opened[org, user]

    try:
        yield contract
    finally:
        for gateway in gateways:
            await gateway.close()


@pytest.fixture(scope="module", autouse=True)
async def discovered(network: FabricNetwork) -> None:
    """The ``fl`` servers validate with `tests.fixtures.flval` (the topology's settings), also
    after a `fedfabric run` gave them its own validators; then gossip has found them."""
    await network.deploy(["fl"])


def subject(network: FabricNetwork, org: str, user: str) -> str:
    cert = x509.load_pem_x509_certificate(network.identity(org, user).cert.read_bytes())
    return cert.subject.rfc4514_string()


def delta(scale: float = 1e-3, seed: int = 0, direction: np.ndarray | None = None) -> bytes:
    """An encoded update: a small random delta, plus 2 x `direction` when given."""
    values = np.random.default_rng(seed).normal(scale=scale, size=8).astype(np.float32)
    if direction is not None:
        values += 2 * direction
    return encode_update({"w": values}, LAYOUT_OBJ)


def task_spec(task_id: str, **overrides) -> dict:
    spec = {
        "id": task_id,
        "layout": LAYOUT,
        "rounds": 3,
        "min_updates": 1,
        "norm_bound": 100.0,
        "max_update_bytes": 10_000,
        "aggregation": {"rule": "fedavg", "params": {}},
        "allowed_orgs": sorted(ORGS.values()),
        "validation_threshold": THRESHOLD,
    }
    return {**spec, **overrides}


async def open_task(
    fl: Contracts,
    network: FabricNetwork,
    spec: dict,
    workers: dict[str, list[str]] | None = None,
) -> None:
    """Create the task as Transport's admin (which opens round 1); then each allowed org's
    admin registers its `workers` (default: User1 and User2)."""
    admin = await fl("transport", "Admin")
    initial = encode_model({"w": TRUE_WEIGHTS}, LAYOUT_OBJ)
    await admin.submit("CreateTask", [json.dumps(spec), initial])
    await network.wait_synced()  # every org's peer endorses the registrations
    for org, msp_id in ORGS.items():
        users = (workers or {}).get(org, ["User1", "User2"] if workers is None else [])
        if msp_id in spec["allowed_orgs"] and users:
            ids = [enrolment(network, org, user) for user in users]
            await (await fl(org, "Admin")).submit("RegisterWorkers", [spec["id"], json.dumps(ids)])


def enrolment(network: FabricNetwork, org: str, user: str) -> str:
    return worker_enrolment(network.issue_identity(org, user).cert.read_bytes())


async def submit(contract: Contract, task: str, update: bytes, samples: int = 10) -> dict:
    return json.loads(await contract.submit("SubmitUpdate", [task, "1", update, str(samples)]))


async def round_workers(fl: Contracts, task: str, round_no: int = 1) -> list[str]:
    contract = await fl()
    page = json.loads(await contract.evaluate("GetRoundUpdates", [task, str(round_no)]))
    return [u["worker"] for u in page["updates"]]


def refusals(error: EndorseError | EvaluateError) -> dict[str, str]:
    """MSP id -> chaincode message of every peer that refused."""
    return {d.msp_id: d.message for d in error.details}


async def test_a_good_update_commits_and_is_listed(fl, network) -> None:
    await open_task(fl, network, task_spec("good"))

    record = await submit(await fl(), "good", delta(seed=1), samples=25)

    assert record["msp_id"] == "TransportMSP" and record["num_samples"] == 25
    assert await round_workers(fl, "good") == [record["worker"]]


async def test_update_refused_by_one_org_commits_with_the_other_two(fl, network) -> None:
    await open_task(fl, network, task_spec("one-refuses"))
    bad_for_energy = delta(seed=2, direction=ENERGY_ONLY)
    contract = await fl()
    args = ["one-refuses", "1", bad_for_energy, "10"]

    def proposal(*orgs: str):
        return contract.new_proposal("SubmitUpdate", args, endorsing_orgs=list(orgs))

    with pytest.raises(EndorseError) as energy:
        await proposal("TransportMSP", "EnergyMSP").endorse()
    await proposal("TransportMSP", "HealthMSP").endorse()  # endorsed, never submitted
    record = await submit(contract, "one-refuses", bad_for_energy)

    assert list(refusals(energy.value)) == ["EnergyMSP"]
    assert "private-validation: EnergyMSP refuses" in refusals(energy.value)["EnergyMSP"]
    assert await round_workers(fl, "one-refuses") == [record["worker"]]


async def test_named_endorsers_give_way_to_the_next_org_and_every_refusal_is_reported(
    fl, network
) -> None:
    await open_task(fl, network, task_spec("named"))
    policy = network.topology.chaincode("fl").endorsement_policy
    orgs = [o.msp_id for o in network.topology.organizations]
    endorsers = Endorsers(policy, orgs)
    gateways = [connect_profile(network.profile("transport"), u) for u in ("User1", "User2")]
    channel = network.topology.channel
    ledgers = [FLLedger.for_gateway(g, channel, endorsers=endorsers) for g in gateways]
    try:
        # Energy refuses, so Transport and Health endorse it: one attempt more, no error.
        record = await ledgers[0].submit_update("named", 1, delta(seed=5, direction=ENERGY_ONLY), 9)
        with pytest.raises(EndorseError) as both:  # Energy and Health both refuse
            await ledgers[1].submit_update(
                "named", 1, delta(seed=6, direction=ENERGY_AND_HEALTH), 9
            )
    finally:
        for gateway in gateways:
            await gateway.close()

    assert endorsers.sets("TransportMSP") == [
        ("TransportMSP", "EnergyMSP"),
        ("TransportMSP", "HealthMSP"),
    ]
    assert await round_workers(fl, "named") == [record["worker"]]
    assert sorted(refusals(both.value)) == ["EnergyMSP", "HealthMSP"]
    assert refusal(both.value).check == "private-validation"


async def test_a_worker_cannot_leave_its_own_org_out_of_the_endorsement(fl, network) -> None:
    await open_task(fl, network, task_spec("sealed"))
    contract = await fl()  # a Transport worker
    args = ["sealed", "1", delta(seed=40), "10"]

    with pytest.raises(CommitError) as spared:  # Energy and Health would accept it
        await contract.submit("SubmitUpdate", args, endorsing_orgs=["EnergyMSP", "HealthMSP"])
    record = json.loads(
        await contract.submit("SubmitUpdate", args, endorsing_orgs=["TransportMSP", "HealthMSP"])
    )

    assert spared.value.code_name == "ENDORSEMENT_POLICY_FAILURE"
    assert await round_workers(fl, "sealed") == [record["worker"]]


async def test_update_refused_by_two_orgs_never_commits_and_both_reasons_reach_the_client(
    fl, network
) -> None:
    await open_task(fl, network, task_spec("two-refuse"))

    with pytest.raises(EndorseError) as info:
        await submit(await fl(), "two-refuse", delta(seed=3, direction=ENERGY_AND_HEALTH))

    by_org = refusals(info.value)
    assert sorted(by_org) == ["EnergyMSP", "HealthMSP"]
    for msp, message in by_org.items():
        assert f"private-validation: {msp} refuses the update of TransportMSP:" in message
        assert f"exceeds baseline 0 + threshold {THRESHOLD:g}" in message
    assert await round_workers(fl, "two-refuse") == []


def with_nan(update: bytes) -> bytes:
    """The update with its first value replaced by NaN (encode_update would refuse it)."""
    offset = read_header(update)["body_offset"]
    return update[:offset] + struct.pack("<f", math.nan) + update[offset + 4 :]


@pytest.mark.parametrize(
    ("case", "make", "check"),
    [
        ("nan", lambda: with_nan(delta(seed=4)), "non-finite: tensor 'w' holds NaN"),
        (
            "shape",
            lambda: encode_update(
                {"w": np.zeros(4, np.float32)},
                Layout.from_json({"tensors": [{"name": "w", "shape": [4]}]}),
            ),
            "shapes: tensor 'w' has shape (4,), expected (8,)",
        ),
        ("garbage", lambda: b"not an update", "format: 13 bytes is shorter than"),
    ],
)
async def test_malformed_update_is_refused_by_the_first_endorser(
    fl, network, case, make, check
) -> None:
    task = f"malformed-{case}"
    await open_task(fl, network, task_spec(task))

    with pytest.raises(EndorseError) as info:
        await submit(await fl(), task, make())

    assert list(refusals(info.value)) == ["TransportMSP"]
    assert check in refusals(info.value)["TransportMSP"]
    assert await round_workers(fl, task) == []


async def test_replayed_update_is_refused_for_its_author_and_for_a_copier(fl, network) -> None:
    await open_task(fl, network, task_spec("replay"))
    update = delta(seed=5)
    first = await submit(await fl("transport", "User1"), "replay", update)

    with pytest.raises(EndorseError) as again:
        await submit(await fl("transport", "User1"), "replay", update)
    with pytest.raises(EndorseError) as copied:
        await submit(await fl("transport", "User2"), "replay", update)

    assert "replay: identical update already recorded" in refusals(again.value)["TransportMSP"]
    assert "copy: the content" in refusals(copied.value)["TransportMSP"]
    assert f"first submitted by {first['worker']}" in refusals(copied.value)["TransportMSP"]
    assert await round_workers(fl, "replay") == [first["worker"]]


async def test_unauthorised_identities_are_refused(fl, network) -> None:
    spec = task_spec("authorised", allowed_orgs=["EnergyMSP", "TransportMSP"])
    await open_task(fl, network, spec, workers={"transport": ["User1"]})

    with pytest.raises(EndorseError) as other_user:
        await submit(await fl("transport", "User2"), "authorised", delta(seed=6))
    with pytest.raises(EndorseError) as other_org:
        await submit(await fl("health", "User1"), "authorised", delta(seed=7))
    with pytest.raises(EndorseError) as not_admin:
        await (await fl("transport", "User1")).submit("AdvanceRound", ["authorised", "1"])
    allowed = await submit(await fl("transport", "User1"), "authorised", delta(seed=8))

    assert "is not registered for task" in refusals(other_user.value)["TransportMSP"]
    assert subject(network, "transport", "User2") in refusals(other_user.value)["TransportMSP"]
    assert "authorised: HealthMSP" in refusals(other_org.value)["HealthMSP"]
    assert "role: AdvanceRound needs an admin" in refusals(not_admin.value)["TransportMSP"]
    assert await round_workers(fl, "authorised") == [allowed["worker"]]


async def test_advance_round_aggregate_equals_the_aggregate_recomputed_offline(fl, network) -> None:
    rule = {"rule": "multi-krum", "params": {"f": 1, "m": 3}}
    await open_task(
        fl,
        network,
        task_spec(
            "aggregate",
            aggregation=rule,
            min_updates=5,
            validation_threshold=None,
            weighting="samples",  # Multi-Krum over five updates: three orgs are too few rows
        ),
    )
    workers = [
        ("transport", "User1"),
        ("transport", "User2"),
        ("energy", "User1"),
        ("energy", "User2"),
        ("health", "User1"),
    ]
    updates = [delta(scale=0.01, seed=10 + i) for i in range(4)]
    updates.append(delta(seed=20, direction=ENERGY_AND_HEALTH))  # the outlier Krum drops
    contracts = [await fl(org, user) for org, user in workers]
    sent = await asyncio.gather(
        *(
            submit(contract, "aggregate", update, samples=10 * (i + 1))
            for i, (contract, update) in enumerate(zip(contracts, updates, strict=True))
        )
    )
    await network.wait_synced()  # AdvanceRound's endorsers must all hold every update
    with pytest.raises(EndorseError) as not_the_creator:  # Transport created the task
        await (await fl("energy", "Admin")).submit("AdvanceRound", ["aggregate", "1"])
    admin = await fl("transport", "Admin")

    record = json.loads(await admin.submit("AdvanceRound", ["aggregate", "1"]))

    contract = await fl()
    base = await contract.evaluate("GetGlobalModel", ["aggregate", "0"])
    stored = await contract.evaluate("GetGlobalModel", ["aggregate", "1"])
    by_digest = {read_header(u)["content_digest"]: u for u in updates}
    ledger_order = json.loads(await contract.evaluate("GetRoundUpdates", ["aggregate", "1"]))
    offline = make_rule(rule["rule"], rule["params"]).aggregate(
        decode_update(base, LAYOUT_OBJ),
        [
            Update(r["worker"], decode_update(by_digest[r["digest"]], LAYOUT_OBJ), r["num_samples"])
            for r in ledger_order["updates"]
        ],
    )
    assert stored == encode_model(offline.model, LAYOUT_OBJ)
    assert record["used"] == list(offline.used) and len(offline.used) == 3
    assert [e["id"] for e in record["excluded"]] == [e.update_id for e in offline.excluded]
    assert sent[4]["worker"] in [e["id"] for e in record["excluded"]]
    assert record["model_digest"] == read_header(stored)["content_digest"]
    assert ledger_order["state"]["status"] == "aggregated"
    assert ledger_order["state"]["advanced_by"].startswith("TransportMSP:")
    assert "coordinator: AdvanceRound: EnergyMSP does not drive task 'aggregate'" in refusals(
        not_the_creator.value
    ).get("EnergyMSP", "")


async def test_paginated_audit_recomputes_every_round(fl, network: FabricNetwork) -> None:
    await open_task(fl, network, task_spec("audit", validation_threshold=None, rounds=2))
    admin = await fl("transport", "Admin")
    workers = [await fl(org, "User1") for org in ORGS]
    for round_no in (1, 2):
        await asyncio.gather(
            *(
                worker.submit(
                    "SubmitUpdate", ["audit", str(round_no), delta(seed=30 + 3 * round_no + i), "7"]
                )
                for i, worker in enumerate(workers)
            )
        )
        await network.wait_synced()  # AdvanceRound's endorsers must all hold every update
        await admin.submit("AdvanceRound", ["audit", str(round_no)])
    await network.wait_synced()  # Health reads what Transport's admin just committed
    contract = await fl("health", "User2")

    audit = json.loads(await contract.evaluate("GetAudit", ["audit", "1"]))
    assert audit["next_round"] is None
    models = {r: await contract.evaluate("GetGlobalModel", ["audit", str(r)]) for r in (0, 1, 2)}
    updates = {
        (entry["round"], u["worker"]): await contract.evaluate(
            "GetUpdate", ["audit", str(entry["round"]), u["worker"]]
        )
        for entry in audit["rounds"]
        for u in entry["updates"]
    }

    assert [len(entry["updates"]) for entry in audit["rounds"]] == [3, 3]
    assert verify_audit(audit, models, updates) == []
    models[2] = models[1]
    assert verify_audit(audit, models, updates) == [
        "round 2: stored model differs from the recomputed one"
    ]


def device_entry(
    network: FabricNetwork, org: str, name: str, task: str, update: bytes, signer_of: str = ""
) -> BatchEntry:
    """`name`'s batch entry for round 1 of `task` (its identity issued by `org`'s CA),
    signed by `signer_of`'s key instead when given (a forgery)."""
    device = network.issue_identity(org, name)
    key = load_private_key(network.issue_identity(org, signer_of or name).key)
    message = entry_message(network.topology.channel, task, 1, update, 10)
    cert = x509.load_pem_x509_certificate(device.cert.read_bytes())
    return BatchEntry(
        cert.public_bytes(serialization.Encoding.DER),
        update,
        10,
        new_private_key_signer(key)(hashlib.sha256(message).digest()),
    )


async def test_a_device_batch_with_a_forged_signature_and_a_nan_update_commits_the_others(
    fl, network
) -> None:
    names = [f"batchdev{i}" for i in range(4)]
    await open_task(fl, network, task_spec("batch"), workers={"transport": names})
    entries = [
        device_entry(network, "transport", names[0], "batch", delta(seed=50)),
        device_entry(network, "transport", names[1], "batch", delta(seed=51), signer_of=names[3]),
        device_entry(network, "transport", names[2], "batch", with_nan(delta(seed=52))),
        device_entry(network, "transport", names[3], "batch", delta(seed=53)),
    ]
    gateway = await fl("transport", "User1")  # the org's gateway identity, not a device

    outcome = json.loads(await gateway.submit("SubmitBatch", ["batch", "1", encode_batch(entries)]))

    ids = {
        name: worker_id("TransportMSP", network.identity("transport", name).cert.read_bytes())
        for name in names
    }
    await network.wait_synced()
    contract = await fl("health", "User1")
    [batch] = json.loads(await contract.evaluate("GetBatches", ["batch", "1"]))
    refused = {r["worker"]: r for r in batch["refused"]}
    assert sorted(refused) == sorted([ids[names[1]], ids[names[2]]])
    assert refused[ids[names[1]]]["check"] == "signature"
    assert "CN=batchdev1" in refused[ids[names[1]]]["reason"]
    assert refused[ids[names[2]]]["check"] == "non-finite"
    assert "tensor 'w' holds NaN" in refused[ids[names[2]]]["reason"]
    assert batch["accepted"] == outcome["accepted"] == [ids[names[0]], ids[names[3]]]
    assert sorted(await round_workers(fl, "batch")) == sorted([ids[names[0]], ids[names[3]]])
    page = json.loads(await contract.evaluate("GetRoundUpdates", ["batch", "1"]))
    assert {u["subject"] for u in page["updates"]} == {
        subject(network, "transport", names[0]),
        subject(network, "transport", names[3]),
    }


async def test_an_org_cannot_submit_another_orgs_devices(fl, network) -> None:
    await open_task(fl, network, task_spec("batch-org"), workers={"energy": ["batchdev-e"]})
    entry = device_entry(network, "energy", "batchdev-e", "batch-org", delta(seed=60))

    outcome = json.loads(
        await (await fl("transport", "User1")).submit(
            "SubmitBatch", ["batch-org", "1", encode_batch([entry])]
        )
    )

    [refused] = outcome["refused"]
    assert refused["check"] == "certificate" and refused["worker"] is None
    assert "was not issued by TransportMSP's CA" in refused["reason"]
    assert outcome["accepted"] == [] and await round_workers(fl, "batch-org") == []
