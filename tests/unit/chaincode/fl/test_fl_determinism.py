"""Determinism: the same transactions give byte-identical responses and read/write sets,
in this process and in two fresh processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fl_scenario
import pytest
from fl_world import task_json, update

from fedfabric.chaincode.fl import rule_names

HERE = Path(__file__).parent


def run_elsewhere(identity_file: Path, hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONWARNINGS": "error"}
    done = subprocess.run(
        [sys.executable, str(HERE / "fl_scenario.py"), str(identity_file)],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_scenario_covers_every_aggregation_rule():
    assert set(fl_scenario.RULES) == set(rule_names())


async def test_two_processes_compute_identical_transactions(identities, tmp_path):
    identity_file = tmp_path / "identities.json"
    identity_file.write_text(json.dumps({k: v.hex() for k, v in identities.items()}))

    here = await fl_scenario.run(identities)
    first = run_elsewhere(identity_file, "1")
    second = run_elsewhere(identity_file, "2")

    assert len(here) == len(fl_scenario.RULES) * (1 + 2 * (5 + 1) + 1)
    assert first == second == here


@pytest.mark.parametrize("rule", sorted(fl_scenario.RULES))
async def test_advance_round_run_twice_gives_the_same_read_write_set(world, rule):
    params = fl_scenario.RULES[rule]
    await world.start(
        task_json(
            min_updates=5,
            aggregation={"rule": rule, "params": params},
            allowed_orgs=["Org1MSP", "Org2MSP", "Org3MSP", "Org9MSP"],
            weighting=fl_scenario.WEIGHTING.get(rule, "org"),
        )
    )
    for who, value in (("w1", 0.1), ("w1b", 0.2), ("w2", 0.3), ("w3", -0.2), ("outsider", 0)):
        await world.ok("SubmitUpdate", "digits", 1, update(value, bias=value / 2), 7, who=who)

    one = await world.call("AdvanceRound", "digits", 1, commit=False)
    two = await world.call("AdvanceRound", "digits", 1, commit=False)

    assert one.status == 200 and one.rwset.writes
    assert (one.payload, one.event, one.rwset) == (two.payload, two.event, two.rwset)
