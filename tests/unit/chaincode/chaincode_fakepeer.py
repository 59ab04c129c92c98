"""A fake *peer* for shim tests: dials the chaincode server's Connect stream, does the handshake,
sends transactions and answers ledger requests from dicts, the way fabric core/chaincode does.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import (
    chaincode_pb2,
    chaincode_shim_pb2,
    chaincode_shim_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
)

Msg = chaincode_shim_pb2.ChaincodeMessage
CHANNEL = "mychannel"


class FakePeer:
    """Peer side of one chaincode stream. Use ``async with FakePeer(channel) as peer``."""

    def __init__(
        self, channel: grpc.aio.Channel, *, batch: int = 100, ready_payload: bytes = b""
    ) -> None:
        self.state: dict[str, bytes] = {}
        self.private: dict[tuple[str, str], bytes] = {}
        self.metadata: dict[tuple[str, str], dict[str, bytes]] = {}
        self.history: dict[str, list[kv_query_result_pb2.KeyModification]] = {}
        self.errors: dict[str, str] = {}  # key -> error text answered to GET_STATE
        self.gates: dict[str, asyncio.Event] = {}  # key -> GET_STATE answered once set
        self.seen: dict[str, asyncio.Event] = defaultdict(asyncio.Event)  # key -> GET_STATE seen
        self.requests: list[tuple[str, str]] = []  # (txid, type name)
        self.writes: dict[str, list[tuple[str, str, bytes | None]]] = defaultdict(list)
        self.metadata_writes: dict[str, list[chaincode_shim_pb2.PutStateMetadata]] = defaultdict(
            list
        )
        self.registered_name = ""
        self._stub = chaincode_shim_pb2_grpc.ChaincodeStub(channel)
        self._batch = batch
        self._ready_payload = ready_payload
        self._iterators: dict[str, list[bytes]] = {}
        self._results: dict[tuple[str, str], asyncio.Future[Msg]] = {}
        self._keepalive: asyncio.Future[Msg] | None = None
        self._call = None
        self._reader: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FakePeer:
        self._call = self._stub.Connect()
        register = await self._call.read()
        assert register.type == Msg.REGISTER, register
        self.registered_name = chaincode_pb2.ChaincodeID.FromString(register.payload).name
        await self._write(Msg(type=Msg.REGISTERED))
        await self._write(Msg(type=Msg.READY, payload=self._ready_payload))
        self._reader = asyncio.create_task(self._read_loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self._write_lock:
            await self._call.done_writing()
        await self._reader

    async def execute(
        self,
        function: str,
        *args: bytes | str,
        txid: str,
        init: bool = False,
        creator: bytes = b"creator",
        transient: dict[str, bytes] | None = None,
        proposal: proposal_pb2.SignedProposal | None = None,
    ) -> Msg:
        """Send INIT/TRANSACTION and return the COMPLETED or ERROR that ends it."""
        future = self.start(
            function,
            *args,
            txid=txid,
            init=init,
            creator=creator,
            transient=transient,
            proposal=proposal,
        )
        return await future

    def start(
        self,
        function: str,
        *args: bytes | str,
        txid: str,
        init: bool = False,
        creator: bytes = b"creator",
        transient: dict[str, bytes] | None = None,
        proposal: proposal_pb2.SignedProposal | None = None,
    ) -> asyncio.Task[Msg]:
        raw = [a.encode() if isinstance(a, str) else a for a in (function, *args)]
        chaincode_input = chaincode_pb2.ChaincodeInput(args=raw, is_init=init)
        if proposal is None:
            proposal = signed_proposal(txid, creator, transient or {}, chaincode_input)
        future = asyncio.get_running_loop().create_future()
        self._results[(CHANNEL, txid)] = future
        msg = Msg(
            type=Msg.INIT if init else Msg.TRANSACTION,
            txid=txid,
            channel_id=CHANNEL,
            payload=chaincode_input.SerializeToString(),
            proposal=proposal,
        )
        return asyncio.create_task(self._send_and_wait(msg, future))

    async def _write(self, msg: Msg) -> None:
        async with self._write_lock:  # gRPC allows one write at a time
            await self._call.write(msg)

    async def _send_and_wait(self, msg: Msg, future: asyncio.Future[Msg]) -> Msg:
        await self._write(msg)
        return await future

    async def keepalive(self) -> Msg:
        self._keepalive = asyncio.get_running_loop().create_future()
        await self._write(Msg(type=Msg.KEEPALIVE, payload=b"ping"))
        return await self._keepalive

    async def send_raw(self, msg: Msg) -> None:
        await self._write(msg)

    async def next_unsolicited(self) -> Msg:
        """Wait for a message that is not tied to a known transaction (e.g. protocol ERROR)."""
        self._unsolicited = asyncio.get_running_loop().create_future()
        return await self._unsolicited

    async def _read_loop(self) -> None:
        try:
            while (msg := await self._call.read()) is not grpc.aio.EOF:
                await self._on_message(msg)
        except grpc.aio.AioRpcError:
            pass
        finally:
            self.closed.set()

    async def _on_message(self, msg: Msg) -> None:
        key = (msg.channel_id, msg.txid)
        if msg.type == Msg.KEEPALIVE and self._keepalive is not None:
            self._keepalive.set_result(msg)
        elif msg.type in (Msg.COMPLETED, Msg.ERROR) and key in self._results:
            self._results.pop(key).set_result(msg)
        elif msg.type in (Msg.COMPLETED, Msg.ERROR):
            future = getattr(self, "_unsolicited", None)
            if future is not None and not future.done():
                future.set_result(msg)
        else:
            self.requests.append((msg.txid, Msg.Type.Name(msg.type)))
            task = asyncio.create_task(self._answer(msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _answer(self, msg: Msg) -> None:
        try:
            payload = await self._handle(msg)
            reply = Msg(type=Msg.RESPONSE, payload=payload)
        except LookupError as exc:
            reply = Msg(type=Msg.ERROR, payload=str(exc.args[0]).encode())
        reply.txid, reply.channel_id = msg.txid, msg.channel_id
        await self._write(reply)

    async def _handle(self, msg: Msg) -> bytes:  # noqa: C901 - one branch per message type
        p = chaincode_shim_pb2
        if msg.type == Msg.GET_STATE:
            req = p.GetState.FromString(msg.payload)
            self.seen[req.key].set()
            if req.key in self.gates:
                await self.gates[req.key].wait()
            if req.key in self.errors:
                raise LookupError(self.errors[req.key])
            if req.collection:
                return self.private.get((req.collection, req.key), b"")
            return self.state.get(req.key, b"")
        if msg.type == Msg.GET_STATE_MULTIPLE:
            req = p.GetStateMultiple.FromString(msg.payload)
            return p.GetStateMultipleResult(
                values=[self.state.get(k, b"") for k in req.keys]
            ).SerializeToString()
        if msg.type == Msg.PUT_STATE:
            req = p.PutState.FromString(msg.payload)
            self.writes[msg.txid].append((req.collection, req.key, req.value))
            return b""
        if msg.type == Msg.DEL_STATE:
            req = p.DelState.FromString(msg.payload)
            self.writes[msg.txid].append((req.collection, req.key, None))
            return b""
        if msg.type == Msg.GET_STATE_BY_RANGE:
            req = p.GetStateByRange.FromString(msg.payload)
            keys = sorted(
                k for k in self.state if req.startKey <= k and (not req.endKey or k < req.endKey)
            )
            if req.metadata:
                return self._page(req, keys)
            kvs = [kv_query_result_pb2.KV(namespace="cc", key=k, value=self.state[k]) for k in keys]
            return self._open_query(msg.txid, [kv.SerializeToString() for kv in kvs])
        if msg.type == Msg.QUERY_STATE_NEXT:
            return self._next(p.QueryStateNext.FromString(msg.payload).id)
        if msg.type == Msg.QUERY_STATE_CLOSE:
            query_id = p.QueryStateClose.FromString(msg.payload).id
            self._iterators.pop(query_id, None)
            return p.QueryResponse(has_more=False, id=query_id).SerializeToString()
        if msg.type == Msg.GET_HISTORY_FOR_KEY:
            key = p.GetHistoryForKey.FromString(msg.payload).key
            return self._open_query(
                msg.txid, [m.SerializeToString() for m in self.history.get(key, [])]
            )
        if msg.type == Msg.GET_PRIVATE_DATA_HASH:
            req = p.GetState.FromString(msg.payload)
            value = self.private.get((req.collection, req.key))
            return hashlib.sha256(value).digest() if value is not None else b""
        if msg.type == Msg.GET_STATE_METADATA:
            req = p.GetStateMetadata.FromString(msg.payload)
            entries = self.metadata.get((req.collection, req.key), {})
            return p.StateMetadataResult(
                entries=[p.StateMetadata(metakey=k, value=v) for k, v in sorted(entries.items())]
            ).SerializeToString()
        if msg.type == Msg.PUT_STATE_METADATA:
            self.metadata_writes[msg.txid].append(p.PutStateMetadata.FromString(msg.payload))
            return b""
        raise LookupError(f"fake peer cannot handle {Msg.Type.Name(msg.type)}")

    def _open_query(self, txid: str, results: list[bytes]) -> bytes:
        query_id = f"{txid}-q{len(self._iterators)}"
        self._iterators[query_id] = results
        return self._next(query_id)

    def _next(self, query_id: str) -> bytes:
        if query_id not in self._iterators:
            raise LookupError(f"query iterator {query_id} not found")
        pending = self._iterators[query_id]
        batch, rest = pending[: self._batch], pending[self._batch :]
        if rest:
            self._iterators[query_id] = rest
        else:
            del self._iterators[query_id]  # exhausted queries are closed by the peer
        return chaincode_shim_pb2.QueryResponse(
            results=[chaincode_shim_pb2.QueryResultBytes(resultBytes=r) for r in batch],
            has_more=bool(rest),
            id=query_id,
        ).SerializeToString()

    def _page(self, req: chaincode_shim_pb2.GetStateByRange, keys: list[str]) -> bytes:
        meta = chaincode_shim_pb2.QueryMetadata.FromString(req.metadata)
        if meta.bookmark:
            keys = [k for k in keys if k >= meta.bookmark]
        page, rest = keys[: meta.pageSize], keys[meta.pageSize :]
        kvs = [kv_query_result_pb2.KV(namespace="cc", key=k, value=self.state[k]) for k in page]
        response_meta = chaincode_shim_pb2.QueryResponseMetadata(
            fetched_records_count=len(page), bookmark=rest[0] if rest else ""
        )
        return chaincode_shim_pb2.QueryResponse(
            results=[
                chaincode_shim_pb2.QueryResultBytes(resultBytes=kv.SerializeToString())
                for kv in kvs
            ],
            has_more=False,
            metadata=response_meta.SerializeToString(),
        ).SerializeToString()

    @property
    def open_queries(self) -> list[str]:
        return list(self._iterators)


def signed_proposal(
    txid: str,
    creator: bytes,
    transient: dict[str, bytes],
    chaincode_input: chaincode_pb2.ChaincodeInput,
    seconds: int = 1_700_000_000,
) -> proposal_pb2.SignedProposal:
    """A client proposal the way fabric-gateway builds one (signature left empty)."""
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION, channel_id=CHANNEL, tx_id=txid
    )
    channel_header.timestamp.seconds = seconds
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(
            creator=creator, nonce=b"n" * 24
        ).SerializeToString(),
    )
    spec = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(input=chaincode_input)
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=spec.SerializeToString(), TransientMap=transient
    )
    proposal = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    )
    return proposal_pb2.SignedProposal(
        proposal_bytes=proposal.SerializeToString(), signature=b"sig"
    )


def response_of(msg: Msg) -> proposal_response_pb2.Response:
    """The peer.Response carried by a COMPLETED message."""
    assert msg.type == Msg.COMPLETED, f"expected COMPLETED, got {Msg.Type.Name(msg.type)}"
    return proposal_response_pb2.Response.FromString(msg.payload)
