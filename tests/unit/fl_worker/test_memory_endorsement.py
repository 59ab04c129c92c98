"""`MemoryFL` with one contract per organisation endorses as `FLLedger` has the Fabric
gateway endorse under ``OutOf(2, 3 orgs)``: the submitter's own org with one other at a time,
the own org with a veto; a refusal by one other org is routed around; refusals by both
others end it, naming them; nothing is written then.

The same scenarios as tests/fabric/test_fl_contract.py, on the same validators
(`tests.fixtures.flval`: each org scores only its own coordinates of the model).
"""

from __future__ import annotations

import json
from functools import partial

import numpy as np
import pytest

from fedfabric.chaincode import Context, fl, submit
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.ledger import EndorseError, MemoryFL, refusal
from tests.fixtures import flval

LAYOUT = fl.Layout.from_json(flval.LAYOUT)
ENERGY = np.array([1, 1, 1, 0, 0, 0, 0, 0], dtype=np.float32)  # Energy's coordinates
HEALTH = np.array([0, 0, 0, 1, 1, 1, 0, 0], dtype=np.float32)
TRANSPORT = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.float32)
TASK = "t"


@pytest.fixture
async def world(tmp_path) -> MemoryFL:
    """Three orgs, each validating on its own data; task `TASK` open at round 1."""
    contracts = {}
    for msp in flval.ORG_COORDINATES:
        with np.load(flval.write_validation_data(tmp_path / f"{msp}.npz", msp)) as archive:
            data = dict(archive)
        validator = partial(flval.loss, data=data)
        contracts[msp] = fl.FLContract({"msp_id": msp}, validator=validator)
    world = MemoryFL(contracts)
    spec = flval.memory_task(TASK)
    admin = world.ledger(fake_identity("TransportMSP", role="admin", name="admin"))
    await admin.create_task(spec, fl.encode_model({"w": flval.TRUE_WEIGHTS}, LAYOUT))
    for msp in flval.ORG_COORDINATES:  # each org's admin registers its worker
        registrar = world.ledger(fake_identity(msp, role="admin", name="admin"))
        await registrar.register_workers(TASK, ["worker1"])
    return world


def update(bad_for: np.ndarray | None = None, seed: int = 0) -> bytes:
    """A small delta; plus 2 x `bad_for` (the coordinates of the orgs it should upset)."""
    values = np.random.default_rng(seed).normal(scale=1e-3, size=8).astype(np.float32)
    if bad_for is not None:
        values += 2 * bad_for
    return fl.encode_update({"w": values}, LAYOUT)


def worker(world: MemoryFL, msp: str):
    return world.ledger(fake_identity(msp, name="worker1"))


async def recorded(world: MemoryFL) -> list[str]:
    page = await worker(world, "TransportMSP").round_updates(TASK, 1)
    return [u["worker"] for u in page["updates"]]


async def test_a_good_update_is_endorsed_and_committed_once(world) -> None:
    before = world.height

    record = await worker(world, "EnergyMSP").submit_update(TASK, 1, update(), 10)

    assert await recorded(world) == [record["worker"]]
    assert world.height == before + 1


@pytest.mark.parametrize(
    ("submitter", "bad_for"),
    [("TransportMSP", ENERGY), ("EnergyMSP", TRANSPORT), ("HealthMSP", TRANSPORT)],
)
async def test_a_refusal_by_one_other_org_is_routed_around(world, submitter, bad_for) -> None:
    """The org asked second (in `contracts` order) refuses; the third endorses instead."""
    record = await worker(world, submitter).submit_update(TASK, 1, update(bad_for), 10)

    assert await recorded(world) == [record["worker"]]


async def test_refusals_by_both_other_orgs_name_them_and_nothing_is_written(world) -> None:
    state, height = dict(world.state.state), world.height

    with pytest.raises(EndorseError) as caught:
        await worker(world, "TransportMSP").submit_update(TASK, 1, update(ENERGY + HEALTH), 10)

    found = refusal(caught.value)
    assert (found.check, found.orgs) == ("private-validation", ("EnergyMSP", "HealthMSP"))
    assert "EnergyMSP refuses the update of TransportMSP:" in found.message
    assert "HealthMSP refuses the update of TransportMSP:" in found.message
    assert (world.state.state, world.height) == (state, height)
    assert await recorded(world) == []


async def test_the_submitters_own_org_has_a_veto(world) -> None:
    """Energy and Health would endorse; Transport's refusal ends it at the first set."""
    with pytest.raises(EndorseError) as caught:
        await worker(world, "TransportMSP").submit_update(TASK, 1, update(TRANSPORT), 10)

    found = refusal(caught.value)
    assert (found.check, found.orgs) == ("private-validation", ("TransportMSP",))
    assert "failed to collect enough transaction endorsements" in caught.value.grpc_message
    assert await recorded(world) == []


async def test_endorsers_that_answer_differently_do_not_count(world) -> None:
    """Fabric compares the endorsers' responses: a contract whose result differs is one
    endorsement short, exactly like a refusal."""

    class Divergent(fl.FLContract):
        name = "fl"

        @submit
        async def SubmitUpdate(  # noqa: N802 (the contract's name)
            self, ctx: Context, task: str, round_no: int, update: bytes, num_samples: int
        ) -> dict:
            record = await super().SubmitUpdate(ctx, task, round_no, update, num_samples)
            return {**record, "num_samples": record["num_samples"] + 1}

    world.contracts["EnergyMSP"] = Divergent({"msp_id": "EnergyMSP"})
    world.contracts["HealthMSP"] = Divergent({"msp_id": "HealthMSP"})

    with pytest.raises(EndorseError) as caught:
        await worker(world, "TransportMSP").submit_update(TASK, 1, update(), 10)

    assert [d.msp_id for d in caught.value.details] == ["EnergyMSP", "HealthMSP"]
    assert all("do not match" in d.message for d in caught.value.details)
    assert await recorded(world) == []


async def test_queries_are_answered_by_the_callers_own_org(world) -> None:
    task = await worker(world, "HealthMSP").task(TASK)

    assert task is not None and json.loads(json.dumps(task))["spec"]["id"] == TASK


@pytest.mark.parametrize(
    ("contracts", "endorsements", "message"),
    [
        ({}, None, "contracts must name at least one organisation"),
        ({"A": fl.FLContract()}, 2, "endorsements must be in 1..1 (the organisations), got 2"),
        ({"A": fl.FLContract()}, 0, "endorsements must be in 1..1"),
    ],
)
def test_a_policy_the_contracts_cannot_meet_is_refused(contracts, endorsements, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MemoryFL(contracts, endorsements=endorsements)
