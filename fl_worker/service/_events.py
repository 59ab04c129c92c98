"""The live events of `fedfabric serve`: one numbered log of what the channel committed,
followed from the ledger and streamed to any number of WebSocket clients.

`EventLog` holds the messages in the order the service received them, each with an id one
more than the last: a chaincode event of the FL contract (``kind: "chaincode"``: block,
transaction id, event name, payload) or a committed block (``kind: "block"``: number,
transactions, valid ones); its first message (``kind: "start"``) says from which block it
follows the channel. With a file, the log is also kept on disk (JSON lines), so ids
mean the same after the service restarts, and `follow` resumes each upstream stream right
after the last message it logged: chaincode events through the gateway's checkpointer,
blocks from the next number. A client that reconnects with ``after=<the last id it read>``
gets every later message exactly once (``after=0``: from the first; none: from now on).

Backpressure: every client reads the one shared log at its own pace; a message goes to a
client only when its socket took the previous one, so a slow client costs no memory but its
place in the log. One that takes nothing for `SEND_TIMEOUT` seconds is closed (code 1013,
"reconnect with after=<id>"), and resumes from there when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

from fedfabric.fl_worker.ledger import Ledger
from fedfabric.gateway import InMemoryCheckpointer

SEND_TIMEOUT = 30.0
BATCH = 256  # messages a client is sent between two looks at the log


class EventLog:
    """The numbered messages (ids from 1), in memory and, given `path`, on disk."""

    def __init__(self, path: Path | None = None) -> None:
        self.messages: list[str] = []  # message i has id i + 1, serialised once
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self._grown = asyncio.Event()
        self._file = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                self.messages = _complete_lines(path)
            self._file = path.open("a", encoding="utf-8")

    @property
    def last_id(self) -> int:
        return len(self.messages)

    def append(self, message: dict[str, Any]) -> int:
        """Log `message` (its ``id`` is set here), write it through, wake the readers."""
        message = {"id": self.last_id + 1, **message}
        line = json.dumps(message, separators=(",", ":"), sort_keys=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()
        self.messages.append(line)
        for listener in self.listeners:
            listener(message)
        self._grown.set()
        self._grown = asyncio.Event()
        return message["id"]

    def after(self, last_id: int, limit: int = BATCH) -> list[str]:
        """The messages after id `last_id` (at most `limit`)."""
        return self.messages[max(last_id, 0) : max(last_id, 0) + limit]

    async def wait_beyond(self, last_id: int) -> None:
        """Return once there is a message after id `last_id`."""
        while self.last_id <= last_id:
            await self._grown.wait()

    def last(self, kind: str) -> dict[str, Any] | None:
        """The last message of `kind` (``start``, ``chaincode`` or ``block``), None if none."""
        mark = f'"kind":"{kind}"'
        for line in reversed(self.messages):
            if mark in line and (message := json.loads(line))["kind"] == kind:
                return message
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _complete_lines(path: Path) -> list[str]:
    """The log file's whole lines; a last line cut short by a crash is dropped from it."""
    data = path.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    if len(whole) != len(data):
        with path.open("r+b") as f:
            f.truncate(len(whole))
            os.fsync(f.fileno())
    return [line for line in whole.decode().splitlines() if line]


async def follow(ledger: Ledger, log: EventLog, *, start_block: int | None = None) -> None:
    """Append the ledger's FL chaincode events and blocks to `log`, right after what `log`
    already holds; a new log starts at `start_block` (None: the channel's height now, so
    only what is committed from now on: the REST routes read the past), which it records
    first (``kind: "start"``). Runs until cancelled."""
    marker = log.last("start")
    if marker is None:
        start = await ledger.height() if start_block is None else start_block
        log.append({"kind": "start", "block": start})
    else:
        start = marker["block"]
    await asyncio.gather(_chaincode_events(ledger, log, start), _blocks(ledger, log, start))


async def _chaincode_events(ledger: Ledger, log: EventLog, start_block: int) -> None:
    checkpoint = InMemoryCheckpointer()
    last = log.last("chaincode")
    if last is not None:  # else: a checkpoint at its zero value, and `start_block` counts
        await checkpoint.checkpoint_transaction(last["block"], last["tx_id"])
    stream = ledger.events(start_block=start_block, checkpoint=checkpoint)
    async with stream:
        async for event in stream:
            try:
                payload = json.loads(event.payload)
            except ValueError:
                payload = {"raw": event.payload.hex()}
            log.append(
                {
                    "kind": "chaincode",
                    "block": event.block_number,
                    "tx_id": event.transaction_id,
                    "name": event.event_name,
                    "payload": payload,
                }
            )
            await checkpoint.checkpoint_chaincode_event(event)


async def _blocks(ledger: Ledger, log: EventLog, start_block: int) -> None:
    last = log.last("block")
    first = start_block if last is None else last["block"] + 1
    async for block in ledger.blocks(first):
        log.append(
            {
                "kind": "block",
                "block": block.number,
                "transactions": block.transactions,
                "valid": block.valid,
            }
        )


async def stream(
    request: web.Request, log: EventLog, after: int, sockets: set[web.WebSocketResponse]
) -> web.WebSocketResponse:
    """Send `log`'s messages after id `after` to the WebSocket of `request`, then each new
    one as it comes, until the client leaves (see the module doc for backpressure); the
    socket is in `sockets` meanwhile (`close_all` closes them when the service stops)."""
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    sockets.add(ws)
    reader = asyncio.ensure_future(ws.receive())  # a close from the client ends the stream
    sent = after
    try:
        while not ws.closed and not reader.done():
            batch = log.after(sent)
            if not batch:
                waiting = asyncio.ensure_future(log.wait_beyond(sent))
                await asyncio.wait({waiting, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                continue
            for line in batch:
                try:
                    await asyncio.wait_for(ws.send_str(line), SEND_TIMEOUT)
                except TimeoutError:
                    await ws.close(
                        code=WSCloseCode.TRY_AGAIN_LATER,
                        message=f"too slow: reconnect with after={sent}".encode(),
                    )
                    return ws
                sent += 1
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        sockets.discard(ws)
        reader.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def close_all(sockets: set[web.WebSocketResponse]) -> None:
    """Close every socket in `sockets`: the service is going away (code 1001)."""
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"the service stops") for ws in sockets),
        return_exceptions=True,
    )


__all__ = ["EventLog", "close_all", "follow", "stream"]
