"""Org-private validation: refuses bad updates, never changes the read/write set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fl_sample_validator import loss
from fl_world import World, assert_refused, task_json, update

from fedfabric.chaincode.fl import FLContract

TARGET = {"target_w": np.ones((2, 2), dtype=np.float32), "target_b": np.ones(2, np.float32)}
TASK = task_json(validation_threshold=0.5)


def validator(model) -> float:
    return loss(model, TARGET)


@pytest.fixture
def guarded(identities) -> World:
    return World(identities, FLContract({"msp_id": "Org2MSP"}, validator=validator))


async def test_an_update_that_helps_is_endorsed(guarded):
    await guarded.start(TASK)
    await guarded.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")


async def test_an_update_that_hurts_is_refused_naming_org_and_losses(guarded):
    await guarded.start(TASK)
    result = await guarded.call("SubmitUpdate", "digits", 1, update(-1.0), 10, who="w1")
    assert_refused(
        result,
        "private-validation",
        "Org2MSP refuses the update of Org1MSP:",
        "validation loss 4 exceeds baseline 1 + threshold 0.5",
    )


async def test_the_refusal_leaves_the_read_write_set_as_an_unguarded_peer_computes_it(
    identities, guarded
):
    plain = World(identities)
    for world in (plain, guarded):
        await world.start(TASK)
    endorsed = await plain.ok("SubmitUpdate", "digits", 1, update(-1.0), 10, who="w1")
    refused = await guarded.call("SubmitUpdate", "digits", 1, update(-1.0), 10, who="w1")
    assert refused.status >= 400
    assert refused.rwset == endorsed.rwset and refused.rwset.writes


async def test_without_a_task_threshold_the_validator_is_not_consulted(identities):
    def explode(model):
        raise AssertionError("validator called")

    world = World(identities, FLContract(validator=explode))
    await world.start(task_json())
    await world.ok("SubmitUpdate", "digits", 1, update(-1.0), 10, who="w1")


async def test_a_failing_validator_refuses(identities):
    def broken(model):
        raise KeyError("target_x")

    world = World(identities, FLContract(validator=broken))
    await world.start(TASK)
    result = await world.call("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    assert_refused(result, "private-validation", "this org: validator failed: KeyError")


async def test_the_baseline_loss_is_computed_once_per_round(identities):
    calls = []

    def counting(model):
        calls.append(1)
        return validator(model)

    world = World(identities, FLContract(validator=counting))
    await world.start(TASK)
    for who, value in (("w1", 0.5), ("w2", 0.25), ("w3", 0.75)):
        await world.ok("SubmitUpdate", "digits", 1, update(value), 10, who=who)
    assert len(calls) == 1 + 3


async def test_validator_from_settings(identities, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    np.savez(tmp_path / "val.npz", **TARGET)
    settings = {
        "validator": "fl_sample_validator:loss",
        "validation_data": str(tmp_path / "val.npz"),
    }
    world = World(identities, FLContract(settings))
    await world.start(TASK)
    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    result = await world.call("SubmitUpdate", "digits", 1, update(-1.0), 10, who="w2")
    assert_refused(result, "private-validation", "validation loss 4")


def test_half_configured_settings_are_an_error():
    with pytest.raises(ValueError, match="must be given together"):
        FLContract({"validator": "fl_sample_validator:loss"})


@pytest.mark.parametrize("limit", [1, 2])
async def test_concurrent_update_checks_are_bounded(identities, limit):
    import asyncio
    import threading
    import time

    running, peak, lock = [0], [0], threading.Lock()

    def slow(model) -> float:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        return validator(model)

    contract = FLContract({"max_concurrent_checks": str(limit)}, validator=slow)
    world = World(identities, contract)
    await world.start(TASK)

    results = await asyncio.gather(
        *(
            world.call("SubmitUpdate", "digits", 1, update(value), 10, who=who)
            for who, value in (("w1", 0.5), ("w1b", 0.25), ("w2", 0.75), ("w3", 0.625))
        )
    )

    assert [r.status for r in results] == [200] * 4
    assert peak[0] == limit


def test_a_bad_concurrency_setting_is_named():
    with pytest.raises(ValueError, match="max_concurrent_checks must be an integer >= 1"):
        FLContract({"max_concurrent_checks": "0"})


async def test_an_org_judges_its_own_workers_by_its_own_threshold(guarded):
    await guarded.start(task_json(validation_threshold=0.5, own_org_threshold=0.1))

    # Both raise the loss by about 0.45: within 0.5 for Org1's worker, over 0.1 for Org2's own.
    await guarded.ok("SubmitUpdate", "digits", 1, update(-0.2), 10, who="w1")
    result = await guarded.call("SubmitUpdate", "digits", 1, update(-0.21), 10, who="w2")

    assert_refused(
        result,
        "private-validation",
        "Org2MSP refuses the update of Org2MSP:",
        "+ threshold 0.1 (its own organisation's threshold)",
    )


async def test_an_own_org_threshold_needs_a_validation_threshold(world):
    result = await world.call("CreateTask", task_json(own_org_threshold=0.1), update(0.0))

    assert_refused(result, "task", "task field 'own_org_threshold'", "needs a validation_threshold")


async def test_a_folder_of_validation_data_holds_one_file_per_task(identities, tmp_path):
    np.savez(tmp_path / "digits.npz", **TARGET)
    settings = {"validator": "fl_sample_validator:loss", "validation_data": str(tmp_path)}
    world = World(identities, FLContract({"msp_id": "Org2MSP", **settings}))
    await world.start(TASK)
    await world.start(task_json(id="other", validation_threshold=0.5))

    await world.ok("SubmitUpdate", "digits", 1, update(0.5), 10, who="w1")
    result = await world.call("SubmitUpdate", "other", 1, update(0.25), 10, who="w1")

    assert_refused(result, "private-validation", "no validation data for task 'other'")
