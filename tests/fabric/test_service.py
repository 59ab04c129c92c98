"""`fedfabric serve` against the real network during a short `fedfabric run --serve`: HTTPS
with mutual TLS (consortium client certificates), the REST routes over a task that runs,
and a WebSocket dropped mid-task and resumed: every round's events arrive exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.run import RunOptions, run_job
from fedfabric.network import FabricNetwork

ROUNDS = 3
TASK = "served"
# One worker per organisation; Health's poisons its updates, which its own server refuses.
CONFIG = RunConfig(rounds=ROUNDS, workers_per_org=1, epochs=1, attack="gaussian", malicious_org=3)
URL = re.compile(r"TransportMSP's service: (https://\S+)/#token=(\S+)")


@dataclass
class Served:
    """A `fedfabric run --serve` in the background: its service's address and token, what
    it said, and its report once the job is done (the service then runs on until `stop`)."""

    base: str
    token: str
    said: list[str]
    job: asyncio.Task[Any]
    done: asyncio.Event
    stop: asyncio.Event


@pytest.fixture(scope="module")
async def served(network: FabricNetwork, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[Served]:  # fmt: skip
    said: list[str] = []
    done, stop = asyncio.Event(), asyncio.Event()

    async def hold(_: Any) -> None:
        done.set()
        await stop.wait()

    options = RunOptions(task=TASK, baseline=False, serve=0, served=hold,
                         report_dir=tmp_path_factory.mktemp("served"))  # fmt: skip
    job = asyncio.ensure_future(run_job(CONFIG, options, network, say=said.append))
    for _ in range(600):
        found = next((m for m in map(URL.search, said) if m), None)
        if found or job.done():
            break
        await asyncio.sleep(0.1)
    assert found, f"no service address in {said} ({job})"
    run = Served(found[1], found[2], said, job, done, stop)
    try:
        yield run
    finally:
        stop.set()
        await asyncio.wait_for(job, 120)


def tls(network: FabricNetwork, org: str | None = "energy", user: str = "User1") -> ssl.SSLContext:
    """A client context trusting Transport's TLS CA, presenting `org`'s `user` certificate."""
    context = ssl.create_default_context(cafile=str(network.endpoint("transport").tls_root_cert))
    if org is not None:
        identity = network.identity(org, user)
        context.load_cert_chain(identity.cert, identity.key)
    return context


def session(context: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


async def read(ws: aiohttp.ClientWebSocketResponse, until: Any) -> list[dict[str, Any]]:
    """Messages of `ws` until one `until` accepts (that one included), 120 s at most."""
    messages = []
    while True:
        frame = await ws.receive(timeout=120)
        assert frame.type == aiohttp.WSMsgType.TEXT, frame
        messages.append(json.loads(frame.data))
        if until(messages[-1]):
            return messages


def aggregated(round_no: int) -> Any:
    def accepts(m: dict[str, Any]) -> bool:
        payload = m.get("payload", {})
        return m.get("name") == "AggregateCommitted" and (
            payload.get("task"),
            payload.get("round"),
        ) == (TASK, round_no)

    return accepts


async def test_events_dropped_mid_task_resume_with_every_rounds_events_once(
    served: Served, network: FabricNetwork
) -> None:
    async with session(tls(network)) as http:  # Energy's client certificate: mutual TLS
        async with http.ws_connect(served.base + "/api/v1/events?after=0") as ws:
            first = await read(ws, aggregated(1))
        async with http.ws_connect(f"{served.base}/api/v1/events?after={first[-1]['id']}") as ws:
            rest = await read(ws, aggregated(ROUNDS))

    messages = first + rest
    assert [m["id"] for m in messages] == list(range(1, len(messages) + 1))
    ours = [m for m in messages if m["kind"] == "chaincode" and m["payload"].get("task") == TASK]
    keys = [(m["block"], m["tx_id"]) for m in ours]
    assert len(keys) == len(set(keys))  # nothing twice
    for round_no in range(1, ROUNDS + 1):
        names = [m["name"] for m in ours if m["payload"].get("round") == round_no]
        assert names.count("AggregateCommitted") == 1, names
        assert names.count("UpdateSubmitted") == 2, names  # Transport's and Energy's
        assert names.count("RoundDeclined") == 1, names  # Health's refused worker
    blocks = [m["block"] for m in messages if m["kind"] == "block"]
    assert blocks == sorted(blocks) and len(blocks) == len(set(blocks))


async def test_the_routes_over_the_finished_task(served: Served, network: FabricNetwork) -> None:
    await asyncio.wait_for(served.done.wait(), 300)
    async with session(tls(network)) as http:

        async def get(path: str) -> Any:
            async with http.get(served.base + path) as response:
                assert response.status == 200, await response.text()
                if response.content_type == "application/json":
                    return await response.json()
                return response.headers["X-Model-Digest"], await response.read()

        me = await get("/api/v1/whoami")
        assert (me["msp_id"], me["role"], me["via"]) == ("EnergyMSP", "client", "certificate")
        listed = {t["id"]: t for t in (await get("/api/v1/tasks"))["tasks"]}
        assert (listed[TASK]["round"], listed[TASK]["status"]) == (ROUNDS, "finished")

        rounds = (await get(f"/api/v1/tasks/{TASK}/rounds"))["rounds"]
        assert [r["status"] for r in rounds] == ["aggregated"] * ROUNDS
        assert [(r["committed"], r["refused"]) for r in rounds] == [(2, 1)] * ROUNDS
        assert all(r["orgs"]["HealthMSP"]["refused"] == 1 for r in rounds)
        assert all(r["metrics"] is None for r in rounds)  # Transport's data: not for Energy

        page = await get(f"/api/v1/tasks/{TASK}/rounds/2")
        (refused,) = [u for u in page["updates"] if u["state"] == "refused"]
        assert refused["msp_id"] == "HealthMSP"
        assert refused["reason"].startswith("private-validation: ")
        assert "HealthMSP refuses the update of HealthMSP:" in refused["reason"]

        contributions = await get(f"/api/v1/tasks/{TASK}/contributions")
        assert contributions["orgs"]["HealthMSP"] == {"updates": 0, "used": 0, "excluded": 0,
                                                      "refused": ROUNDS, "samples": 0}  # fmt: skip
        assert contributions["orgs"]["EnergyMSP"]["used"] == ROUNDS

        digest, model = await get(f"/api/v1/tasks/{TASK}/rounds/{ROUNDS}/model")
        assert fl.read_header(model)["content_digest"] == rounds[-1]["model_digest"]
        audit = await get(f"/api/v1/tasks/{TASK}/rounds/{ROUNDS}/audit")
        assert audit["match"] is True and audit["recomputed_digest"] == rounds[-1]["model_digest"]

        async with session(tls(network, "transport")) as own:  # Transport's own User1
            async with own.get(f"{served.base}/api/v1/tasks/{TASK}/rounds") as response:
                scored = (await response.json())["rounds"]
        # Transport's own validation split scores each round's model: the model learns.
        assert all(0.0 <= r["metrics"]["accuracy"] <= 1.0 for r in scored), scored
        assert scored[-1]["metrics"]["accuracy"] > scored[0]["metrics"]["accuracy"]

        health = await get("/api/v1/health")
        assert health["status"] == "up" and health["raft_leader"], health
        kinds = {n["kind"] for n in health["nodes"] if n["running"]}
        assert kinds == {"orderer", "peer", "chaincode"}, health


async def test_writes_need_this_orgs_admin_certificate(served: Served, network: FabricNetwork):
    await asyncio.wait_for(served.done.wait(), 300)
    layout = {"tensors": [{"name": "w", "shape": [4]}], "dtype": "float32"}
    initial = fl.encode_model({"w": np.zeros(4, np.float32)}, fl.Layout.from_json(layout))
    spec = {"id": "from-the-service", "layout": layout, "rounds": 1, "min_updates": 1,
            "norm_bound": 10.0, "max_update_bytes": 10_000,
            "aggregation": {"rule": "fedavg", "params": {}},
            "allowed_orgs": ["TransportMSP", "EnergyMSP", "HealthMSP"]}  # fmt: skip
    body = {"task": spec, "initial_model": base64.b64encode(initial).decode()}

    async with session(tls(network, "energy", "Admin")) as http:
        async with http.post(served.base + "/api/v1/tasks", json=body) as response:
            assert response.status == 403
            assert "need a TransportMSP admin" in (await response.json())["reason"]
    async with session(tls(network, "transport", "Admin")) as http:
        async with http.post(served.base + "/api/v1/tasks", json=body) as response:
            assert response.status == 201, await response.text()
        url = f"{served.base}/api/v1/tasks/{TASK}/rounds/{ROUNDS}/advance"
        async with http.post(url) as response:  # the contract's check: it is aggregated
            assert response.status == 400
            assert (await response.json())["error"] == "round-state"


async def test_no_certificate_and_no_token_is_refused_and_a_token_is_enough(
    served: Served, network: FabricNetwork
) -> None:
    async with session(tls(network, None)) as http:
        async with http.get(served.base + "/api/v1/tasks") as response:
            assert response.status == 401
        headers = {"Authorization": f"Bearer {served.token}"}
        async with http.get(served.base + "/api/v1/whoami", headers=headers) as response:
            me = await response.json()
    assert (me["msp_id"], me["role"], me["via"]) == ("TransportMSP", "reader", "token")


def test_the_service_files_stay_in_the_organisations_private_directory(
    network: FabricNetwork,
) -> None:
    folder = network.private_dir("transport") / "serve"
    assert folder.stat().st_mode & 0o777 == 0o700 and (folder / "tls" / "server.key").is_file()
    assert (network.layout.root / "serve" / "transport" / "events.jsonl").stat().st_size > 0
