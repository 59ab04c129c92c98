"""`fedfabric serve`'s REST API and events over the in-memory ledger (`MemoryFL`), through
aiohttp's test client: every route, its errors and its access rules. The identities and
tokens are real (the default topology's crypto material, made here); the ledger is the real
FL contract in memory."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fedfabric.chaincode import fl
from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.ledger import MemoryFL
from fedfabric.fl_worker.service import Access, EventLog, Service, create_app
from fedfabric.network import _crypto, load_topology
from tests.fixtures.tokens import token

SPEC = {"arch": "mlp", "sizes": [4, 3]}
LAYOUT = fl.model_layout(SPEC)
ORGS = ("TransportMSP", "EnergyMSP", "HealthMSP")


@pytest.fixture(scope="module")
def crypto(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crypto")
    _crypto.generate(load_topology(), folder)
    return folder


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def task_spec(task_id: str, rounds: int = 3) -> dict[str, Any]:
    return {"id": task_id, "layout": {"tensors": [{"name": n, "shape": list(s)}
                                                  for n, s in LAYOUT.tensors]},
            "model": SPEC, "rounds": rounds, "min_updates": 1, "norm_bound": 100.0,
            "max_update_bytes": 100_000, "aggregation": {"rule": "fedavg", "params": {}},
            "allowed_orgs": list(ORGS)}  # fmt: skip


def zeros() -> bytes:
    return fl.encode_model({n: np.zeros(s, np.float32) for n, s in LAYOUT.tensors}, LAYOUT)


def delta(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    values = {n: rng.normal(scale=0.1, size=s).astype(np.float32) for n, s in LAYOUT.tensors}
    return fl.encode_update(values, LAYOUT)


class World:
    """Task "city" after round 1 (Transport and Energy committed, Health declined) with
    round 2 open (Transport committed)."""

    def __init__(self) -> None:
        self.fl = MemoryFL({m: fl.FLContract({"msp_id": m}) for m in ORGS})

    def admin(self, msp: str = "TransportMSP") -> Any:
        return self.fl.ledger(fake_identity(msp, role="admin", name="admin"))

    def worker(self, msp: str) -> Any:
        return self.fl.ledger(fake_identity(msp, name="worker1"))

    async def play(self) -> None:
        await self.admin().create_task(task_spec("city"), zeros())
        for msp in ORGS:
            await self.admin(msp).register_workers("city", [self.worker(msp).enrolment_id])
        await self.worker("TransportMSP").submit_update("city", 1, delta(1), 30)
        await self.worker("EnergyMSP").submit_update("city", 1, delta(2), 20)
        await self.worker("HealthMSP").decline_round("city", 1, "private-validation: too far")
        await self.admin().advance_round("city", 1)
        await self.worker("TransportMSP").submit_update("city", 2, delta(3), 30)


@pytest.fixture
async def api(crypto: Path, tmp_path: Path) -> AsyncIterator[tuple[TestClient, World, Service]]:
    world = World()
    await world.play()
    validation = tmp_path / "val.npz"
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    fl.write_validation_data(validation, x, (np.arange(40) % 3), SPEC)
    access = Access.from_roots_dir(_crypto.msp_roots_dir(crypto), "TransportMSP")
    service = Service(world.worker("TransportMSP"), writer=world.admin(), access=access,
                      log=EventLog(tmp_path / "events.jsonl"), validation=validation,
                      start_block=0)  # fmt: skip
    async with service:
        client = TestClient(TestServer(create_app(service)))
        await client.start_server()
        try:
            yield client, world, service
        finally:
            await client.close()


async def get(client: TestClient, path: str, t: str, status: int = 200) -> Any:
    response = await client.get(path, headers=bearer(t))
    assert response.status == status, await response.text()
    return await response.json() if response.content_type == "application/json" else response


async def test_every_read_route_answers_a_reader_of_another_org(api, crypto) -> None:
    client, _, _ = api
    reader = token(crypto, "energy", "reader")

    me = await get(client, "/api/v1/whoami", reader)
    assert (me["msp_id"], me["role"], me["via"]) == ("EnergyMSP", "reader", "token")
    assert me["service"]["org"] == "TransportMSP"
    (listed,) = (await get(client, "/api/v1/tasks", reader))["tasks"]
    assert (listed["id"], listed["round"], listed["status"]) == ("city", 2, "running")
    record = await get(client, "/api/v1/tasks/city", reader)
    assert record["spec"]["rounds"] == 3 and record["created_by"] == "TransportMSP"
    health = await get(client, "/api/v1/health", reader)
    assert health["status"] == "up" and health["height"] > 0

    rounds = await get(client, "/api/v1/tasks/city/rounds", reader)
    first, second = rounds["rounds"]
    assert (first["status"], first["committed"], first["refused"]) == ("aggregated", 2, 1)
    assert first["orgs"]["HealthMSP"] == {"committed": 0, "refused": 1, "excluded": 0}
    assert second["status"] == "open" and second["metrics"] is None
    assert first["metrics"] is None and rounds["metrics_for"] == "TransportMSP"  # Energy's reader
    own = await get(client, "/api/v1/tasks/city/rounds", token(crypto, "transport", "reader"))
    assert 0.0 <= own["rounds"][0]["metrics"]["accuracy"] <= 1.0
    assert own["rounds"][0]["metrics"]["loss"] > 0

    page = await get(client, "/api/v1/tasks/city/rounds/1", reader)
    states = {u["msp_id"]: (u["state"], u["reason"]) for u in page["updates"]}
    assert states["HealthMSP"] == ("refused", "private-validation: too far")
    assert states["EnergyMSP"] == ("used", None)

    contributions = await get(client, "/api/v1/tasks/city/contributions", reader)
    assert contributions["orgs"]["TransportMSP"]["updates"] == 2
    assert contributions["orgs"]["TransportMSP"]["samples"] == 60
    assert contributions["orgs"]["HealthMSP"]["refused"] == 1
    assert len(contributions["workers"]) == 3

    response = await get(client, "/api/v1/tasks/city/rounds/1/model", reader)
    body = await response.read()
    assert response.headers["X-Model-Digest"] == hashlib.sha256(body).hexdigest()
    assert fl.read_header(body)["content_digest"] == first["model_digest"]

    audit = await get(client, "/api/v1/tasks/city/rounds/1/audit", reader)
    assert audit["match"] is True and audit["committed_digest"] == first["model_digest"]
    assert sorted(audit["contributors"]) == ["EnergyMSP", "TransportMSP"]


async def test_no_response_holds_the_validation_data_or_where_it_is(api, crypto, tmp_path):
    client, _, _ = api
    with np.load(tmp_path / "val.npz") as data:
        # negative ones: no metric, digest or count could look like them
        values = [f"{v:.4f}" for v in data["x"].ravel()[:40] if v < 0]
    for t in (token(crypto, "transport", "admin"), token(crypto, "energy", "reader")):
        for path in ("/api/v1/tasks", "/api/v1/tasks/city", "/api/v1/tasks/city/rounds",
                     "/api/v1/tasks/city/rounds/1", "/api/v1/tasks/city/rounds/2",
                     "/api/v1/tasks/city/contributions", "/api/v1/tasks/city/rounds/1/audit",
                     "/api/v1/health", "/api/v1/whoami"):  # fmt: skip
            text = json.dumps(await get(client, path, t))
            assert str(tmp_path) not in text and "val.npz" not in text, path
            assert values and not any(v in text for v in values), path


async def test_the_metrics_are_the_rounds_model_on_the_orgs_own_data(api, tmp_path) -> None:
    client, world, service = api
    rounds = await service.views.rounds("city")
    model = fl.decode_update(await world.admin().global_model("city", 1), LAYOUT)
    with np.load(tmp_path / "val.npz") as data:
        loss, accuracy = fl.numpy_metrics(model, dict(data))
    assert rounds["rounds"][0]["metrics"] == {"loss": round(loss, 6),
                                              "accuracy": round(accuracy, 6)}  # fmt: skip


async def test_bad_requests_and_missing_things_are_named(api, crypto) -> None:
    client, _, _ = api
    reader = token(crypto, "transport", "reader")

    missing = await get(client, "/api/v1/tasks/nope/rounds", reader, 404)
    assert missing["error"] == "not-found" and "nope" in missing["reason"]
    beyond = await get(client, "/api/v1/tasks/city/rounds/9", reader, 404)
    assert "rounds 1 to 3" in beyond["reason"]
    bad = await get(client, "/api/v1/tasks/city/rounds/one", reader, 400)
    assert bad["reason"] == "round must be an integer, got 'one'"
    assert (await get(client, "/api/v1/events?after=-2", reader, 400))["error"] == "bad-request"


async def test_no_credentials_and_bad_tokens_are_401_with_the_reason(api, crypto) -> None:
    client, _, _ = api
    response = await client.get("/api/v1/tasks")
    assert response.status == 401
    assert "no credentials" in (await response.json())["reason"]

    in_the_query = await client.get(f"/api/v1/tasks?token={token(crypto, 'energy', 'reader')}")
    assert in_the_query.status == 401  # a query token is for the event stream only

    forged = token(crypto, "energy", "reader")[:-4] + "AAAA"
    assert (await get(client, "/api/v1/tasks", forged, 401))["error"] == "unauthorised"
    expired = token(crypto, "energy", "reader", ttl=10, age=200)  # past the 60 s skew
    assert "expired" in (await get(client, "/api/v1/tasks", expired, 401))["reason"]


async def test_writes_need_an_admin_of_this_org_then_the_contracts_checks(api, crypto) -> None:
    client, world, _ = api
    body = {"task": task_spec("lab", rounds=2), "initial_model": base64.b64encode(zeros()).decode()}

    for t in (token(crypto, "transport", "reader"), token(crypto, "energy", "admin")):
        response = await client.post("/api/v1/tasks", json=body, headers=bearer(t))
        assert response.status == 403
        assert "TransportMSP" in (await response.json())["reason"]

    admin = bearer(token(crypto, "transport", "admin"))
    created = await client.post("/api/v1/tasks", json=body, headers=admin)
    assert created.status == 201, await created.text()
    assert (await world.admin().task("lab")) is not None
    again = await client.post("/api/v1/tasks", json=body, headers=admin)
    assert again.status == 409, await again.text()  # the contract: the task exists

    for broken, field in (({"task": []}, "'task'"), ({"task": {}, "initial_model": "%%"},
                                                      "'initial_model'")):  # fmt: skip
        response = await client.post("/api/v1/tasks", json=broken, headers=admin)
        assert response.status == 400 and field in (await response.json())["reason"]

    advanced = await client.post("/api/v1/tasks/city/rounds/2/advance", headers=admin)
    assert advanced.status == 200, await advanced.text()
    assert (await advanced.json())["round"] == 2
    closed = await client.post("/api/v1/tasks/city/rounds/1/advance", headers=admin)
    assert await closed.json() == {
        "error": "round-state",
        "reason": "round-state: round 1 is aggregated, not open",
    }
    assert closed.status == 400


async def test_the_openapi_document_lists_every_route(api) -> None:
    client, _, _ = api
    page = await client.get("/")  # the dashboard: no credentials needed, no data in it
    assert page.status == 200 and page.content_type == "text/html"
    assert 'id="round-counter"' in await page.text()
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    response = await client.get("/api/v1/openapi.json")  # no credentials needed
    document = await response.json()
    assert document["openapi"].startswith("3.")
    operations = {(m.upper(), p) for p, ops in document["paths"].items() for m in ops}
    for route in client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        assert (route.method, path) in operations, (route.method, path)


async def test_events_resume_after_a_reconnect_exactly_once(api, crypto) -> None:
    client, world, service = api
    t = token(crypto, "health", "reader")

    async with client.ws_connect(f"/api/v1/events?token={t}&after=0") as ws:  # from the first
        first = [json.loads((await ws.receive(timeout=5)).data) for _ in range(3)]
    await world.worker("EnergyMSP").submit_update("city", 2, delta(4), 20)
    await world.admin().advance_round("city", 2)
    await logged(
        service, lambda m: m.get("name") == "AggregateCommitted" and m["payload"]["round"] == 2
    )
    async with client.ws_connect(f"/api/v1/events?token={t}&after={first[-1]['id']}") as ws:
        rest = []
        while not rest or rest[-1]["id"] < service.log.last_id:
            rest.append(json.loads((await ws.receive(timeout=5)).data))

    ids = [m["id"] for m in first + rest]
    assert ids == list(range(1, service.log.last_id + 1))
    names = [m["name"] for m in first + rest if m["kind"] == "chaincode"]
    assert names.count("AggregateCommitted") == 2 and "RoundDeclined" in names


async def test_events_need_credentials(api) -> None:
    client, _, _ = api
    response = await client.get("/api/v1/events")
    assert response.status == 401


async def test_events_without_after_start_from_now(api, crypto) -> None:
    client, world, service = api
    await logged(
        service, lambda m: m.get("name") == "UpdateSubmitted" and m["payload"]["round"] == 2
    )
    before = service.log.last_id
    async with client.ws_connect(f"/api/v1/events?token={token(crypto, 'energy', 'reader')}") as ws:
        await world.worker("EnergyMSP").submit_update("city", 2, delta(6), 20)
        message = json.loads((await ws.receive(timeout=5)).data)
    assert message["id"] == before + 1


async def test_a_restarted_service_keeps_the_ids_and_adds_no_repeats(api, crypto, tmp_path):
    _, world, service = api
    await world.worker("EnergyMSP").submit_update("city", 2, delta(5), 20)
    await logged(
        service,
        lambda m: (
            m.get("name") == "UpdateSubmitted"
            and m["payload"]["round"] == 2
            and m["payload"]["worker"].startswith("Energy")
        ),
    )
    before = list(service.log.messages)
    await service.close()

    access = Access.from_roots_dir(_crypto.msp_roots_dir(crypto), "TransportMSP")
    again = Service(world.worker("TransportMSP"), access=access,
                    log=EventLog(tmp_path / "events.jsonl"))  # fmt: skip
    async with again:
        await world.admin().advance_round("city", 2)
        await logged(
            again, lambda m: m.get("name") == "AggregateCommitted" and m["payload"]["round"] == 2
        )
        await logged(again, lambda m: m["kind"] == "block" and m["block"] == world.fl.height - 1)
    assert again.log.messages[: len(before)] == before
    keys = [(m["kind"], m["block"], m.get("tx_id")) for m in map(json.loads, again.log.messages)]
    assert len(keys) == len(set(keys)) and len(keys) > len(before)


async def logged(service: Service, wanted: Callable[[dict[str, Any]], bool]) -> None:
    """Wait (5 s at most) until `service`'s event log holds a message `wanted` accepts."""
    for _ in range(250):
        if any(wanted(json.loads(line)) for line in service.log.messages):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"not logged; the log: {service.log.messages}")


async def test_a_new_log_starts_at_the_channels_height_by_default(api, crypto, tmp_path) -> None:
    _, world, _ = api
    height = world.fl.height
    access = Access.from_roots_dir(_crypto.msp_roots_dir(crypto), "TransportMSP")
    fresh = Service(world.worker("TransportMSP"), access=access,
                    log=EventLog(tmp_path / "fresh.jsonl"))  # fmt: skip
    async with fresh:
        await world.worker("EnergyMSP").submit_update("city", 2, delta(7), 20)
        await logged(fresh, lambda m: m.get("name") == "UpdateSubmitted")
    first, *rest = map(json.loads, fresh.log.messages)
    assert first == {"id": 1, "kind": "start", "block": height}
    assert all(m["block"] >= height for m in rest)  # nothing from before it started


async def test_writes_and_event_streams_from_another_sites_page_are_refused(api, crypto):
    client, _, _ = api
    admin = bearer(token(crypto, "transport", "admin"))
    elsewhere = {**admin, "Origin": "https://evil.example"}
    response = await client.post("/api/v1/tasks/city/rounds/2/advance", headers=elsewhere)
    assert response.status == 403 and "another site" in (await response.json())["reason"]
    response = await client.get("/api/v1/events", headers=elsewhere)
    assert response.status == 403
    here = {**admin, "Origin": str(client.make_url("")).rstrip("/")}
    response = await client.post("/api/v1/tasks/city/rounds/2/advance", headers=here)
    assert response.status == 200, await response.text()
    reading = await client.get("/api/v1/tasks", headers=elsewhere)  # CORS keeps its answer
    assert reading.status == 200 and "Access-Control-Allow-Origin" not in reading.headers


async def test_a_client_that_stops_reading_is_closed_and_holds_no_one_back(
    api, crypto, monkeypatch
) -> None:
    """A subscriber that never reads fills its socket; after SEND_TIMEOUT the service closes
    it, while another subscriber got every message at once."""
    from fedfabric.fl_worker.service import _events
    from fedfabric.fl_worker.service._app import SOCKETS

    monkeypatch.setattr(_events, "SEND_TIMEOUT", 1.0)
    client, _, service = api
    t = token(crypto, "energy", "reader")
    start = service.log.last_id
    url = client.make_url(f"/api/v1/events?token={t}&after={start}")
    reader, writer = await asyncio.open_connection(url.host, url.port)  # a WebSocket by hand
    writer.write(
        f"GET {url.path_qs} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    assert b"101" in await reader.readline()  # then it reads nothing more
    async with client.ws_connect(f"/api/v1/events?token={t}&after={start}") as fast:
        for i in range(300):  # 300 x 64 KB: more than the socket buffers hold
            service.log.append({"kind": "block", "block": 10_000 + i, "pad": "x" * 65536})
        got = [json.loads((await fast.receive(timeout=10)).data)["block"] for _ in range(300)]
    assert got == list(range(10_000, 10_300))
    for _ in range(100):
        if not client.app[SOCKETS]:
            break
        await asyncio.sleep(0.1)
    served = len(client.app[SOCKETS])  # before the slow client goes away by itself
    writer.close()
    await writer.wait_closed()
    assert served == 0, "the client that stopped reading is still served"


async def test_an_asynchronous_task_is_listed_and_its_rounds_are_a_clear_409(api, crypto):
    client, world, _ = api
    spec = {**task_spec("fedbuff"), "mode": "async", "buffer_size": 2, "max_staleness": 2}
    await world.admin().create_task(spec, zeros())
    reader = token(crypto, "energy", "reader")
    listed = {t["id"]: t for t in (await get(client, "/api/v1/tasks", reader))["tasks"]}
    assert (listed["fedbuff"]["mode"], listed["fedbuff"]["status"]) == ("async", "asynchronous")
    for path in ("rounds", "rounds/1", "contributions"):
        refused = await get(client, f"/api/v1/tasks/fedbuff/{path}", reader, 409)
        assert refused["error"] == "asynchronous-task" and "model versions" in refused["reason"]
