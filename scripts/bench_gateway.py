"""Benchmark fedfabric.gateway against the official Node client on one real Fabric network.

Starts a private network (3 orgs, 3 Raft orderers, the Node ``kv`` chaincode) in a temporary
folder, then for 1, 16 and 128 submits in flight runs the same load through fedfabric's client
(in this process) and through ``@hyperledger/fabric-gateway`` (tests/fixtures/node-gateway,
a Node process): ``kv`` ``Put`` of 1 KB values, every submit waiting for its commit. Each client
runs four times per level, in the order A B B A B A A B (`ORDER`). The network's speed drifts
during a run, and not in a straight line: it warms up (the chaincode's JIT, the peers' caches)
and then slows (the ledger grows, LevelDB compacts). A B B A cancels only a straight drift, and
with the fastest runs in the middle it favoured B by 10-20% at 128 in flight; this order
cancels a curved one too. Returns and prints throughput and p50/p99 latency of both, and
ours/node ratios. Last, the 128-in-flight load through a gateway whose signer is ``async`` (it
awaits, then signs) against the sync signer, in the same order:
``ratio_tps_c128_async_signer`` is its throughput over the sync signer's; and our default
gateway (submits in waves under load) against one with ``submit_linger=0``:
``ratio_tps_c128_waves``. The network is torn down
(processes stopped, folder deleted) at the end, also on failure.

Environment (read here, the entry point): ``FEDFABRIC_FABRIC_HOME`` (Fabric binaries),
``FEDFABRIC_BENCH_PORT_SHIFT`` (default 35000: clear of a network on the default ports, of
``scripts/bench network``'s 25000 and of test sessions at 20000, 30000 or 40000; the ports of
one network span about 2400). ``scripts/bench gateway`` calls ``run()``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file by the `scripts/bench` dispatcher
    sys.path.insert(0, str(ROOT))

from fedfabric.gateway import (  # noqa: E402
    Contract,
    EndorseError,
    connect,
    connect_org,
    load_identity,
    load_private_key,
    signers,
)
from fedfabric.network import FabricNetwork, parse_topology  # noqa: E402
from tests.conftest import NODE_KV, release, topology_data  # noqa: E402

NODE_DRIVER = ROOT / "tests" / "fixtures" / "node-gateway"
ORG, USER, CHAINCODE = "transport", "User1", "kv"
VALUE = "x" * 1024
WARMUP = 10
# Submits per client and level, over its four runs: enough for a stable p99 at each level.
LOAD: dict[int, int] = {1: 80, 16: 960, 128: 4096}
# Who runs when, A and B (Thue-Morse): cancels a drift that is straight or curved (quadratic).
ORDER = (0, 1, 1, 0, 1, 0, 0, 1)


class Run(NamedTuple):
    """One client's run at one concurrency: wall time and every submit's latency."""

    elapsed_s: float
    latencies_ms: Sequence[float]

    @classmethod
    def joined(cls, runs: Sequence[Run]) -> Run:
        """Several runs as one: their times added, their latencies together."""
        return cls(sum(r.elapsed_s for r in runs), [ms for r in runs for ms in r.latencies_ms])

    @property
    def tps(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run() -> dict[str, float]:
    """Run the benchmark on a fresh network; return ``{metric_cC: value}`` and print a table."""
    shift = int(os.environ.get("FEDFABRIC_BENCH_PORT_SHIFT", "35000"))
    results = asyncio.run(_bench(shift))
    print(_table(results))
    return _metrics(results)


async def _bench(port_shift: int) -> dict[int, tuple[Run, Run]]:
    _ensure_node_driver()
    chaincodes = [{"name": CHAINCODE, "version": "1.0", "server": "node", "path": str(NODE_KV)}]
    topology = parse_topology(topology_data(port_shift, chaincodes=chaincodes))
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-") as state:
        network = FabricNetwork(topology, Path(state) / "network", release())
        try:
            _say("starting the network")
            await network.up()
            await network.deploy([CHAINCODE])
            return await _measure(network)
        finally:
            await network.clean()


async def _measure(network: FabricNetwork) -> dict[int, tuple[Run, Run]]:
    results: dict[int, tuple[Run, Run]] = {}
    profile = network.profile(ORG)
    async with connect_org(profile, ORG, USER) as gateway:
        contract = gateway.get_network(network.topology.channel).get_contract(CHAINCODE)
        await _wait_for_endorsers(contract)
        await _ours(contract, 1, WARMUP, "warmup")
        for index, (concurrency, count) in enumerate(LOAD.items()):
            # Who is A alternates by level (the module docstring says why the order).
            pair = ("ours", "node") if index % 2 == 0 else ("node", "ours")
            runs: dict[str, list[Run]] = {"ours": [], "node": []}
            each = count // (len(ORDER) // 2)
            for turn, who in enumerate(pair[i] for i in ORDER):
                _say(f"{who}: {each} submits, {concurrency} in flight")
                prefix = f"{who}-c{concurrency}-{turn}"
                if who == "ours":
                    runs[who].append(await _ours(contract, concurrency, each, prefix))
                else:
                    runs[who].append(
                        await _node(profile, network.topology.channel, concurrency, each, prefix)
                    )
            results[concurrency] = (Run.joined(runs["ours"]), Run.joined(runs["node"]))
        channel = network.topology.channel
        async with _async_signer_gateway(network) as awaiting:
            other = awaiting.get_network(channel).get_contract(CHAINCODE)
            results[ASYNC_SIGNER] = await _ours_against(other, contract, "signer")
        async with connect_org(profile, ORG, USER, submit_linger=0) as one_by_one:
            other = one_by_one.get_network(channel).get_contract(CHAINCODE)
            results[ONE_BY_ONE] = await _ours_against(contract, other, "waves")
    return results


ASYNC_SIGNER = -1  # the results key of the async-signer run (async, sync signer)
ONE_BY_ONE = -2  # the results key of the submit-waves run (waves, submit_linger=0)


async def _ours_against(a: Contract, b: Contract, label: str) -> tuple[Run, Run]:
    """Our client's 128-in-flight load through gateways `a` and `b`, in `ORDER`."""
    concurrency, count = max(LOAD), LOAD[max(LOAD)]
    runs: tuple[list[Run], list[Run]] = ([], [])
    each = count // (len(ORDER) // 2)
    for turn, which in enumerate(ORDER):
        _say(f"ours, {label} {'ab'[which]}: {each} submits, {concurrency} in flight")
        contract = (a, b)[which]
        runs[which].append(await _ours(contract, concurrency, each, f"{label}-{turn}"))
    return Run.joined(runs[0]), Run.joined(runs[1])


def _async_signer_gateway(network: FabricNetwork) -> Any:
    """Like `connect_org`, with a signer that awaits before it signs (as a remote one does)."""
    endpoint = network.endpoint(ORG)
    user = network.identity(ORG, USER)
    sign = signers.new_private_key_signer(load_private_key(user.key))

    async def async_sign(digest: bytes) -> bytes:
        await asyncio.sleep(0)
        return sign(digest)

    return connect(
        identity=load_identity(user.msp_id, user.cert),
        signer=async_sign,
        endpoint=endpoint.address,
        tls_root_cert=endpoint.tls_root_cert.read_bytes(),
        client_cert=user.tls_cert.read_bytes(),
        client_key=user.tls_key.read_bytes(),
        server_name_override=endpoint.server_name,
    )


async def _wait_for_endorsers(contract: Contract, timeout: float = 120.0) -> None:
    # Peers learn about each other through gossip, which can take ~30 s after start.
    deadline = time.monotonic() + timeout
    while True:
        try:
            await contract.new_proposal("Put", ["bench-ready", "1"]).endorse()
            return
        except EndorseError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def _ours(contract: Contract, concurrency: int, count: int, prefix: str) -> Run:
    latencies: list[float] = []
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < count:
            key = f"{prefix}-{issued}"
            issued += 1
            started = time.perf_counter()
            await contract.submit("Put", [key, VALUE])
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(time.perf_counter() - started, latencies)


async def _node(profile: Path, channel: str, concurrency: int, count: int, prefix: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DRIVER / "bench.js"),
        "--profile",
        str(profile),
        "--user",
        USER,
        "--channel",
        channel,
        "--chaincode",
        CHAINCODE,
        "--count",
        str(count),
        "--concurrency",
        str(concurrency),
        "--value-size",
        str(len(VALUE)),
        "--warmup",
        str(WARMUP),
        "--prefix",
        prefix,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"Node bench driver failed ({process.returncode}):\n{stderr.decode()}")
    result = json.loads(stdout)
    return Run(result["elapsed_s"], result["latencies_ms"])


def _ensure_node_driver() -> None:
    if (NODE_DRIVER / "node_modules" / "@hyperledger" / "fabric-gateway").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("the Node benchmark driver needs node and npm on PATH")
    _say("installing the Node driver's pinned packages (npm ci)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=NODE_DRIVER,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _metrics(results: dict[int, tuple[Run, Run]]) -> dict[str, float]:
    metrics: dict[str, float] = {}
    results = dict(results)
    async_run, sync_run = results.pop(ASYNC_SIGNER)
    waves, one_by_one = results.pop(ONE_BY_ONE)
    c = max(LOAD)
    metrics[f"tps_ours_c{c}_async_signer"] = round(async_run.tps, 2)
    metrics[f"ratio_tps_c{c}_async_signer"] = round(async_run.tps / sync_run.tps, 3)
    metrics[f"tps_ours_c{c}_no_waves"] = round(one_by_one.tps, 2)
    metrics[f"ratio_tps_c{c}_waves"] = round(waves.tps / one_by_one.tps, 3)
    for c, (ours, node) in results.items():
        metrics |= {
            f"tps_ours_c{c}": round(ours.tps, 2),
            f"tps_node_c{c}": round(node.tps, 2),
            f"ratio_tps_c{c}": round(ours.tps / node.tps, 3),
            f"p50_ms_ours_c{c}": round(ours.percentile_ms(0.50), 1),
            f"p50_ms_node_c{c}": round(node.percentile_ms(0.50), 1),
            f"p99_ms_ours_c{c}": round(ours.percentile_ms(0.99), 1),
            f"p99_ms_node_c{c}": round(node.percentile_ms(0.99), 1),
            f"ratio_p99_c{c}": round(ours.percentile_ms(0.99) / node.percentile_ms(0.99), 3),
        }
    return metrics


def _table(results: dict[int, tuple[Run, Run]]) -> str:
    lines = [
        "submit kv Put, 1 KB values, each waiting for its commit (ours = fedfabric.gateway, "
        "node = @hyperledger/fabric-gateway)",
        f"{'in flight':>9} | {'tx/s ours':>9} {'tx/s node':>9} {'ratio':>6} | "
        f"{'p50 ours':>8} {'p50 node':>8} | {'p99 ours':>8} {'p99 node':>8} {'ratio':>6}",
    ]
    for c, (ours, node) in results.items():
        if c == ASYNC_SIGNER:
            lines.append(
                f"async signer, {max(LOAD)} in flight: {ours.tps:.1f} tx/s, "
                f"{ours.tps / node.tps:.2f} of the sync signer's"
            )
            continue
        if c == ONE_BY_ONE:
            lines.append(
                f"submits in waves, {max(LOAD)} in flight: {ours.tps:.1f} tx/s, "
                f"{ours.tps / node.tps:.2f} of one by one (submit_linger=0, {node.tps:.1f})"
            )
            continue
        lines.append(
            f"{c:>9} | {ours.tps:>9.1f} {node.tps:>9.1f} {ours.tps / node.tps:>6.2f} | "
            f"{ours.percentile_ms(0.5):>8.0f} {node.percentile_ms(0.5):>8.0f} | "
            f"{ours.percentile_ms(0.99):>8.0f} {node.percentile_ms(0.99):>8.0f} "
            f"{ours.percentile_ms(0.99) / node.percentile_ms(0.99):>6.2f}"
        )
    return "\n".join(lines)


def _say(message: str) -> None:
    print(f"bench gateway: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    json.dump(run(), sys.stdout, indent=2)
    print()
