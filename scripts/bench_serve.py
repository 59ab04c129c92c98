"""Service benchmark: `fedfabric serve` (its own process) over a network on which a short FL
task ran (5 rounds, Health's worker refused each round).

Keys:
- req_per_s_rounds: GET /api/v1/tasks/T/rounds answered per second, 16 concurrent clients
  (keep-alive HTTPS, token auth), over 5 s after one warm-up request each;
- event_lag_ms_p50 / event_lag_ms_p99: from a transaction's commit (the moment its submitter's
  commit-status call returns) to a WebSocket client receiving the block's event, over 100
  sequential transactions (CreateTask of a tiny task each);
- ws_clients_1000_ok: 1 when 1 000 idle WebSocket subscribers, all connected at once, each
  receive the next transaction's event (60 s at most), else 0; ws_connect_1000_s: the time
  it took to connect them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import yaml

from fedfabric.chaincode import fl
from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.run import RunOptions, run_job
from fedfabric.network import FabricNetwork, parse_topology
from tests.conftest import release, topology_data

PORT_SHIFT = 10000
TASK = "bench-serve"
CLIENTS = 16
SECONDS = 5.0
LAG_TXS = 100
IDLE = 1000
LAYOUT = {"tensors": [{"name": "w", "shape": [2]}], "dtype": "float32"}
URL = re.compile(r"service: (https://\S+)/#token=(\S+)")


def tiny_task(task_id: str) -> tuple[dict[str, Any], bytes]:
    spec = {"id": task_id, "layout": LAYOUT, "rounds": 1, "min_updates": 1, "norm_bound": 1.0,
            "max_update_bytes": 1000, "aggregation": {"rule": "fedavg", "params": {}},
            "allowed_orgs": ["TransportMSP", "EnergyMSP", "HealthMSP"]}  # fmt: skip
    return spec, fl.encode_model({"w": np.zeros(2, np.float32)}, fl.Layout.from_json(LAYOUT))


async def serve(net: FabricNetwork, topology: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`fedfabric serve --org transport` in its own process; (process, base URL, token)."""
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("fedfabric")), "serve", "--org", "transport",
         "--port", "0", "--topology", str(topology), "--state-dir", str(net.layout.root)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.to_thread(process.stdout.readline)
    found = URL.search(line)
    if not found:
        process.kill()
        raise SystemExit(f"fedfabric serve did not start: {line}{process.stdout.read()}")
    return process, found[1], found[2]


async def requests_per_second(base: str, context: ssl.SSLContext, token: str) -> float:
    url = f"{base}/api/v1/tasks/{TASK}/rounds"
    headers = {"Authorization": f"Bearer {token}"}
    counts = [0] * CLIENTS

    async def client(i: int) -> None:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
            async with http.get(url, headers=headers) as r:  # warm-up
                assert r.status == 200, await r.text()
            await ready.wait()
            while time.perf_counter() < deadline:
                async with http.get(url, headers=headers) as r:
                    await r.read()
                    counts[i] += r.status == 200

    ready = asyncio.Event()
    deadline = float("inf")
    tasks = [asyncio.ensure_future(client(i)) for i in range(CLIENTS)]
    await asyncio.sleep(2.0)  # every client warmed up
    deadline = time.perf_counter() + SECONDS
    ready.set()
    await asyncio.gather(*tasks)
    return sum(counts) / SECONDS


async def drain(ws: aiohttp.ClientWebSocketResponse) -> int:
    """Read `ws` until it stays quiet for 1 s; the last id read (0: none)."""
    last = 0
    while True:
        try:
            frame = await ws.receive(timeout=1.0)
        except TimeoutError:
            return last
        last = json.loads(frame.data)["id"]


async def event_lags(net: FabricNetwork, base: str, context: ssl.SSLContext, token: str,
                     clients: Clients) -> tuple[list[float], int]:  # fmt: skip
    admin = clients.ledger("transport", net.identity("transport", "Admin"), sync=False)
    received: dict[int, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        async with http.ws_connect(f"{base}/api/v1/events?token={token}") as ws:
            last = await drain(ws)

            async def listen() -> None:
                async for frame in ws:
                    message = json.loads(frame.data)
                    if message["kind"] == "block":
                        received.setdefault(message["block"], time.perf_counter())

            listener = asyncio.ensure_future(listen())
            committed = []
            for i in range(LAG_TXS):
                spec, initial = tiny_task(f"lag-{i}")
                await admin.create_task(spec, initial)
                committed.append((int(admin.last_steps["block"]), time.perf_counter()))
            for _ in range(100):
                if all(b in received for b, _ in committed):
                    break
                await asyncio.sleep(0.1)
            listener.cancel()
    lags = [(received[b] - t) * 1000 for b, t in committed if b in received]
    assert len(lags) == LAG_TXS, f"{LAG_TXS - len(lags)} blocks never arrived"
    return lags, last


async def idle_clients(net: FabricNetwork, base: str, context: ssl.SSLContext, token: str,
                       clients: Clients) -> tuple[int, float]:  # fmt: skip
    admin = clients.ledger("transport", net.identity("transport", "Admin"), sync=False)
    connector = aiohttp.TCPConnector(ssl=context, limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.ws_connect(f"{base}/api/v1/events?token={token}&after=0") as probe:
            after = await drain(probe)  # the last id so far
        t0 = time.perf_counter()
        sockets = await asyncio.gather(
            *(http.ws_connect(f"{base}/api/v1/events?token={token}&after={after}")
              for _ in range(IDLE))
        )  # fmt: skip
        connect_s = time.perf_counter() - t0
        spec, initial = tiny_task("wake-up")
        await admin.create_task(spec, initial)
        block = int(admin.last_steps["block"])

        async def woken(ws: aiohttp.ClientWebSocketResponse) -> bool:
            while True:
                frame = await ws.receive(timeout=60)
                if frame.type != aiohttp.WSMsgType.TEXT:
                    return False
                if json.loads(frame.data)["block"] == block:
                    return True

        got = await asyncio.gather(*(woken(ws) for ws in sockets), return_exceptions=True)
        await asyncio.gather(*(ws.close() for ws in sockets))
    return int(all(g is True for g in got)), connect_s


async def measure(state: Path) -> dict[str, float]:
    data = topology_data(PORT_SHIFT)
    topology_file = state.parent / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(data))
    net = FabricNetwork(parse_topology(data), state, release())
    try:
        config = RunConfig(rounds=5, workers_per_org=1, epochs=1, malicious_org=3)
        await run_job(config, RunOptions(task=TASK, baseline=False, report_dir=state / "report"),
                      net, say=lambda line: print(f"  {line}", flush=True))  # fmt: skip
        process, base, token = await serve(net, topology_file)
        context = ssl.create_default_context(cafile=str(net.endpoint("transport").tls_root_cert))
        try:
            rps = await requests_per_second(base, context, token)
            async with Clients(net) as clients:
                lags, _ = await event_lags(net, base, context, token, clients)
                all_ok, connect_s = await idle_clients(net, base, context, token, clients)
        finally:
            process.terminate()
            process.wait(timeout=30)
    finally:
        await net.clean()
    lags.sort()
    return {
        "req_per_s_rounds": round(rps, 1),
        "event_lag_ms_p50": round(statistics.median(lags), 1),
        "event_lag_ms_p99": round(lags[int(0.99 * (len(lags) - 1))], 1),
        "ws_clients_1000_ok": all_ok,
        "ws_connect_1000_s": round(connect_s, 2),
    }


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="fedfabric-bench-serve-") as tmp:
        return asyncio.run(measure(Path(tmp) / "state"))
