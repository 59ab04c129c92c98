"""FL benchmark: what the ledger costs a federated run, and what robust rules buy.

1. ``ratio_round_time``: mean round wall time of `fedfabric run` on real Fabric (digits, MLP,
   3 orgs × 3 workers, FedAvg) ÷ the same run in memory without the ledger (same seed, same
   training, same fixed-point aggregation); ``round_s_ledger`` / ``round_s_memory`` raw;
   ``ratio_round_time_cnn`` the same for a small CNN trained 5 local epochs.
2. ``ratio_ledger_bytes``: update bytes on the ledger with int8 + zlib ÷ the same updates as raw
   float32; ``accuracy_loss_quantized``: final accuracy float32 − int8+zlib, in points.
3. ``round_s_10`` / ``round_s_100`` / ``round_s_1000``: wall time of one round (the second,
   steady state) in device mode with 3, 33 and 333 devices per org (9, 99 and 999 devices,
   each its own identity).
4. ``acc_<strategy>_<attack>_<fraction>``: final accuracy (10 rounds) for every strategy ×
   attack × malicious fraction (0, 0.2, 0.4), computed by the in-memory run, which applies
   the contract's content checks and the same aggregation code as the peers (not org-private
   validation; -1 when refusals left a round below the rule's minimum);
   ``acc_check_ledger_vs_memory`` re-runs one attacked cell on the ledger (1.0
   when both give the same accuracy).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

from fedfabric.fl_worker.attacks import malicious_count
from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import RoundIncompleteError
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.run import RunOptions, run_job
from fedfabric.network import FabricNetwork, parse_topology
from tests.conftest import release, topology_data

PORT_SHIFT = int(os.environ.get("FEDFABRIC_BENCH_PORT_SHIFT", "45000"))
STRATEGIES = ("fedavg", "median", "trimmed-mean", "krum", "multi-krum")
ATTACKS = ("sign_flip", "scaling", "gaussian", "label_flip", "alie", "nan")
FRACTIONS = (0.0, 0.2, 0.4)
WORKERS = 9
CNN = {"arch": "cnn", "input": [1, 8, 8], "channels": [8, 16], "classes": 10}
# These figures are measured as before the main job's defaults became an attacked, validated,
# non-IID run: IID data, every worker honest unless a cell says otherwise, no org validation.
PLAIN = {"alpha": None, "attack": None, "validation_threshold": None}


def config(**settings) -> RunConfig:
    return RunConfig(**{**PLAIN, **settings})


def _quiet(_: str) -> None:
    pass


def strategy_params(strategy: str, attack: str | None, fraction: float) -> dict:
    """Each rule tuned for the attackers it expects, as a user would configure it."""
    k = malicious_count(WORKERS, fraction)
    accepted = WORKERS - (k if attack == "nan" else k - min(k, 1) if attack == "alie" else 0)
    f = max(0, min(k, (accepted - 3) // 2))
    if strategy == "krum":
        return {"f": f}
    if strategy == "multi-krum":
        return {"f": f, "m": max(1, accepted - f)}
    if strategy == "trimmed-mean":
        return {"beta": max(0.1, min(fraction, 0.4))}
    return {}


def accuracy_table() -> dict[str, float]:
    results = {}
    for strategy in STRATEGIES:
        for fraction in FRACTIONS:
            for attack in ATTACKS if fraction else (None,):
                run = config(
                    strategy=strategy,
                    attack=attack,
                    malicious=fraction,
                    strategy_params=strategy_params(strategy, attack, fraction),
                )
                try:
                    acc = asyncio.run(run_in_memory(run)).final_accuracy
                except RoundIncompleteError:  # refusals left a round below the rule's minimum
                    acc = -1.0
                if attack is None:
                    for a in ATTACKS:
                        results[f"acc_{strategy}_{a}_0.0"] = round(acc, 4)
                else:
                    results[f"acc_{strategy}_{attack}_{fraction}"] = round(acc, 4)
    return results


async def ledger_measures(net: FabricNetwork, folder: Path) -> dict[str, float]:
    out: dict[str, float] = {}

    async def job(name: str, config: RunConfig, **options) -> object:
        return await run_job(
            config,
            RunOptions(
                task=f"bench-{name}-{int(time.time())}", report_dir=folder / name, **options
            ),
            net,
            say=_quiet,
        )

    plain = await job("plain", config(rounds=5))
    ledger_round = sum(r.seconds for r in plain.rounds[1:]) / (len(plain.rounds) - 1)
    memory_round = plain.baseline_seconds / len(plain.rounds)
    out.update(
        round_s_ledger=round(ledger_round, 3),
        round_s_memory=round(memory_round, 3),
        ratio_round_time=round(ledger_round / memory_round, 2),
    )
    cnn = await job("cnn", config(rounds=3, epochs=5, model=CNN))
    cnn_round = sum(r.seconds for r in cnn.rounds[1:]) / (len(cnn.rounds) - 1)
    cnn_memory = cnn.baseline_seconds / len(cnn.rounds)
    out.update(
        round_s_ledger_cnn=round(cnn_round, 3),
        round_s_memory_cnn=round(cnn_memory, 3),
        ratio_round_time_cnn=round(cnn_round / cnn_memory, 2),
    )
    f32 = await job("f32", config(rounds=10), baseline=False)
    q8 = await job(
        "int8", config(rounds=10, quantization="int8", compression="zlib"), baseline=False
    )
    out.update(
        ratio_ledger_bytes=round(q8.ledger.ledger_update_bytes / q8.ledger.raw_update_bytes, 3),
        accuracy_loss_quantized=round(100 * (f32.rounds[-1].accuracy - q8.rounds[-1].accuracy), 2),
        acc_float32=round(f32.rounds[-1].accuracy, 4),
        acc_int8_zlib=round(q8.rounds[-1].accuracy, 4),
    )
    for total, per_org in ((10, 3), (100, 33), (1000, 333)):
        report = await job(
            f"devices{total}",
            config(rounds=2, epochs=1),
            baseline=False,
            devices_per_org=per_org,
        )
        out[f"round_s_{total}"] = round(report.rounds[-1].seconds, 2)
    attacked = config(
        strategy="multi-krum",
        attack="sign_flip",
        malicious=0.2,
        strategy_params=strategy_params("multi-krum", "sign_flip", 0.2),
    )
    on_ledger = await job("check", attacked, baseline=False)
    async with Clients(net) as clients:
        admin, workers = await clients.creators(attacked)
    in_memory = await run_in_memory(attacked, admin=admin, workers=workers)
    out["acc_check_ledger_vs_memory"] = float(
        on_ledger.rounds[-1].accuracy == in_memory.final_accuracy
    )
    return out


async def measure(folder: Path) -> dict[str, float]:
    chaincodes = [
        {
            "name": "fl",
            "version": "1.0",
            "server": "python",
            "contract": "fedfabric.chaincode.fl:FLContract",
        }
    ]
    topology = parse_topology(topology_data(PORT_SHIFT, chaincodes=chaincodes))
    net = FabricNetwork(topology, folder / "state", release())
    try:
        await net.up()
        return await ledger_measures(net, folder)
    finally:
        await net.clean()


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-fl-") as tmp:
        results = asyncio.run(measure(Path(tmp)))
    t = time.perf_counter()
    results.update(accuracy_table())
    results["accuracy_table_s"] = round(time.perf_counter() - t, 1)
    return results
