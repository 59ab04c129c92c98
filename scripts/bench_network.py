"""Network benchmark: `up` from nothing, `deploy` of the Node reference chaincode, one invoke;
then the same topology with the container backend.

Keys: up_s, deploy_s, invoke_ms (median submit→commit round trip through fedfabric.gateway,
20 sequential submits), invoke_p99_ms, and resume_up_s (`up` after `down`); up_s_containers
and deploy_s_containers (the FL contract's Python servers: no Node image is built here), with
the images built before the clock starts, and ratio_up_containers_vs_native (= up_s_containers
/ up_s, measured in the same run).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from fedfabric.gateway import connect_org
from fedfabric.network import FabricNetwork, parse_topology
from tests.conftest import NODE_KV, release, topology_data

PORT_SHIFT = 25000


async def measure(state: Path) -> dict[str, float]:
    chaincodes = [{"name": "kv", "version": "1.0", "server": "node", "path": str(NODE_KV)}]
    topology = parse_topology(topology_data(PORT_SHIFT, chaincodes=chaincodes))
    net = FabricNetwork(topology, state, release())
    try:
        t0 = time.perf_counter()
        await net.up()
        up_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await net.deploy(["kv"])
        deploy_s = time.perf_counter() - t0
        async with connect_org(net.layout.profiles_dir, "transport", "User1") as gateway:
            contract = gateway.get_network(topology.channel).get_contract("kv")
            await contract.submit("Put", ["warm-up", "x"])
            times = []
            for i in range(20):
                t0 = time.perf_counter()
                await contract.submit("Put", [f"k{i}", "v" * 1024])
                times.append((time.perf_counter() - t0) * 1000)
        await net.down()
        t0 = time.perf_counter()
        await net.up()
        resume_s = time.perf_counter() - t0
    finally:
        await net.clean()
    times.sort()
    return {
        "up_s": round(up_s, 2),
        "deploy_s": round(deploy_s, 2),
        "invoke_ms": round(statistics.median(times), 1),
        "invoke_p99_ms": round(times[-1], 1),
        "resume_up_s": round(resume_s, 2),
    }


async def measure_containers(state: Path) -> dict[str, float]:
    topology = parse_topology(topology_data(PORT_SHIFT))
    net = FabricNetwork(topology, state, release(), backend="containers")
    await net.install()  # builds the images the first time: not part of `up`
    try:
        t0 = time.perf_counter()
        await net.up()
        up_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await net.deploy(["fl"])
        deploy_s = time.perf_counter() - t0
    finally:
        await net.clean()
    return {"up_s_containers": round(up_s, 2), "deploy_s_containers": round(deploy_s, 2)}


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-") as tmp:
        native = asyncio.run(measure(Path(tmp) / "state"))
        containers = asyncio.run(measure_containers(Path(tmp) / "containers"))
    ratio = containers["up_s_containers"] / native["up_s"]
    return {**native, **containers, "ratio_up_containers_vs_native": round(ratio, 2)}
