"""Determinism: the same transactions give byte-identical responses and read/write sets,
in this process and in two fresh processes with different hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import fl_scenario
from fl_world import update

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


async def test_two_processes_compute_identical_transactions(identities, tmp_path):
    identity_file = tmp_path / "identities.json"
    identity_file.write_text(json.dumps({k: v.hex() for k, v in identities.items()}))

    here = await fl_scenario.run(identities)
    first = run_elsewhere(identity_file, "1")
    second = run_elsewhere(identity_file, "2")

    assert len(here) == 2 * (1 + 2 * (1 + 5 + 2) + 1)
    assert first == second == here


async def test_commit_aggregate_run_twice_gives_the_same_read_write_set(world):
    await world.start()
    for who, value in (("w1", 0.1), ("w2", 0.3), ("w3", -0.2)):
        await world.ok("SubmitUpdate", "digits", 1, update(value), 7, who=who)
    await world.ok("CloseRound", "digits", 1)

    one = await world.call("CommitAggregate", "digits", 1, commit=False)
    two = await world.call("CommitAggregate", "digits", 1, commit=False)

    assert one.status == 200 and one.rwset.writes
    assert (one.payload, one.event, one.rwset) == (two.payload, two.event, two.rwset)
