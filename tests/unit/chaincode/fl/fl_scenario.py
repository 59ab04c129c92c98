"""A two-round FL scenario whose every transaction is fingerprinted (for determinism tests).

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


async def run(identities: dict[str, bytes]) -> list[str]:
    """Two tasks (multi-krum with clipping; trimmed mean), two rounds each, mixed encodings."""
    world = World(identities)
    rng = np.random.default_rng(7)
    prints = []
    rules = [
        ("mk", {"rule": "multi-krum", "params": {"f": 1, "m": 3, "clip_norm": 2.0}}),
        ("tm", {"rule": "trimmed-mean", "params": {"beta": 0.2}}),
    ]
    for task_id, aggregation in rules:
        task = task_json(id=task_id, min_updates=5, aggregation=aggregation)
        task["allowed_orgs"] = ["Org1MSP", "Org2MSP", "Org3MSP", "Org9MSP"]
        initial = {"w": rng.standard_normal((2, 2)), "b": rng.standard_normal(2)}
        prints.append(
            fingerprint(await world.ok("CreateTask", task, encode_update(initial, LAYOUT)))
        )
        for round_no in (1, 2):
            prints.append(fingerprint(await world.ok("OpenRound", task_id, round_no)))
            for who, options in zip(WORKERS, OPTIONS, strict=True):
                delta = {"w": rng.standard_normal((2, 2)), "b": rng.standard_normal(2)}
                data = encode_update(delta, LAYOUT, **options)
                samples = int(rng.integers(1, 1000))
                result = await world.ok("SubmitUpdate", task_id, round_no, data, samples, who=who)
                prints.append(fingerprint(result))
            prints.append(fingerprint(await world.ok("CloseRound", task_id, round_no)))
            prints.append(fingerprint(await world.ok("CommitAggregate", task_id, round_no)))
        prints.append(fingerprint(await world.ok("GetAudit", task_id)))
    return prints


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        ids = {k: bytes.fromhex(v) for k, v in json.load(f).items()}
    print(json.dumps(asyncio.run(run(ids))))
