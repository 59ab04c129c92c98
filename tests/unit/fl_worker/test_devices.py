"""Device batches on the client: devices sign, their org's `OrgBatcher` submits in batches
(over `MemoryFL`, each org's contract validating on its own data as on Fabric)."""

from __future__ import annotations

import asyncio
from functools import partial

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.devices import BatchLimits, DeviceLedger, OrgBatcher, split_batches
from fedfabric.fl_worker.ledger import EntryRefused, MemoryFL
from fedfabric.gateway.signers import new_private_key_signer
from tests.fixtures import flval
from tests.fixtures.devices import OrgCA

LAYOUT = fl.Layout.from_json(flval.LAYOUT)
TRANSPORT = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.float32)  # Transport's coordinates
TASK = "t"


@pytest.fixture
async def world(tmp_path):
    """Three orgs validating on their own data, each knowing every org's CA; task `TASK`
    open at round 1 with six Transport devices registered."""
    cas = {msp: OrgCA(msp) for msp in flval.ORG_COORDINATES}
    for ca in cas.values():
        ca.write(tmp_path / "ca-certs")
    contracts = {}
    for msp in flval.ORG_COORDINATES:
        with np.load(flval.write_validation_data(tmp_path / f"{msp}.npz", msp)) as archive:
            validator = partial(flval.loss, data=dict(archive))
        settings = {"msp_id": msp, "ca_certs": str(tmp_path / "ca-certs")}
        contracts[msp] = fl.FLContract(settings, validator=validator)
    world = MemoryFL(contracts)
    spec = flval.memory_task(TASK)
    transport = cas["TransportMSP"]
    admin = world.ledger(transport.creator("admin", role="admin"))
    await admin.create_task(spec, fl.encode_model({"w": flval.TRUE_WEIGHTS}, LAYOUT))
    await admin.register_workers(TASK, [f"device{i}" for i in range(6)])
    devices = [transport.issue(f"device{i}") for i in range(6)]
    return world, world.ledger(transport.creator("gateway")), devices


def update(seed: int, bad_for: np.ndarray | None = None) -> bytes:
    values = np.random.default_rng(seed).normal(scale=1e-3, size=8).astype(np.float32)
    if bad_for is not None:
        values += 2 * bad_for
    return fl.encode_update({"w": values}, LAYOUT)


def device_ledgers(batcher: OrgBatcher, devices) -> list[DeviceLedger]:
    return [DeviceLedger(batcher, d.cert_pem, new_private_key_signer(d.key)) for d in devices]


async def test_devices_updates_go_in_batches_and_a_refused_one_hears_why(world) -> None:
    memory, gateway, devices = world
    batcher = OrgBatcher(gateway, devices=5, limits=BatchLimits(max_entries=2))
    ledgers = device_ledgers(batcher, devices[:5])
    blobs = [update(seed=i) for i in range(5)]
    blobs[3] = blobs[3][:-4] + b"\x00\x00\xc0\x7f"  # a NaN in its last value
    height = memory.height

    outcomes = await asyncio.gather(
        *(
            ledger.submit_update(TASK, 1, blob, 10)
            for ledger, blob in zip(ledgers, blobs, strict=True)
        ),
        return_exceptions=True,
    )

    assert memory.height - height == 3  # 5 entries, at most 2 a batch
    refused = outcomes[3]
    assert isinstance(refused, EntryRefused) and refused.refusal.check == "non-finite"
    assert refused.worker == ledgers[3].worker_id
    recorded = [o for i, o in enumerate(outcomes) if i != 3]
    assert [r["worker"] for r in recorded] == [ledgers[i].worker_id for i in (0, 1, 2, 4)]
    page = await gateway.round_updates(TASK, 1)
    assert sorted(u["worker"] for u in page["updates"]) == sorted(r["worker"] for r in recorded)


async def test_a_device_its_own_org_refuses_in_private_is_dropped_and_the_batch_goes_again(
    world,
) -> None:
    _, gateway, devices = world
    batcher = OrgBatcher(gateway, devices=3)
    ledgers = device_ledgers(batcher, devices[:3])
    blobs = [update(seed=10), update(seed=11, bad_for=TRANSPORT), update(seed=12)]

    outcomes = await asyncio.gather(
        *(
            ledger.submit_update(TASK, 1, blob, 10)
            for ledger, blob in zip(ledgers, blobs, strict=True)
        ),
        return_exceptions=True,
    )

    refused = outcomes[1]
    assert isinstance(refused, EntryRefused) and refused.refusal.check == "private-validation"
    assert refused.refusal.orgs == ("TransportMSP",)
    assert [o["worker"] for o in (outcomes[0], outcomes[2])] == [
        ledgers[0].worker_id,
        ledgers[2].worker_id,
    ]
    [batch] = await gateway.batches(TASK, 1)
    assert batch["accepted"] == [ledgers[0].worker_id, ledgers[2].worker_id]


async def test_a_device_submits_nothing_but_its_update(world) -> None:
    _, gateway, devices = world
    ledger = device_ledgers(OrgBatcher(gateway, devices=1), devices[:1])[0]

    with pytest.raises(TypeError, match="a device submits only its updates"):
        await ledger.advance_round(TASK, 1)
    assert ledger.channel == gateway.channel and ledger.msp_id == "TransportMSP"


def test_batches_are_split_by_bytes_and_entries() -> None:
    entry = fl.BatchEntry(b"c" * 100, b"u" * 886, 1, b"s" * 70)  # 1070 bytes each
    entries = [entry] * 7

    assert split_batches(entries, BatchLimits(max_entries=3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_batches(entries, BatchLimits(max_bytes=2500)) == [[0, 1], [2, 3], [4, 5], [6]]
    assert split_batches(entries, BatchLimits(max_bytes=500)) == [[i] for i in range(7)]
    assert BatchLimits.for_message_limit(8 * 1024 * 1024).max_bytes == 2 * 1024 * 1024
    assert BatchLimits.for_message_limit(99 * 1024 * 1024).max_bytes == 4 * 1024 * 1024
    with pytest.raises(ValueError, match="max_entries must be in 1..2000"):
        BatchLimits(max_entries=2001)
