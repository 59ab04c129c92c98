"""`fedfabric serve`: one organisation's HTTPS service for its operators and applications.

It reads the ledger through the organisation's gateway (its ``User1``), writes through its
admin (creating a task, advancing a round: the contract's own checks apply), and offers:

- a REST API with JSON and an OpenAPI description (`_app.ROUTES`);
- live events over a WebSocket, resumable with no event lost or repeated (`_events`);
- a single-page dashboard that needs nothing from the internet (``dashboard.html``).

Callers authenticate with a client certificate of a consortium organisation over mutual
TLS, or with a token an admin of one issued (`_access`). Reads need any consortium identity;
writes an admin of this organisation.

Example::

    service = Service(reader, writer=admin, access=access, log=EventLog(path))
    async with service:
        runner = await service.listen("127.0.0.1", 8480, ssl_context)
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from fedfabric.fl_worker.ledger import Ledger
from fedfabric.fl_worker.service._access import Access, AccessError, Caller, issue_token, revoke
from fedfabric.fl_worker.service._app import ROUTES, HTTPProblem, create_app, openapi_document
from fedfabric.fl_worker.service._events import EventLog, follow
from fedfabric.fl_worker.service._views import Views

Health = Callable[[], Awaitable[dict[str, Any]]]


class Service:
    """One organisation's service over `reader` (its ledger for reads) and `writer` (its
    admin's, for the write routes; None: they answer 403). `log` keeps the live events;
    `health` reports the nodes (default: the channel height only); `validation`: this
    organisation's validation data, for each round's metrics. A new event log starts at
    `start_block` (None: the channel's height when the service starts)."""

    def __init__(
        self,
        reader: Ledger,
        *,
        access: Access,
        log: EventLog,
        writer: Ledger | None = None,
        health: Health | None = None,
        validation: Path | None = None,
        channel: str = "",
        start_block: int | None = None,
    ) -> None:
        self.reader, self._writer, self.access, self.log = reader, writer, access, log
        self.msp_id = access.own_msp_id
        self.channel = channel or reader.channel
        self.views = Views(reader, validation)
        self.log.listeners.append(self.views.on_message)
        self._health = health
        self._start_block = start_block
        self._follower: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.follow_error: str | None = None  # why following the ledger last failed

    def writer(self) -> Ledger:
        if self._writer is None:
            raise HTTPProblem(403, "forbidden", f"this service of {self.msp_id} does not write")
        return self._writer

    async def health(self) -> dict[str, Any]:
        """The channel height on the organisation's peer and, given `health`, its nodes:
        status ``up``, ``degraded`` (a node is down) or ``down`` (the peer cannot answer);
        ``events_error``: why the live events stopped, while they are being started again."""
        report: dict[str, Any] = {"status": "up", "channel": self.channel, "height": None,
                                  "raft_leader": None, "nodes": [], "error": None,
                                  "events_error": self.follow_error}  # fmt: skip
        if self._health is not None:
            report.update(await self._health())
        try:
            report["height"] = await self.reader.height()
        except Exception as exc:  # the peer is down: say so, as the health of the network
            report.update(status="down", error=f"the peer cannot be reached: {exc}")
        return report

    async def start(self) -> None:
        """Start following the ledger's events."""
        self._follower = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        while True:  # a stream the gateway could not keep open: start it again
            try:
                await follow(self.reader, self.log, start_block=self._start_block)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.follow_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(1.0)

    async def listen(
        self, host: str, port: int, ssl_context: ssl.SSLContext | None = None
    ) -> web.AppRunner:
        """Serve the API on `host`:`port` (HTTPS with `ssl_context`); port 0: any free one
        (`port` gives it)."""
        self._runner = web.AppRunner(create_app(self), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ssl_context)
        await site.start()
        return self._runner

    @property
    def port(self) -> int:
        assert self._runner is not None and self._runner.addresses, "not listening"
        return int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._follower
        await self.views.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.log.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


__all__ = [
    "ROUTES",
    "Access",
    "AccessError",
    "Caller",
    "EventLog",
    "Service",
    "create_app",
    "issue_token",
    "openapi_document",
    "revoke",
]
