"""The dashboard page (fl_worker/service/dashboard.html) in a real headless Chromium.

The page talks to a fake of the service's API: an aiohttp application on 127.0.0.1 that serves
the page at ``/``, canned JSON that each test sets up, and a WebSocket at ``/api/v1/events``
into which a test pushes events. It records the requests the page makes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import WSMsgType, web

from tests.service.browser import missing, open_browser, open_page

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

if missing() is None:
    from playwright.async_api import expect

DASHBOARD = Path(__file__).resolve().parents[2] / "fl_worker" / "service" / "dashboard.html"
ORGS = ("TransportMSP", "HealthMSP", "EnergyMSP")
WORKER_IDS = {
    "TransportMSP": "ab12cd34ef56ab12cd34",
    "HealthMSP": "3fa2b7c19d0e3fa2b7c1",
    "EnergyMSP": "77e01f2a5b6c77e01f2a",
}
Json = dict[str, Any]


def make_round(n: int, status: str = "aggregated", refused: int = 0, excluded: int = 0) -> Json:
    """A round summary as GET /tasks/{task}/rounds lists it: HealthMSP's update is the refused
    one, EnergyMSP's the excluded one."""
    orgs = {
        "TransportMSP": {"committed": 1, "refused": 0, "excluded": 0},
        "HealthMSP": {"committed": 1 - refused, "refused": refused, "excluded": 0},
        "EnergyMSP": {"committed": 1 - excluded, "refused": 0, "excluded": excluded},
    }
    done = status == "aggregated"
    return {
        "round": n,
        "status": status,
        "committed": sum(o["committed"] for o in orgs.values()),
        "refused": refused,
        "excluded": excluded,
        "orgs": orgs,
        "model_digest": f"{n:02x}" * 32 if done else None,
        "metrics": {"loss": round(1.2 / n, 4), "accuracy": round(0.55 + 0.08 * n, 4)}
        if done
        else None,
        "audit": ("mismatch" if n == 2 else "ok" if n == 1 else None) if done else None,
    }


HEALTHY: Json = {
    "status": "up",
    "channel": "smartcity",
    "height": 42,
    "raft_leader": "orderer0.ordering.smartcity.example",
    "nodes": [
        {"name": f"peer0.{org}.smartcity.example", "kind": "peer", "running": True, "height": 42}
        for org in ("transport", "health", "energy")
    ]
    + [
        {
            "name": f"orderer{i}.ordering.smartcity.example",
            "kind": "orderer",
            "running": i != 2,
            "height": 42 if i != 2 else None,
            "detail": "" if i != 2 else "process exited",
        }
        for i in range(3)
    ],
    "error": None,
}


@dataclass
class Seen:
    """A request the page made to the API."""

    path: str
    query: dict[str, str]
    authorization: str | None


class FakeApi:
    """The service's API with canned answers. ``url`` is set once it listens."""

    def __init__(self) -> None:
        self.url = ""
        self.token: str | None = None  # when set, the API wants `Bearer <token>`
        self.down = False  # when set, the task routes answer 503
        self.whoami: Json = {
            "msp_id": "TransportMSP",
            "role": "admin",
            "name": "admin@transport",
            "via": "certificate",
            "service": {"org": "TransportMSP", "channel": "smartcity"},
        }
        self.tasks: list[Json] = []
        self.rounds: dict[str, Json] = {}
        self.reasons = {
            "HealthMSP": "private-validation: loss 2.31 above the limit 1.5",
            "EnergyMSP": "norm-outlier: update norm 48.1 > 3 x median",
        }
        self.health: Json = HEALTHY
        self.health_status = 200
        self.model = b"model bytes of the global model"
        self.requests: list[Seen] = []
        self.socket_queries: list[dict[str, str]] = []
        self.sockets: list[web.WebSocketResponse] = []
        self.events: list[Json] = []

    def set_task(
        self,
        task: str = "digits-1",
        planned: int = 5,
        done: int = 1,
        refused_in: Iterable[int] = (),
        excluded_in: Iterable[int] = (),
    ) -> None:
        """Add or update a task whose first ``done`` rounds are aggregated."""
        refused, excluded = set(refused_in), set(excluded_in)
        entry = {
            "id": task,
            "created_by": "TransportMSP",
            "rounds": planned,
            "round": min(done + 1, planned),
            "status": "finished" if done >= planned else "running",
            "aggregation": "fedavg",
        }
        ids = [t["id"] for t in self.tasks]
        if task in ids:
            self.tasks[ids.index(task)] = entry
        else:
            self.tasks.append(entry)
        rounds = [
            make_round(n, refused=int(n in refused), excluded=int(n in excluded))
            for n in range(1, done + 1)
        ]
        if done < planned:
            rounds.append(make_round(done + 1, status="open"))
        self.rounds[task] = {"task": task, "rounds_planned": planned, "rounds": rounds}

    async def push(self, event: Json) -> None:
        """Number ``event`` as the service would and send it to every open WebSocket."""
        event = {"id": len(self.events) + 1, **event}
        self.events.append(event)
        for socket in list(self.sockets):
            await socket.send_str(json.dumps(event))

    async def drop_sockets(self) -> None:
        for socket in list(self.sockets):
            await socket.close()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._check])
        app.router.add_get("/", self._page)
        api = "/api/v1"
        app.router.add_get(f"{api}/whoami", self._whoami)
        app.router.add_get(f"{api}/tasks", self._tasks)
        app.router.add_get(f"{api}/tasks/{{task}}/rounds", self._rounds)
        app.router.add_get(f"{api}/tasks/{{task}}/rounds/{{n}}", self._round)
        app.router.add_get(f"{api}/tasks/{{task}}/rounds/{{n}}/model", self._model)
        app.router.add_get(f"{api}/tasks/{{task}}/contributions", self._contributions)
        app.router.add_get(f"{api}/health", self._health)
        app.router.add_get(f"{api}/events", self._events)
        return app

    @web.middleware
    async def _check(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/") or request.path.endswith("/events"):
            return await handler(request)
        auth = request.headers.get("Authorization")
        self.requests.append(Seen(request.path, dict(request.query), auth))
        if self.token is not None and auth != f"Bearer {self.token}":
            return error(401, "unauthenticated", "no client certificate and no valid token")
        if self.down and request.path.startswith("/api/v1/tasks"):
            # after health has answered, so the page must not let a later, vaguer 503 win
            await asyncio.sleep(0.3)
            return error(503, "unavailable", "the ledger does not answer")
        return await handler(request)

    async def _page(self, _: web.Request) -> web.StreamResponse:
        return web.Response(text=DASHBOARD.read_text(), content_type="text/html")

    async def _whoami(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.whoami)

    async def _tasks(self, _: web.Request) -> web.StreamResponse:
        return web.json_response({"tasks": self.tasks})

    def _task(self, request: web.Request) -> Json:
        task = request.match_info["task"]
        if task not in self.rounds:
            raise web.HTTPNotFound(text='{"error": "no-task"}', content_type="application/json")
        return self.rounds[task]

    async def _rounds(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._task(request))

    async def _round(self, request: web.Request) -> web.StreamResponse:
        summary = self._task(request)["rounds"][int(request.match_info["n"]) - 1]
        updates = []
        for org, counts in summary["orgs"].items():
            for kind in ("committed", "refused", "excluded"):
                for _ in range(counts[kind]):
                    done = kind == "committed" and summary["status"] == "aggregated"
                    updates.append(
                        {
                            "worker": f"{org}:{WORKER_IDS[org]}",
                            "msp_id": org,
                            "state": "used" if done else kind,
                            "reason": None if kind == "committed" else self.reasons[org],
                            "num_samples": 100,
                            "digest": None if kind == "refused" else "dd" * 32,
                            "tx_id": "ee" * 32,
                        }
                    )
        body = {"task": request.match_info["task"], "round": summary["round"]}
        return web.json_response(
            {**body, "status": summary["status"], "updates": updates, "aggregate": None}
        )

    async def _model(self, request: web.Request) -> web.StreamResponse:
        self._task(request)
        return web.Response(body=self.model, headers={"X-Model-Digest": "ab" * 32})

    async def _contributions(self, request: web.Request) -> web.StreamResponse:
        rounds = self._task(request)["rounds"]
        orgs: dict[str, Json] = {}
        for org in ORGS:
            counts = [r["orgs"][org] for r in rounds if r["status"] == "aggregated"]
            used = sum(c["committed"] for c in counts)
            refused = sum(c["refused"] for c in counts)
            excluded = sum(c["excluded"] for c in counts)
            orgs[org] = {
                "updates": used + refused + excluded,
                "used": used,
                "excluded": excluded,
                "refused": refused,
                "samples": 100 * (used + excluded),
            }
        workers = {f"{org}:{WORKER_IDS[org]}": {"msp_id": org, **orgs[org]} for org in ORGS}
        task = request.match_info["task"]
        return web.json_response({"task": task, "orgs": orgs, "workers": workers})

    async def _health(self, _: web.Request) -> web.StreamResponse:
        return web.json_response(self.health, status=self.health_status)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.socket_queries.append(query)
        if self.token is not None and query.get("token") != self.token:
            return error(401, "unauthenticated", "no valid token")
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        after = query.get("after")
        if after is not None:
            for event in self.events[int(after) :]:
                await socket.send_str(json.dumps(event))
        self.sockets.append(socket)
        try:
            async for message in socket:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            self.sockets.remove(socket)
        return socket


def error(status: int, code: str, reason: str) -> web.Response:
    return web.json_response({"error": code, "reason": reason}, status=status)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


async def screenshot(page: Page, path: Path) -> None:
    """A full-page PNG at ``path``, copied into $FEDFABRIC_SCREENSHOT_DIR when that is set."""
    await page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    keep = os.environ.get("FEDFABRIC_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with open_browser() as chromium:
        yield chromium


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    fake = FakeApi()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await fake.drop_sockets()
        await runner.cleanup()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A desktop-size page; it fails the test if the page's script throws."""
    errors: list[str] = []
    async with open_page(browser) as tab:
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
    assert errors == [], f"the page's script threw: {errors}"


def banner(page: Page) -> Any:
    return page.locator("#state-banner")


def accuracy_points(page: Page) -> Any:
    return page.locator('#accuracy-chart circle.point[data-series="accuracy"]')


async def test_no_task_yet(page: Page, api: FakeApi) -> None:
    await page.goto(api.url + "/")
    await expect(banner(page)).to_contain_text(re.compile("no task yet", re.I))
    await expect(banner(page)).to_have_attribute("data-state", "none")
    await expect(page.locator("#accuracy-chart")).to_contain_text("no metrics")
    await expect(page.locator("#round-counter")).not_to_contain_text("Round")
    await expect(page.locator("#org")).to_have_text("TransportMSP")
    await expect(page.locator("#channel")).to_have_text("smartcity")


@pytest.mark.parametrize("how", ["status-down", "http-503"])
async def test_network_down(page: Page, api: FakeApi, how: str) -> None:
    api.set_task()
    api.health = {**HEALTHY, "status": "down", "height": None, "error": "no orderer answers"}
    if how == "http-503":
        api.health_status = 503
        api.down = True
    await page.goto(api.url + "/")
    await expect(banner(page)).to_contain_text(re.compile("network down", re.I))
    await expect(banner(page)).to_have_attribute("data-state", "down")
    if how == "http-503":  # the page has shown the task routes' 503, which came after health's
        await expect(page.locator("#notice")).to_contain_text("tasks: the ledger does not answer")
    # well before the next health poll (5 s), so health's words must have held
    await expect(banner(page)).to_contain_text("no orderer answers", timeout=2000)


async def test_a_data_route_down_while_health_is_up(page: Page, api: FakeApi) -> None:
    api.set_task()
    api.down = True
    await page.goto(api.url + "/")
    await expect(banner(page)).to_have_attribute("data-state", "down")
    await expect(banner(page)).to_contain_text("the ledger does not answer")
    api.down = False  # no event comes: the next health poll (every 5 s) brings the data back
    await expect(banner(page)).to_have_attribute("data-state", "running", timeout=8000)
    await expect(page.locator("#round-counter")).to_have_text("Round 2 / 5")


async def test_asks_for_a_token_and_uses_it(page: Page, api: FakeApi) -> None:
    api.set_task(done=1)
    api.token = "abc"
    await page.goto(api.url + "/")
    await expect(banner(page)).to_have_attribute("data-state", "auth")
    await expect(banner(page)).to_contain_text(re.compile("token is needed", re.I))
    await expect(page.locator("#token-input")).to_be_visible()
    assert all(seen.authorization is None for seen in api.requests)

    await page.locator("#token-input").fill("abc")
    await page.locator("#token-form button").click()
    await expect(banner(page)).to_have_attribute("data-state", "running")
    await expect(page.locator("#round-counter")).to_have_text("Round 2 / 5")
    await expect(page.locator("#token-input")).to_be_hidden()
    assert any(s.path == "/api/v1/tasks" and s.authorization == "Bearer abc" for s in api.requests)
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open")
    assert api.socket_queries[-1].get("token") == "abc"


async def test_token_in_the_fragment(page: Page, api: FakeApi) -> None:
    api.set_task(done=1)
    api.token = "abc"
    await page.goto(api.url + "/?task=digits-1#token=abc")
    await expect(banner(page)).to_have_attribute("data-state", "running")
    assert await page.evaluate("location.hash") == ""
    assert await page.evaluate("location.search") == "?task=digits-1"
    assert await page.evaluate("sessionStorage.getItem('fedfabric.token')") == "abc"
    assert api.requests
    assert {seen.authorization for seen in api.requests} == {"Bearer abc"}
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open")
    assert [q.get("token") for q in api.socket_queries] == ["abc"]


async def test_live_round_and_chart(page: Page, api: FakeApi) -> None:
    api.set_task(done=1)
    api.set_task("digits-2", done=0)
    await page.goto(api.url + "/?task=digits-1")
    counter = page.locator("#round-counter")
    await expect(counter).to_have_text("Round 2 / 5")
    await expect(banner(page)).to_have_attribute("data-state", "running")
    await expect(accuracy_points(page)).to_have_count(1)
    await expect(page.locator('#accuracy-chart circle.point[data-series="loss"]')).to_have_count(1)
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open")

    api.set_task(done=2)
    payload = {"task": "digits-1", "round": 2}
    await api.push(
        {"kind": "chaincode", "block": 49, "name": "AggregateCommitted", "payload": payload}
    )
    await expect(counter).to_have_text("Round 3 / 5")
    await expect(accuracy_points(page)).to_have_count(2)
    rounds = await accuracy_points(page).evaluate_all("ps => ps.map(p => p.dataset.round)")
    assert rounds == ["1", "2"]
    await expect(page.locator("#last-event")).to_contain_text("AggregateCommitted")

    await api.push({"kind": "block", "block": 49, "transactions": 1, "valid": 1})
    await expect(page.locator("#channel-height")).to_have_text("50")

    # An event of another task changes nothing; the last round finishes the task.
    api.set_task(done=3)
    other = {"task": "digits-2", "round": 1}
    await api.push({"kind": "chaincode", "name": "UpdateSubmitted", "payload": other})
    await page.wait_for_timeout(400)
    await expect(counter).to_have_text("Round 3 / 5")
    api.set_task(done=5)
    await api.push({"kind": "chaincode", "name": "AggregateCommitted", "payload": payload})
    await expect(counter).to_have_text("Round 5 / 5")
    await expect(banner(page)).to_have_attribute("data-state", "finished")
    await expect(accuracy_points(page)).to_have_count(5)


async def test_reconnects_after_the_last_event(page: Page, api: FakeApi) -> None:
    api.set_task(done=1)
    await page.goto(api.url + "/")
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open")
    assert "after" not in api.socket_queries[0]
    for round_ in (1, 2):
        payload = {"task": "digits-1", "round": round_}
        await api.push({"kind": "chaincode", "name": "UpdateSubmitted", "payload": payload})
    await expect(page.locator("#last-event")).to_contain_text("round 2")

    await api.drop_sockets()
    await eventually(lambda: len(api.socket_queries) == 2, "the page reconnects")
    assert api.socket_queries[1].get("after") == "2"
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open again")
    api.set_task(done=2)
    payload = {"task": "digits-1", "round": 2}
    await api.push({"kind": "chaincode", "name": "AggregateCommitted", "payload": payload})
    await expect(page.locator("#round-counter")).to_have_text("Round 3 / 5")


async def test_refused_and_excluded_updates(page: Page, api: FakeApi) -> None:
    api.reasons["EnergyMSP"] = '<img src="x" onerror="window.owned = 1"> norm too large'
    api.set_task(done=3, refused_in=[2], excluded_in=[3])
    await page.goto(api.url + "/")
    items = page.locator("#refused-list li.item")
    await expect(items).to_have_count(2)
    refused = page.locator('#refused-list li[data-round="2"]')
    await expect(refused).to_contain_text("Round 2")
    await expect(refused).to_contain_text("HealthMSP")
    await expect(refused).to_contain_text("refused")
    await expect(refused).to_contain_text("private-validation: loss 2.31 above the limit 1.5")
    await expect(refused.locator("code")).to_have_text("HealthMSP:3fa2b7c1…")
    excluded = page.locator('#refused-list li[data-round="3"]')
    await expect(excluded).to_contain_text("EnergyMSP")
    await expect(excluded).to_contain_text('<img src="x"')  # shown as text, not as markup
    assert await page.locator("#refused-list img").count() == 0
    assert await page.evaluate("window.owned") is None
    details = {s.path for s in api.requests if re.fullmatch(r".*/rounds/\d+", s.path)}
    assert details == {"/api/v1/tasks/digits-1/rounds/2", "/api/v1/tasks/digits-1/rounds/3"}
    updates = page.locator('#updates-chart tr[data-round="2"][data-org="HealthMSP"] td')
    await expect(updates).to_have_text(["2", "HealthMSP", "", "0", "1", "0"])


async def test_task_selection(page: Page, api: FakeApi) -> None:
    api.set_task("digits-1", planned=5, done=2)
    api.set_task("digits-2", planned=3, done=0)
    await page.goto(api.url + "/")
    counter = page.locator("#round-counter")
    await expect(counter).to_have_text("Round 1 / 3")  # the last task listed
    await expect(page.locator("#task-select option")).to_have_count(2)
    await page.locator("#task-select").select_option("digits-1")
    await expect(counter).to_have_text("Round 3 / 5")
    assert await page.evaluate("location.search") == "?task=digits-1"
    await page.goto(api.url + "/?task=digits-1")
    await expect(counter).to_have_text("Round 3 / 5")
    await expect(page.locator("#task-select")).to_have_value("digits-1")


async def test_phone_width_has_no_horizontal_scroll(
    page: Page, api: FakeApi, tmp_path: Path
) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    api.reasons["HealthMSP"] = "private-validation:" + "x" * 120  # no place to break a line
    api.health = {**HEALTHY, "error": "peer0.health: " + "y" * 120}
    api.set_task("digits-" + "z" * 60, done=4, refused_in=[1, 3], excluded_in=[2])
    await page.goto(api.url + "/")
    await expect(accuracy_points(page)).to_have_count(4)
    await expect(page.locator("#refused-list li.item")).to_have_count(3)
    await expect(page.locator("#health")).to_contain_text("orderer2")
    await page.locator("#contributions summary").click()  # the widest table
    await expect(page.locator("#contributions details tbody tr")).to_have_count(3)
    width = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"horizontal scroll: {width}"
    boxes = [await page.locator(f"#{i}").bounding_box() for i in ("health", "contributions")]
    assert boxes[0] and boxes[1] and boxes[0]["x"] == boxes[1]["x"], "one column expected"
    await screenshot(page, tmp_path / "dashboard-phone.png")


async def test_health_audit_download_and_screenshot(
    page: Page, api: FakeApi, tmp_path: Path
) -> None:
    api.token = "abc"
    api.set_task(done=3, refused_in=[2], excluded_in=[3])
    await page.goto(api.url + "/#token=abc")
    health = page.locator("#health")
    await expect(health).to_contain_text("orderer0.ordering.smartcity.example")  # the leader
    await expect(page.locator('#health li[data-node^="orderer2"]')).to_contain_text("stopped")
    await expect(page.locator("#channel-height")).to_have_text("42")
    audit = page.locator("#audit")
    await expect(audit.locator('tr[data-round="1"]')).to_contain_text("ok")
    await expect(audit.locator('tr[data-round="2"]')).to_contain_text("mismatch")
    await expect(audit.locator('tr[data-round="4"]')).to_contain_text("not yet")
    await expect(audit.locator('tr[data-round="4"] a')).to_have_count(0)  # still open
    await expect(page.locator('#contributions [data-org="HealthMSP"]')).to_contain_text(
        "2 used of 3 updates"
    )

    async with page.expect_download() as waiting:
        await audit.locator('tr[data-round="2"] a').click()
    download = await waiting.value
    saved = tmp_path / "model.bin"
    await download.save_as(saved)
    assert saved.read_bytes() == api.model
    model = [s for s in api.requests if s.path.endswith("/rounds/2/model")]
    assert [s.authorization for s in model] == ["Bearer abc"]

    await expect(accuracy_points(page)).to_have_count(3)
    await screenshot(page, tmp_path / "dashboard.png")


async def test_a_steady_stream_of_events_does_not_hold_the_page_back(
    page: Page, api: FakeApi
) -> None:
    """Events every 50 ms for 1.5 s (a fast task's rounds): the page shows the rounds as they
    come, not only once the events stop."""
    api.set_task(done=0)
    await page.goto(api.url + "/?task=digits-1")
    await expect(page.locator("#round-counter")).to_have_text("Round 1 / 5")
    await eventually(lambda: len(api.sockets) == 1, "the page's WebSocket is open")
    seen = set()
    for i in range(30):
        api.set_task(done=min(4, i // 7))
        payload = {"task": "digits-1", "round": i // 7 + 1}
        await api.push({"kind": "chaincode", "name": "UpdateSubmitted", "payload": payload})
        seen.add(await page.text_content("#round-counter"))
        await asyncio.sleep(0.05)
    assert len(seen) >= 3, seen  # it advanced while the events kept coming


async def test_an_asynchronous_task_says_so(page: Page, api: FakeApi) -> None:
    api.set_task(done=0)
    api.tasks[-1] = {**api.tasks[-1], "mode": "async", "round": None, "status": "asynchronous"}
    await page.goto(api.url + "/")
    await expect(banner(page)).to_have_attribute("data-state", "asynchronous")
    await expect(page.locator("#round-counter")).to_have_text("–")
