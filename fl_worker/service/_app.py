"""The routes of `fedfabric serve` (aiohttp): the REST API, its OpenAPI description, the
live events and the dashboard.

Every route is declared once, in `ROUTES`, which both registers it and describes it in the
OpenAPI document (``GET /api/v1/openapi.json``). Every error is JSON ``{"error": <code>,
"reason": <text>}``: 400 bad input, 401 unknown caller, 403 not allowed, 404 no such task or
round; a refusal by the contract keeps the contract's status (400, 403, 404, 409), check name
and words; 503 the organisation's peer cannot be reached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from fedfabric.fl_worker.ledger import refusal
from fedfabric.fl_worker.service._access import AccessError, Caller
from fedfabric.fl_worker.service._events import close_all, stream
from fedfabric.fl_worker.service._views import NoRounds
from fedfabric.gateway import GatewayError

DASHBOARD = Path(__file__).with_name("dashboard.html")
SERVICE = web.AppKey("service", Any)
SOCKETS = web.AppKey("sockets", set)
CALLER = web.RequestKey("caller", Caller | None) if hasattr(web, "RequestKey") else "caller"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HTTPProblem(Exception):
    """An error answer: HTTP `status`, short `code`, human `reason`."""

    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason = status, code, reason


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    summary: str
    access: str  # "read" | "write" | "none"
    handler: Handler
    produces: str = "application/json"


def _service(request: web.Request) -> Any:
    return request.app[SERVICE]


def _caller(request: web.Request, access: str) -> Caller | None:
    """The caller, allowed `access`. A token in the query is taken on the event stream only
    (a browser cannot give a WebSocket a header); elsewhere it would end up in logs."""
    if access == "none":
        return None
    service = _service(request)
    ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
    cert = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    query_token = request.query.get("token") if request.path == EVENTS else None
    caller = service.access.from_request_parts(
        cert, request.headers.get("Authorization"), query_token
    )
    if access == "write":
        service.access.require_write(caller)
    else:
        service.access.require_read(caller)
    return caller


def _same_origin(request: web.Request, access: str) -> None:
    """Refuse a write or an event stream a page of another site started: a browser sends a
    client certificate to any page's request, and neither a form's POST nor a WebSocket
    waits for a CORS check."""
    origin = request.headers.get("Origin")
    if origin is None or not (access == "write" or request.path == EVENTS):
        return
    if origin != f"{request.scheme}://{request.host}":
        raise HTTPProblem(403, "forbidden", f"a request from another site ({origin}) is refused")


def _int(request: web.Request, name: str, *, least: int = 0) -> int:
    text = request.match_info.get(name) or request.query.get(name, "")
    try:
        value = int(text)
    except ValueError:
        raise HTTPProblem(400, "bad-request", f"{name} must be an integer, got {text!r}") from None
    if value < least:
        raise HTTPProblem(400, "bad-request", f"{name} must be at least {least}, got {value}")
    return value


async def whoami(request: web.Request) -> web.StreamResponse:
    caller = request[CALLER]
    service = _service(request)
    return web.json_response(
        {
            "msp_id": caller.msp_id,
            "role": caller.role,
            "name": caller.name,
            "via": caller.via,
            "service": {"org": service.msp_id, "channel": service.channel},
        }
    )


async def tasks(request: web.Request) -> web.StreamResponse:
    return web.json_response({"tasks": await _service(request).views.tasks()})


async def task(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _service(request).views.task(request.match_info["task"]))


async def rounds(request: web.Request) -> web.StreamResponse:
    """The rounds; the metrics (this organisation's model scores on its own validation data)
    only for this organisation's identities: another organisation learns nothing of its data."""
    service = _service(request)
    found = await service.views.rounds(request.match_info["task"])
    if request[CALLER].msp_id != service.msp_id:
        found = {**found, "rounds": [{**r, "metrics": None} for r in found["rounds"]],
                 "metrics_for": service.msp_id}  # fmt: skip
    return web.json_response(found)


async def round_(request: web.Request) -> web.StreamResponse:
    views = _service(request).views
    return web.json_response(
        await views.round(request.match_info["task"], _int(request, "round", least=1))
    )


async def contributions(request: web.Request) -> web.StreamResponse:
    views = _service(request).views
    return web.json_response(await views.contributions(request.match_info["task"]))


async def model(request: web.Request) -> web.StreamResponse:
    task_id, round_no = request.match_info["task"], _int(request, "round")
    data = await _service(request).views.model(task_id, round_no)
    digest = hashlib.sha256(data).hexdigest()
    return web.Response(
        body=data,
        content_type="application/octet-stream",
        headers={
            "X-Model-Digest": digest,
            "Content-Disposition": f'attachment; filename="{task_id}-round{round_no}.bin"',
        },
    )


async def audit(request: web.Request) -> web.StreamResponse:
    views = _service(request).views
    return web.json_response(
        await views.audit(request.match_info["task"], _int(request, "round", least=1))
    )


async def health(request: web.Request) -> web.StreamResponse:
    return web.json_response(await _service(request).health())


async def create_task(request: web.Request) -> web.StreamResponse:
    try:
        body = await request.json()
    except ValueError:
        raise HTTPProblem(400, "bad-request", "the body must be JSON") from None
    spec, initial = (
        (body.get("task"), body.get("initial_model")) if isinstance(body, dict) else (None, None)
    )
    if not isinstance(spec, dict):
        raise HTTPProblem(400, "bad-request", "field 'task' must be the task's JSON object")
    if not isinstance(initial, str):
        raise HTTPProblem(400, "bad-request", "field 'initial_model' must be base64 text")
    try:
        raw = base64.b64decode(initial, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPProblem(400, "bad-request", "field 'initial_model' is not valid base64") from None
    record = await _service(request).writer().create_task(spec, raw)
    return web.json_response(record, status=201)


async def advance(request: web.Request) -> web.StreamResponse:
    task_id, round_no = request.match_info["task"], _int(request, "round", least=1)
    return web.json_response(await _service(request).writer().advance_round(task_id, round_no))


async def events(request: web.Request) -> web.StreamResponse:
    log = _service(request).log
    after = _int(request, "after") if "after" in request.query else log.last_id  # live only
    return await stream(request, log, after, request.app[SOCKETS])


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(openapi_document())


async def dashboard(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(DASHBOARD, headers={"Cache-Control": "no-cache"})


T, R = "/api/v1/tasks/{task}", "/api/v1/tasks/{task}/rounds/{round}"
EVENTS = "/api/v1/events"
ROUTES = [
    Route("GET", "/", "the dashboard (a single page)", "none", dashboard, "text/html"),
    Route("GET", "/api/v1/openapi.json", "this API's OpenAPI description", "none", openapi),
    Route("GET", "/api/v1/whoami", "the caller as the service sees it", "read", whoami),
    Route(
        "GET", "/api/v1/health", "nodes, heights, Raft leader, chaincode servers", "read", health
    ),
    Route("GET", "/api/v1/tasks", "every task, with its open round", "read", tasks),
    Route(
        "POST", "/api/v1/tasks", "create a task (this organisation's admins)", "write", create_task
    ),
    Route("GET", T, "a task's record", "read", task),
    Route(
        "GET",
        T + "/rounds",
        "a task's rounds: counts per organisation, metrics, audit",
        "read",
        rounds,
    ),
    Route(
        "GET",
        T + "/contributions",
        "contributions per organisation and per worker",
        "read",
        contributions,
    ),
    Route(
        "GET", R, "a round's updates: committed, used, excluded or refused, and why", "read", round_
    ),
    Route(
        "GET",
        R + "/model",
        "the global model after the round (0: initial)",
        "read",
        model,
        "application/octet-stream",
    ),
    Route("GET", R + "/audit", "the round recomputed from the ledger", "read", audit),
    Route(
        "POST",
        R + "/advance",
        "aggregate the open round (this organisation's admins)",
        "write",
        advance,
    ),
    Route(
        "GET",
        EVENTS,
        "live events (WebSocket): ?after=ID from the one after ID (0: all), none: from now on",
        "read",
        events,
    ),
]


def openapi_document() -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        params = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "integer" if name == "round" else "string"}}
            for name in ("task", "round") if "{" + name + "}" in route.path
        ]  # fmt: skip
        if route.handler is events:
            params.append({"name": "after", "in": "query", "schema": {"type": "integer"}})
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.handler.__name__.rstrip("_"),
            "parameters": params,
            "responses": {"200": {"description": "OK", "content": {route.produces: {}}}},
        }
        if route.access != "none":
            operation["security"] = [{"mutualTLS": []}, {"token": []}]
            operation["responses"].update(
                {
                    "401": {"description": "unknown caller"},
                    "403": {"description": "not allowed"},
                    "503": {"description": "the organisation's peer cannot be reached"},
                }
            )
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "fedfabric serve", "version": "1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "mutualTLS": {"type": "mutualTLS",
                              "description": "a client certificate of a consortium MSP"},
                "token": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                          "description": "`fedfabric token issue`: an org admin's"},
            }
        },
    }  # fmt: skip


def _problem(exc: Exception) -> HTTPProblem | None:
    """The error answer for `exc`, or None when it is a bug (then: 500)."""
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, AccessError):
        return HTTPProblem(exc.status, "unauthorised" if exc.status == 401 else "forbidden",
                           exc.reason)  # fmt: skip
    if isinstance(exc, NoRounds):
        return HTTPProblem(409, "asynchronous-task", str(exc))
    if isinstance(exc, LookupError):
        return HTTPProblem(404, "not-found", str(exc).strip("'\""))
    if isinstance(exc, GatewayError):
        refused = refusal(exc)
        if refused.status:
            return HTTPProblem(refused.status, refused.check, refused.reason)
        if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return HTTPProblem(503, "network-down", f"the peer cannot be reached: {exc}")
        return HTTPProblem(502, "gateway", str(exc))
    return None


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        problem = _problem(exc)
        if problem is None:
            raise
        response = web.json_response(
            {"error": problem.code, "reason": problem.reason}, status=problem.status
        )
    if not isinstance(response, web.WebSocketResponse) and not response.prepared:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def create_app(service: Any) -> web.Application:
    """The aiohttp application of `service` (a `fedfabric.fl_worker.service.Service`)."""
    app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
    app[SERVICE] = service
    app[SOCKETS] = set()

    async def close_sockets(app: web.Application) -> None:
        await close_all(app[SOCKETS])

    app.on_shutdown.append(close_sockets)
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _checked(route))
    return app


def _checked(route: Route) -> Handler:
    """`route`'s handler, after the caller is known and allowed its access."""

    async def handler(request: web.Request) -> web.StreamResponse:
        _same_origin(request, route.access)
        request[CALLER] = _caller(request, route.access)
        return await route.handler(request)

    return handler


__all__ = ["ROUTES", "create_app", "openapi_document"]
