"""Asynchronous runs (mode async) over the in-memory contract: versions from buffers, free
and fixed arrival orders, resuming from the ledger, the audit, and the settings."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from fedfabric.chaincode import fl
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.async_rounds import AsyncCoordinator, coordinator_for
from fedfabric.fl_worker.audit import audit_task
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.fl_worker.federation import federation_workers, prepare
from fedfabric.fl_worker.inmemory import identities, run_in_memory
from fedfabric.fl_worker.ledger import MemoryFL
from fedfabric.fl_worker.run import ASYNC_SETTINGS, task_id
from fedfabric.fl_worker.worker import WorkerResources

CONFIG = RunConfig(
    rounds=5,
    workers_per_org=2,
    epochs=1,
    batch_size=32,
    seed=5,
    alpha=None,
    attack=None,
    validation_threshold=None,
    mode="async",
    async_order="fixed",
    buffer_size=4,
)


async def team(world: MemoryFL, config: RunConfig):
    """A coordinator and workers of `config` on `world` (a fresh process would build these)."""
    fed = prepare(config)
    admin, creators = identities(config)
    msp_ids = ["Org1MSP", "Org2MSP", "Org3MSP"]
    resources = WorkerResources()
    boss = coordinator_for(
        fed,
        world.ledger(admin),
        task="async",
        allowed_orgs=msp_ids,
        resources=resources,
        registrars=[world.ledger(fake_identity(m, role="admin", name="admin")) for m in msp_ids],
    )
    workers = federation_workers(fed, [world.ledger(c) for c in creators], resources=resources)
    await boss.create_or_load_task()
    return boss, workers


async def killed_after(world: MemoryFL, config: RunConfig, updates: int) -> None:
    """Run `config` on `world` and cancel it (kill -9: nothing saved) once `updates` updates
    are committed."""
    boss, workers = await team(world, config)
    job = asyncio.create_task(boss.run(workers))
    async with world.ledger(identities(config)[0]).events(start_block=0) as events:
        count = 0
        async for event in events:
            count += event.event_name == "UpdateSubmitted"
            if count == updates:
                break
    job.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await job


async def test_a_fixed_order_run_makes_every_version_from_k_updates_and_audits():
    world = MemoryFL()
    boss, workers = await team(world, CONFIG)

    outcomes = await boss.run(workers)

    assert isinstance(boss, AsyncCoordinator) and CONFIG.versions_buffer == 4
    assert [o.round for o in outcomes] == [1, 2, 3, 4, 5]
    assert all(len(o.aggregate["ids"]) == 4 for o in outcomes)
    assert outcomes[-1].accuracy > outcomes[0].accuracy
    # Round-robin from worker 1: buffer 1 is workers 1-4, buffer 2 workers 5, 6, 1, 2...
    names = [[o.name(i.rpartition("#")[0]) for i in o.aggregate["ids"]] for o in outcomes[:2]]
    assert names == [
        ["org1-worker1", "org1-worker2", "org2-worker1", "org2-worker2"],
        ["org3-worker1", "org3-worker2", "org1-worker1", "org1-worker2"],
    ]
    # Each worker trained while the others took their turns: stale by one version or two.
    staleness = [[s["staleness"] for s in o.aggregate["staleness"]] for o in outcomes]
    assert staleness[:3] == [[0, 0, 0, 0], [1, 1, 1, 1], [2, 1, 1, 1]]
    report = await audit_task(boss.ledger, "async")
    assert report.ok and len(report.rounds) == 5


@pytest.mark.parametrize("updates", [3, 4, 9])
async def test_killed_anywhere_and_resumed_gives_the_uninterrupted_final_model(updates):
    whole = await run_in_memory(CONFIG)
    world = MemoryFL()
    await killed_after(world, CONFIG, updates)
    boss, workers = await team(world, CONFIG)  # a new process: nothing but the ledger
    point = await boss.resume_point()

    outcomes = await boss.run(workers, start=point)

    # Every committed update is on the ledger: aggregated, or pending (maybe a full buffer).
    assert not point.done and 4 * point.aggregated + len(point.updates) == updates
    assert outcomes[-1].round == 5
    assert outcomes[-1].model == whole.final_model


async def test_free_workers_train_on_stale_versions_and_each_is_damped():
    config = CONFIG.replace(async_order="free", buffer_size=3, max_staleness=2)

    result = await run_in_memory(config)

    staleness = [s for r in result.rounds for s in r.aggregate["staleness"]]
    assert len(result.rounds) == 5 and len(staleness) == 15
    assert any(s["staleness"] > 0 for s in staleness)
    spec = fl.TaskSpec.from_json(task(config))
    for s in staleness:
        assert s["factor"] == fl.staleness_factor(spec, s["staleness"])


def task(config: RunConfig) -> dict:
    fed = prepare(config)
    return {
        **config.task_json("t", fed.layout, ["Org1MSP", "Org2MSP", "Org3MSP"]),
        "model": dict(fed.model_spec),
    }


# -- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"mode": "fedbuff"}, "mode", "must be one of ['sync', 'async']"),
        ({"async_order": "random"}, "async_order", "free or fixed"),
        ({"buffer_size": 7}, "buffer_size", "exceeds the 6 workers"),
        ({"buffer_size": 0}, "buffer_size", "integer >= 1"),
        ({"max_staleness": -1}, "max_staleness", "integer >= 0"),
        ({"staleness_exponent": 5}, "staleness_exponent", "[0, 4]"),
        (
            {"strategy": "median", "strategy_params": {"clip_norm": 1.0}, "buffer_size": 2},
            "buffer_size",
            None,
        ),
    ],
)
def test_bad_async_settings_are_named(change, field, words):
    if words is None:  # median over organisations needs one: any buffer will do
        RunConfig(**{**CONFIG.to_dict(), **change})
        return
    with pytest.raises(ConfigError) as caught:
        RunConfig(**{**CONFIG.to_dict(), **change})
    assert caught.value.field == field and words in str(caught.value)


def test_the_task_json_carries_the_async_settings_and_sync_ids_stay():
    spec = fl.TaskSpec.from_json(task(CONFIG.replace(staleness_exponent=0)))

    assert (spec.mode, spec.buffer_size, spec.max_staleness) == ("async", 4, 3)
    assert dict(spec.staleness) == {"rule": "constant"}
    sync = RunConfig()
    assert task_id(sync) == task_id(sync.replace(buffer_size=4, async_order="fixed"))
    assert task_id(sync) != task_id(sync.replace(mode="async"))
    assert set(ASYNC_SETTINGS) <= set(sync.to_dict())
    # The default buffer: half the workers, at least one more than an organisation has.
    assert RunConfig().versions_buffer == 5
    assert RunConfig(workers_per_org=5, orgs=2).versions_buffer == 6


def test_the_cli_sets_async_mode(tmp_path):
    import argparse

    from fedfabric.fl_worker._run_cli import add_parser
    from fedfabric.fl_worker.run import config_from_args

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["run", "--mode", "async", "--buffer-size", "4", "--max-staleness", "1"]
        + ["--async-order", "fixed", "--staleness-exponent", "1"]
    )

    config = config_from_args(args)

    assert (config.mode, config.buffer_size, config.max_staleness) == ("async", 4, 1)
    assert (config.async_order, config.staleness_exponent) == ("fixed", 1.0)
    assert json.loads(json.dumps(config.to_dict()))["mode"] == "async"
