"""The chaincode side of the peer ↔ chaincode stream (fabric-protocol.md §8).

One ``Session`` per ``Connect`` stream: it registers, waits for REGISTERED and READY, then runs
every INIT/TRANSACTION as its own task keyed by ``(channel_id, txid)``. A transaction's ledger
calls are requests on the same stream, answered by RESPONSE or ERROR; requests of one
transaction go one at a time (the peer allows one outstanding request per transaction).
The session only needs two coroutines, ``read`` and ``write``, so it imports no gRPC.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import (
    chaincode_event_pb2,
    chaincode_pb2,
    chaincode_shim_pb2,
    proposal_response_pb2,
)

from fedfabric.chaincode._errors import ChaincodeError
from fedfabric.chaincode._router import Router
from fedfabric.chaincode._stub import KeyModification, Stub

log = logging.getLogger("fedfabric.chaincode")

Msg: TypeAlias = chaincode_shim_pb2.ChaincodeMessage
ERROR_THRESHOLD = 500  # Go shim: an INIT answered with status >= 500 is sent as ERROR
_DEFAULT_BATCH = 100  # Go shim minimum for get-multiple-keys batches

Read = Callable[[], Awaitable[Msg | None]]
Write = Callable[[Msg], Awaitable[None]]


class ProtocolError(Exception):
    """The peer broke the handshake or sent a message the current state cannot take."""


class Session:
    """Serves one peer stream until it ends; see the module docstring."""

    def __init__(self, router: Router, chaincode_id: str, read: Read, write: Write) -> None:
        self._router = router
        self._chaincode_id = chaincode_id
        self._read = read
        self._write = write
        self._write_lock = asyncio.Lock()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._waiting: dict[tuple[str, str], asyncio.Future[Msg]] = {}
        self.use_get_multiple_keys = False
        self.max_get_multiple_keys = 0
        self.draining = False

    async def send(self, msg: Msg) -> None:
        """Write one message; gRPC allows one write at a time."""
        async with self._write_lock:
            await self._write(msg)

    async def run(self) -> None:
        """Handshake, then serve until the peer closes the stream (or on ``ProtocolError``)."""
        register = chaincode_pb2.ChaincodeID(name=self._chaincode_id)
        await self.send(Msg(type=Msg.REGISTER, payload=register.SerializeToString()))
        try:
            await self._expect(Msg.REGISTERED)
            ready = await self._expect(Msg.READY)
            self._configure(ready.payload)
            log.info("registered with peer as %s", self._chaincode_id)
            while (msg := await self._read()) is not None:
                await self._handle(msg)
        except ProtocolError as exc:
            log.error("chaincode stream: %s", exc)
            await self.send(Msg(type=Msg.ERROR, payload=str(exc).encode()))
        finally:
            await self._stop_transactions()

    async def request(self, stub: ShimStub, type_: int, payload: bytes) -> bytes:
        """Send a request for ``stub``'s transaction and return the RESPONSE payload."""
        key = (stub.channel_id, stub.tx_id)
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = future
        try:
            await self.send(
                Msg(type=type_, payload=payload, txid=stub.tx_id, channel_id=stub.channel_id)
            )
            answer = await future
        finally:
            self._waiting.pop(key, None)
        if answer.type == Msg.RESPONSE:
            return answer.payload
        if answer.type == Msg.ERROR:
            raise ChaincodeError(answer.payload.decode("utf-8", "replace"))
        raise ChaincodeError(
            f"[{stub.tx_id[:8]}] incorrect chaincode message "
            f"{Msg.Type.Name(answer.type)} received, expected RESPONSE or ERROR"
        )

    async def _expect(self, type_: int) -> Msg:
        while (msg := await self._read()) is not None:
            if msg.type == Msg.KEEPALIVE:
                await self.send(msg)
                continue
            if msg.type != type_:
                raise ProtocolError(
                    f"expected {Msg.Type.Name(type_)}, got {Msg.Type.Name(msg.type)}"
                )
            return msg
        raise ProtocolError(f"stream closed before {Msg.Type.Name(type_)}")

    def _configure(self, payload: bytes) -> None:
        if not payload:
            return
        params = chaincode_pb2.ChaincodeAdditionalParams.FromString(payload)
        # Writes are always sent one by one (valid with every peer); batched reads are used.
        self.use_get_multiple_keys = params.use_get_multiple_keys
        self.max_get_multiple_keys = max(params.max_size_get_multiple_keys, _DEFAULT_BATCH)

    async def _handle(self, msg: Msg) -> None:
        key = (msg.channel_id, msg.txid)
        if msg.type == Msg.KEEPALIVE:
            await self.send(msg)
        elif msg.type in (Msg.RESPONSE, Msg.ERROR):
            future = self._waiting.get(key)
            if future is None or future.done():
                log.warning("[%s] %s for no pending request", msg.txid[:8], Msg.Type.Name(msg.type))
            else:
                future.set_result(msg)
        elif msg.type in (Msg.INIT, Msg.TRANSACTION):
            refusal = ""
            if self.draining:
                refusal = "chaincode server is shutting down"
            elif key in self._tasks:
                refusal = f"[{msg.txid[:8]}] transaction in progress"
            if refusal:
                await self.send(
                    Msg(
                        type=Msg.ERROR,
                        txid=msg.txid,
                        channel_id=msg.channel_id,
                        payload=refusal.encode(),
                    )
                )
                return
            task = asyncio.create_task(self._execute(msg), name=f"tx-{msg.txid[:8]}")
            self._tasks[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
        else:
            raise ProtocolError(
                f"[{msg.txid[:8]}] cannot handle message {Msg.Type.Name(msg.type)} while ready"
            )

    async def _execute(self, msg: Msg) -> None:
        try:
            chaincode_input = chaincode_pb2.ChaincodeInput.FromString(msg.payload)
            stub = ShimStub(
                self,
                channel_id=msg.channel_id,
                tx_id=msg.txid,
                chaincode_input=chaincode_input,
                signed_proposal=msg.proposal if msg.HasField("proposal") else None,
            )
        except Exception as exc:
            await self.send(
                Msg(
                    type=Msg.ERROR,
                    txid=msg.txid,
                    channel_id=msg.channel_id,
                    payload=f"failed to create new ChaincodeStub: {exc}".encode(),
                )
            )
            return
        try:
            response = await self._router.execute(stub)
        finally:
            stub.completed = True
        event = None
        if stub.event is not None:
            event = chaincode_event_pb2.ChaincodeEvent(
                event_name=stub.event[0], payload=stub.event[1]
            )
        if msg.type == Msg.INIT and response.status >= ERROR_THRESHOLD:
            reply = Msg(type=Msg.ERROR, payload=response.message.encode())
        else:
            reply = Msg(
                type=Msg.COMPLETED,
                payload=proposal_response_pb2.Response(
                    status=response.status,
                    message=response.message,
                    payload=response.payload,
                ).SerializeToString(),
            )
        reply.txid, reply.channel_id = msg.txid, msg.channel_id
        if event is not None:
            reply.chaincode_event.CopyFrom(event)
        await self.send(reply)

    def _finished(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            # Only sending can fail here (the contract's errors became a response): the stream
            # is gone and the peer has already failed the transaction.
            log.warning("[%s] could not answer the peer: %s", key[1][:8], task.exception())

    def drain(self) -> asyncio.Future[list[object]]:
        """Refuse new transactions from now on; the result completes when running ones end."""
        self.draining = True
        return asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _stop_transactions(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class ShimStub(Stub):
    """``Stub`` whose ledger calls are requests to the peer over the session's stream."""

    def __init__(self, session: Session, **kwargs) -> None:
        super().__init__(**kwargs)
        self._session = session
        self._lock = asyncio.Lock()  # one outstanding request per transaction
        self.completed = False

    async def _call(self, type_: int, message) -> bytes:
        async with self._lock:
            if self.completed:
                raise ChaincodeError(f"[{self.tx_id[:8]}] transaction has already completed")
            return await self._session.request(self, type_, message.SerializeToString())

    async def _get_state(self, collection: str, key: str) -> bytes:
        return await self._call(
            Msg.GET_STATE, chaincode_shim_pb2.GetState(key=key, collection=collection)
        )

    async def _get_state_multiple(self, collection: str, keys: list[str]) -> list[bytes]:
        if not self._session.use_get_multiple_keys:
            return [await self._get_state(collection, key) for key in keys]
        size, values = self._session.max_get_multiple_keys, []
        for i in range(0, len(keys), size):
            raw = await self._call(
                Msg.GET_STATE_MULTIPLE,
                chaincode_shim_pb2.GetStateMultiple(keys=keys[i : i + size], collection=collection),
            )
            values.extend(chaincode_shim_pb2.GetStateMultipleResult.FromString(raw).values)
        return values

    async def _put_state(self, collection: str, key: str, value: bytes) -> None:
        await self._call(
            Msg.PUT_STATE, chaincode_shim_pb2.PutState(key=key, value=value, collection=collection)
        )

    async def _del_state(self, collection: str, key: str) -> None:
        await self._call(Msg.DEL_STATE, chaincode_shim_pb2.DelState(key=key, collection=collection))

    def _range(self, collection: str, start: str, end: str) -> QueryIterator:
        request = chaincode_shim_pb2.GetStateByRange(
            startKey=start, endKey=end, collection=collection
        )
        return QueryIterator(self, Msg.GET_STATE_BY_RANGE, request, _decode_kv)

    async def _range_page(
        self, collection: str, start: str, end: str, page_size: int, bookmark: str
    ) -> tuple[list[tuple[str, bytes]], str]:
        metadata = chaincode_shim_pb2.QueryMetadata(pageSize=page_size, bookmark=bookmark)
        request = chaincode_shim_pb2.GetStateByRange(
            startKey=start, endKey=end, collection=collection, metadata=metadata.SerializeToString()
        )
        query = QueryIterator(self, Msg.GET_STATE_BY_RANGE, request, _decode_kv)
        results = [item async for item in query]
        assert query.last is not None  # iterating fetched at least the first batch
        meta = chaincode_shim_pb2.QueryResponseMetadata.FromString(query.last.metadata)
        return results, meta.bookmark

    def _history(self, key: str) -> QueryIterator:
        request = chaincode_shim_pb2.GetHistoryForKey(key=key)
        return QueryIterator(self, Msg.GET_HISTORY_FOR_KEY, request, _decode_modification)

    async def _get_private_data_hash(self, collection: str, key: str) -> bytes:
        return await self._call(
            Msg.GET_PRIVATE_DATA_HASH, chaincode_shim_pb2.GetState(key=key, collection=collection)
        )

    async def _get_state_metadata(self, collection: str, key: str) -> dict[str, bytes]:
        raw = await self._call(
            Msg.GET_STATE_METADATA,
            chaincode_shim_pb2.GetStateMetadata(key=key, collection=collection),
        )
        result = chaincode_shim_pb2.StateMetadataResult.FromString(raw)
        return {entry.metakey: entry.value for entry in result.entries}

    async def _put_state_metadata(
        self, collection: str, key: str, metakey: str, value: bytes
    ) -> None:
        await self._call(
            Msg.PUT_STATE_METADATA,
            chaincode_shim_pb2.PutStateMetadata(
                key=key,
                collection=collection,
                metadata=chaincode_shim_pb2.StateMetadata(metakey=metakey, value=value),
            ),
        )


class QueryIterator:
    """Async iterator over a range or history query; fetches batches with QUERY_STATE_NEXT.

    An exhausted query is closed by the peer, and so is one still open when the transaction
    ends; ``await it.aclose()`` closes an abandoned query early (QUERY_STATE_CLOSE).
    """

    def __init__(self, stub: ShimStub, type_: int, request, decode: Callable[[bytes], object]):
        self._stub, self._type, self._request, self._decode = stub, type_, request, decode
        self.last: chaincode_shim_pb2.QueryResponse | None = None
        self._index = 0

    def __aiter__(self) -> QueryIterator:
        return self

    async def __anext__(self):
        if self.last is None:
            self.last = self._parse(await self._stub._call(self._type, self._request))
        while self._index >= len(self.last.results):
            if not self.last.has_more:
                raise StopAsyncIteration
            request = chaincode_shim_pb2.QueryStateNext(id=self.last.id)
            self.last = self._parse(await self._stub._call(Msg.QUERY_STATE_NEXT, request))
            self._index = 0
        self._index += 1
        return self._decode(self.last.results[self._index - 1].resultBytes)

    async def aclose(self) -> None:
        """Tell the peer to drop the query if it still has results."""
        if self.last is not None and self.last.has_more:
            request = chaincode_shim_pb2.QueryStateClose(id=self.last.id)
            self.last = self._parse(await self._stub._call(Msg.QUERY_STATE_CLOSE, request))
            self._index = len(self.last.results)

    @staticmethod
    def _parse(raw: bytes) -> chaincode_shim_pb2.QueryResponse:
        return chaincode_shim_pb2.QueryResponse.FromString(raw)


def _decode_kv(raw: bytes) -> tuple[str, bytes]:
    kv = kv_query_result_pb2.KV.FromString(raw)
    return kv.key, kv.value


def _decode_modification(raw: bytes) -> KeyModification:
    mod = kv_query_result_pb2.KeyModification.FromString(raw)
    return KeyModification(
        tx_id=mod.tx_id,
        value=mod.value,
        timestamp=mod.timestamp.ToDatetime(tzinfo=datetime.UTC)
        if mod.HasField("timestamp")
        else None,
        is_delete=mod.is_delete,
    )
