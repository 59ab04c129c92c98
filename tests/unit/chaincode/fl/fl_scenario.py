"""An FL scenario per aggregation rule whose every transaction is fingerprinted (for the
determinism tests).

Run as ``python fl_scenario.py IDENTITIES.json``: prints one JSON list of SHA-256
fingerprints, one per transaction (status, message, payload, event, read/write set).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import numpy as np
from fl_world import LAYOUT, World, task_json

from fedfabric.chaincode.fl import encode_update

WORKERS = ("w1", "w1b", "w2", "w3", "outsider")
OPTIONS = (
    {"quantization": "float32"},
    {"quantization": "fp16"},
    {"quantization": "int8", "compression": "zlib"},
    {"quantization": "float32", "compression": "zlib"},
    {"quantization": "int8"},
)


def fingerprint(result) -> str:
    text = repr((result.status, result.message, result.payload, result.event, result.rwset))
    return hashlib.sha256(text.encode()).hexdigest()


# Parameters for every registered rule (a rule added without an entry here fails the test).
RULES = {
    "centered-clip": {"radius": 1.5},
    "fedavg": {},
    "median": {"clip_norm": 1.0},
    "trimmed-mean": {"beta": 0.2},
    "krum": {"f": 1},
    "multi-krum": {"f": 1, "m": 3, "clip_norm": 2.0},
}
# Krum needs 2f + 3 rows: five updates, but only four organisations here.
WEIGHTING = {"fedavg": "samples", "krum": "equal", "multi-krum": "samples"}


async def run(identities: dict[str, bytes]) -> list[str]:
    """One task per aggregation rule, two rounds each (AdvanceRound ends them), mixed
    encodings from five workers."""
    world = World(identities)
    rng = np.random.default_rng(7)
    prints = []
    for rule, params in RULES.items():
        task_id = f"t-{rule}"
        task = task_json(
            id=task_id,
            min_updates=5,
            aggregation={"rule": rule, "params": params},
            weighting=WEIGHTING.get(rule, "org"),
        )
        task["allowed_orgs"] = ["Org1MSP", "Org2MSP", "Org3MSP", "Org9MSP"]
        initial = {"w": rng.standard_normal((2, 2)), "b": rng.standard_normal(2)}
        prints.append(
            fingerprint(await world.ok("CreateTask", task, encode_update(initial, LAYOUT)))
        )
        await world.register(task_id, task["allowed_orgs"])
        for round_no in (1, 2):
            for who, options in zip(WORKERS, OPTIONS, strict=True):
                delta = {"w": rng.standard_normal((2, 2)), "b": rng.standard_normal(2)}
                data = encode_update(delta, LAYOUT, **options)
                samples = int(rng.integers(1, 1000))
                result = await world.ok("SubmitUpdate", task_id, round_no, data, samples, who=who)
                prints.append(fingerprint(result))
            prints.append(fingerprint(await world.ok("AdvanceRound", task_id, round_no)))
        prints.append(fingerprint(await world.ok("GetAudit", task_id, 1)))
    return prints


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        ids = {k: bytes.fromhex(v) for k, v in json.load(f).items()}
    print(json.dumps(asyncio.run(run(ids))))
