"""Chaincode benchmark: the FL contract's SubmitUpdate checks and AdvanceRound, on the memory
stub (the contract's own work, no peer), plus one end-to-end submit on real Fabric.

Keys:
- validate_ms_10k / _100k / _1m: median time of ``SubmitUpdate`` (every check, float32 update,
  no private validator) for 10 k, 100 k and 1 M parameters.
- aggregate_ms_10_updates / _100_updates: median ``AdvanceRound`` (FedAvg, weighting by
  samples) over 10 or 100 committed updates of 100 k parameters; multikrum_ms_60_updates the
  same with Multi-Krum over 60 (100 would exceed the aggregation budget).
- aggregate_s_at_cap_<rule>_<weighting>: ``AdvanceRound`` over a full round at the largest
  ``max_workers_per_org`` a task of 100 k parameters and 3 orgs may have (the task refuses more),
  against ``aggregation_budget_s`` (`fedfabric.chaincode.fl.AGGREGATION_BUDGET_S`);
  ``cap_updates_<rule>_<weighting>`` is that round's size.
- endorse_bytes_per_param: peak Python memory of one ``SubmitUpdate`` of a 1 M-parameter update
  (tracemalloc) per parameter; the contract runs ``max_concurrent_checks`` (2) at once.
- fedavg_ms_9x1m / multikrum_ms_9x1m: the rules alone on 9 updates of 1 M parameters (the
  anchor: Flower's numpy FedAvg 22 ms, Multi-Krum 104 ms).
- ratio_ledger_bytes: bytes SubmitUpdate writes (keys and values) per update of 100 k
  parameters over their raw float32 size, with int8 encoding; ratio_ledger_bytes_float32 the
  same with float32.
- submit_ms_1m_real / submit_ms_100k_real: median submit-to-commit of SubmitUpdate through
  fedfabric.gateway on a 3-org network (skipped, -1, when Fabric is not installed).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fabric_protos.msp import identities_pb2

from fedfabric.chaincode.fl import (
    AGGREGATION_BUDGET_S,
    FLContract,
    Layout,
    TaskError,
    TaskSpec,
    Update,
    encode_model,
    encode_update,
    make_rule,
    worker_enrolment,
)
from fedfabric.chaincode.testing import MemoryLedger, fake_identity, invoke
from fedfabric.network import FabricNotInstalledError

PORT_SHIFT = 26000
ORGS = ("TransportMSP", "EnergyMSP", "HealthMSP")
ADMIN = fake_identity("TransportMSP", role="admin", name="admin")
ADMINS = {m: fake_identity(m, role="admin", name=f"admin-{m}") for m in ORGS}


def layout(params: int) -> Layout:
    return Layout.from_json({"tensors": [{"name": "w", "shape": [params]}]})


def spec(
    task: str,
    params: int,
    min_updates: int = 1,
    rule: str = "fedavg",
    weighting: str = "samples",
    per_org: int = 10,
    **extra,
) -> dict:
    return {
        "id": task,
        "layout": layout(params).to_json(),
        "rounds": 1,
        "min_updates": min_updates,
        "norm_bound": 1000.0,
        "max_update_bytes": 50_000_000,
        "aggregation": {"rule": rule, "params": extra},
        "weighting": weighting,
        "allowed_orgs": list(ORGS),
        "max_workers_per_org": per_org,
    }


async def register(contract: FLContract, ledger: MemoryLedger, task: str, workers) -> None:
    """Each org's admin registers that org's `workers` (``SerializedIdentity`` bytes)."""
    by_org: dict[str, list[str]] = {}
    for creator in workers:
        identity = identities_pb2.SerializedIdentity.FromString(creator)
        by_org.setdefault(identity.mspid, []).append(worker_enrolment(identity.id_bytes))
    for msp_id, ids in by_org.items():
        result = await invoke(
            contract, "RegisterWorkers", task, ids, ledger=ledger, creator=ADMINS[msp_id]
        )
        assert result.status == 200, result.message


def delta(params: int, seed: int, quantization: str = "float32") -> bytes:
    values = np.random.default_rng(seed).normal(scale=0.01, size=params).astype(np.float32)
    return encode_update({"w": values}, layout(params), quantization=quantization)


async def new_task(contract: FLContract, ledger: MemoryLedger, task: dict) -> None:
    params = task["layout"]["tensors"][0]["shape"][0]
    initial = encode_model({"w": np.zeros(params, np.float32)}, layout(params))
    result = await invoke(contract, "CreateTask", task, initial, ledger=ledger, creator=ADMIN)
    assert result.status == 200, result.message


async def validate_ms(params: int, repeat: int = 5) -> float:
    contract, ledger = FLContract(), MemoryLedger()
    await new_task(contract, ledger, spec("v", params))
    worker = fake_identity("EnergyMSP", role="client", name="worker")
    await register(contract, ledger, "v", [worker])
    times = []
    for seed in range(repeat):
        data = delta(params, seed)
        t0 = time.perf_counter()
        result = await invoke(
            contract, "SubmitUpdate", "v", 1, data, 10, ledger=ledger, creator=worker, commit=False
        )
        times.append((time.perf_counter() - t0) * 1000)
        assert result.status == 200, result.message
    return statistics.median(times)


async def filled_round(
    updates: int, params: int, rule: str = "fedavg", weighting: str = "samples", **extra
):
    contract, ledger = FLContract(), MemoryLedger()
    task = spec("a", params, updates, rule, weighting, per_org=max(1, -(-updates // 3)), **extra)
    await new_task(contract, ledger, task)
    workers = [fake_identity(ORGS[i % 3], role="client", name=f"worker{i}") for i in range(updates)]
    await register(contract, ledger, "a", workers)
    for i, who in enumerate(workers):
        result = await invoke(
            contract, "SubmitUpdate", "a", 1, delta(params, i), 1 + i, ledger=ledger, creator=who
        )
        assert result.status == 200, result.message
    return contract, ledger


async def aggregate_ms(
    updates: int,
    params: int = 100_000,
    repeat: int = 3,
    rule="fedavg",
    weighting: str = "samples",
    **extra,
) -> float:
    contract, ledger = await filled_round(updates, params, rule, weighting, **extra)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await invoke(
            contract, "AdvanceRound", "a", 1, ledger=ledger, creator=ADMIN, commit=False
        )
        times.append((time.perf_counter() - t0) * 1000)
        assert result.status == 200, result.message
    return statistics.median(times)


def rule_ms(rule: str, params: dict, n: int = 9, size: int = 1_000_000) -> float:
    rng = np.random.default_rng(0)
    model = {"w": rng.normal(size=size).astype(np.float32)}
    updates = [
        Update(f"u{i}", {"w": rng.normal(scale=0.01, size=size).astype(np.float32)}, 10 + i)
        for i in range(n)
    ]
    strategy = make_rule(rule, params)
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        strategy.aggregate(model, updates)
        times.append((time.perf_counter() - t0) * 1000)
    return min(times)


def round_cap(rule: str, weighting: str, params: int, **extra) -> int:
    """The most updates a round of a valid task (3 orgs, `params` parameters) can hold."""
    least = make_rule(rule, extra).min_updates
    low, high = 0, 1000
    while low < high:  # the largest max_workers_per_org the task accepts
        mid = (low + high + 1) // 2
        try:
            TaskSpec.from_json(spec("c", params, least, rule, weighting, per_org=mid, **extra))
            low = mid
        except TaskError:
            high = mid - 1
    return 3 * low


CAP_CASES = (
    ("fedavg", "org", {}),
    ("median", "org", {}),
    ("fedavg", "samples", {}),
    ("median", "samples", {}),
    ("trimmed-mean", "samples", {"beta": 0.2}),
    ("krum", "samples", {"f": 1}),
    ("multi-krum", "samples", {"f": 1, "m": 3}),
)


async def at_cap(params: int = 100_000) -> dict[str, float]:
    out: dict[str, float] = {"aggregation_budget_s": AGGREGATION_BUDGET_S}
    for rule, weighting, extra in CAP_CASES:
        n = round_cap(rule, weighting, params, **extra)
        seconds = await aggregate_ms(n, params, 1, rule, weighting, **extra) / 1000
        name = f"{rule.replace('-', '')}_{weighting}"
        out[f"aggregate_s_at_cap_{name}"] = seconds
        out[f"cap_updates_{name}"] = n
    return out


async def endorse_bytes_per_param(params: int = 1_000_000) -> float:
    import tracemalloc

    contract, ledger = FLContract(), MemoryLedger()
    await new_task(contract, ledger, spec("m", params))
    worker = fake_identity("EnergyMSP", role="client", name="worker")
    await register(contract, ledger, "m", [worker])
    data = delta(params, 1)
    tracemalloc.start()
    result = await invoke(
        contract, "SubmitUpdate", "m", 1, data, 10, ledger=ledger, creator=worker, commit=False
    )
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert result.status == 200, result.message
    return peak / params


async def ledger_ratio(quantization: str, params: int = 100_000) -> float:
    contract, ledger = FLContract(), MemoryLedger()
    await new_task(contract, ledger, spec("r", params))
    worker = fake_identity("EnergyMSP", role="client")
    await register(contract, ledger, "r", [worker])
    result = await invoke(
        contract,
        "SubmitUpdate",
        "r",
        1,
        delta(params, 0, quantization),
        10,
        ledger=ledger,
        creator=worker,
    )
    assert result.status == 200, result.message
    written = sum(len(k.encode()) + len(v or b"") for k, v in result.rwset.writes)
    return written / (4 * params)


async def real_submit_ms() -> dict[str, float]:
    from fedfabric.gateway import connect_profile
    from fedfabric.network import FabricNetwork, parse_topology
    from tests.conftest import release, topology_data

    chaincodes = [
        {
            "name": "fl",
            "version": "1.0",
            "server": "python",
            "contract": "fedfabric.chaincode.fl:FLContract",
        }
    ]
    topology = parse_topology(topology_data(PORT_SHIFT, chaincodes=chaincodes))
    fabric = release()
    try:
        fabric.check()
    except FabricNotInstalledError:
        return {"submit_ms_100k_real": -1.0, "submit_ms_1m_real": -1.0}
    results = {}
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-") as tmp:
        net = FabricNetwork(topology, Path(tmp) / "state", fabric)
        try:
            await net.up()
            await net.deploy(["fl"])
            async with connect_profile(net.profile("transport"), "Admin") as admin_gw:
                admin = admin_gw.get_network(topology.channel).get_contract("fl")
                for key, params in (
                    ("submit_ms_100k_real", 100_000),
                    ("submit_ms_1m_real", 1_000_000),
                ):
                    task = spec(f"e2e{params}", params)
                    initial = encode_model({"w": np.zeros(params, np.float32)}, layout(params))
                    # Each commit returns once every org's peer has it: the next
                    # transaction reads it wherever it is endorsed (issue 11, point 8).
                    await admin.submit(
                        "CreateTask", [json.dumps(task), initial], sync_orgs=list(ORGS)
                    )
                    users = ("User1", "User2", "User3")
                    ids = [
                        worker_enrolment(net.identity("transport", u).cert.read_bytes())
                        for u in users
                    ]
                    await admin.submit(
                        "RegisterWorkers", [task["id"], json.dumps(ids)], sync_orgs=list(ORGS)
                    )
                    times = []
                    for user in users:
                        async with connect_profile(net.profile("transport"), user) as gw:
                            contract = gw.get_network(topology.channel).get_contract("fl")
                            data = delta(params, len(times) + params)
                            t0 = time.perf_counter()
                            await contract.submit("SubmitUpdate", [task["id"], "1", data, "10"])
                            times.append((time.perf_counter() - t0) * 1000)
                    results[key] = statistics.median(times)
        finally:
            await net.clean()
    return results


async def measure() -> dict[str, float]:
    results = {
        "validate_ms_10k": await validate_ms(10_000),
        "validate_ms_100k": await validate_ms(100_000),
        "validate_ms_1m": await validate_ms(1_000_000),
        "aggregate_ms_10_updates": await aggregate_ms(10),
        "aggregate_ms_100_updates": await aggregate_ms(100),
        "multikrum_ms_60_updates": await aggregate_ms(60, rule="multi-krum", f=10, m=30),
        "fedavg_ms_9x1m": rule_ms("fedavg", {}),
        "multikrum_ms_9x1m": rule_ms("multi-krum", {"f": 2, "m": 5}),
        "ratio_ledger_bytes": await ledger_ratio("int8"),
        "ratio_ledger_bytes_float32": await ledger_ratio("float32"),
        "endorse_bytes_per_param": await endorse_bytes_per_param(),
        **await at_cap(),
    }
    if os.environ.get("FEDFABRIC_BENCH_SKIP_REAL") != "1":
        results.update(await real_submit_ms())
    return {k: round(v, 3) for k, v in results.items()}


def run() -> dict[str, float]:
    return asyncio.run(measure())
