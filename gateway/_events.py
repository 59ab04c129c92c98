"""Event streams: chaincode events from the Gateway, blocks from the peer's Deliver service."""

from __future__ import annotations

import asyncio
import builtins  # `bytes()` methods shadow the builtin in their class's annotations
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2

from fedfabric.gateway._checkpointers import Checkpoint
from fedfabric.gateway._client import BlockEventsKind
from fedfabric.gateway._context import Context, new_nonce
from fedfabric.gateway._errors import DeliverError, GatewayError
from fedfabric.gateway._ledger import chain_info
from fedfabric.gateway._options import CallOptions
from fedfabric.gateway._reconnect import Reconnect

T = TypeVar("T")
Position = tuple[int, str]
"""Where a stream stands: the block of the next event, the last transaction done in it."""

_MAX_BLOCK_NUMBER = 2**64 - 1


@dataclass(frozen=True)
class ChaincodeEvent:
    """An event emitted by a committed (VALID) transaction."""

    block_number: int
    transaction_id: str
    chaincode_name: str
    event_name: str
    payload: bytes


class EventStream(Generic[T], AsyncIterator[T]):
    """An async iterator of events; as an async context manager it starts the stream on
    entry and closes it on exit.

    The gRPC call starts on ``async with`` (or ``await stream.start()``): events committed
    from then on are delivered, even if the first ``anext`` comes later. Iterated without
    either, it starts on the first ``anext``. Opened with ``reconnect=``, a broken stream is
    reopened after the last event it delivered (see ``Reconnect``).

    Example::

        async with network.chaincode_events("fl", checkpoint=checkpointer) as events:
            async for event in events:
                handle(event)
                await checkpointer.checkpoint_chaincode_event(event)
    """

    def __init__(self, source: AsyncIterator[T]) -> None:
        """Wrap an iterator that is already open (an in-memory ledger's events, say)."""
        self._items: AsyncIterator[T] | None = source
        self._open: Callable[[Position | None], Awaitable[AsyncIterator[T]]] | None = None
        self._position: Callable[[T], Position] | None = None
        self._reconnect: Reconnect | None = None
        self._resume: Position | None = None
        self._closed = False

    @classmethod
    def _opening(
        cls,
        open_: Callable[[Position | None], Awaitable[AsyncIterator[T]]],
        position: Callable[[T], Position],
        reconnect: Reconnect | None,
    ) -> EventStream[T]:
        """A stream that opens its gRPC call with ``open_`` (from a position to resume after,
        or None for the request's own start) when it starts, and again to reconnect."""
        stream = cls.__new__(cls)
        stream._items, stream._open, stream._position = None, open_, position
        stream._reconnect, stream._resume, stream._closed = reconnect, None, False
        return stream

    async def start(self) -> EventStream[T]:
        """Start the gRPC call now, if it has not started (a no-op after that).

        Raises ``GatewayError`` if the peer cannot be reached or refuses the request.
        """
        if self._closed:
            raise ValueError("the event stream is closed")
        if self._items is None:
            if self._open is None:
                raise ValueError("the event stream ended and cannot be reopened")
            self._items = await self._open(self._resume)
        return self

    async def __aenter__(self) -> EventStream[T]:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> EventStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        failures = 0
        while True:
            try:
                await self.start()
                assert self._items is not None
                item = await anext(self._items)
            except GatewayError as err:
                failures += 1
                if self._reconnect is None or not self._reconnect.retries(err, failures):
                    raise
                await self._drop()
                await asyncio.sleep(self._reconnect.delay(failures - 1))
                continue
            if self._position is not None:
                self._resume = self._position(item)
            return item

    async def aclose(self) -> None:
        """Cancel the underlying gRPC stream."""
        self._closed = True
        await self._drop()

    async def _drop(self) -> None:
        items, self._items = self._items, None
        if items is not None:
            await items.aclose()  # type: ignore[attr-defined]


def seek_position(
    start_block: int | None, checkpoint: Checkpoint | None
) -> tuple[ab_pb2.SeekPosition, str]:
    """Where to start reading, and the last transaction already processed in that block.

    A checkpoint that is not at its zero value wins over ``start_block``; with neither, events
    start at the next block to be committed.
    """
    if checkpoint is not None and (checkpoint.block_number or checkpoint.transaction_id):
        return _specified(checkpoint.block_number), checkpoint.transaction_id
    if start_block is not None:
        return _specified(start_block), ""
    return ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit()), ""


def _specified(block_number: int) -> ab_pb2.SeekPosition:
    if block_number < 0:
        raise ValueError(f"a block number cannot be negative: {block_number}")
    return ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=block_number))


def _from_next_commit(position: ab_pb2.SeekPosition, signed: Any) -> bool:
    """Whether a request not yet signed starts at "the next commit": it is then pinned to
    the current height when the stream starts, so no event committed after that is lost
    however late the peer reads the request (it sends nothing before the first event)."""
    return position.WhichOneof("Type") == "next_commit" and not signed.signature


async def _height(context: Context, channel_id: str) -> int:
    return int((await chain_info(context, channel_id, None)).height)


def _check_reconnect(context: Context, reconnect: Reconnect | None) -> None:
    if reconnect is not None and not context.signing.can_sign:
        raise ValueError("reconnect= signs each new request: it needs a gateway with a signer")


class ChaincodeEventsRequest:
    """A request for the events of one chaincode; ``events()`` opens the stream.

    ``bytes()`` and ``digest()`` serve offline signing
    (``Gateway.new_signed_chaincode_events_request``).
    """

    def __init__(self, context: Context, signed: gateway_pb2.SignedChaincodeEventsRequest) -> None:
        self._context = context
        self._signed = signed
        self._request = gateway_pb2.ChaincodeEventsRequest.FromString(signed.request)

    @classmethod
    def build(
        cls,
        context: Context,
        channel_id: str,
        chaincode: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> ChaincodeEventsRequest:
        """Build an unsigned request."""
        position, after_transaction_id = seek_position(start_block, checkpoint)
        request = gateway_pb2.ChaincodeEventsRequest(
            channel_id=channel_id,
            chaincode_id=chaincode,
            identity=context.signing.creator,
            start_position=position,
            after_transaction_id=after_transaction_id,
        )
        signed = gateway_pb2.SignedChaincodeEventsRequest(request=request.SerializeToString())
        return cls(context, signed)

    def bytes(self) -> builtins.bytes:
        """The serialized ``gateway.SignedChaincodeEventsRequest``."""
        return self._signed.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the request: what an offline signer signs."""
        return self._context.signing.digest(self._signed.request)

    def events(
        self, *, call_options: CallOptions | None = None, reconnect: Reconnect | None = None
    ) -> EventStream[ChaincodeEvent]:
        """The stream of ``ChaincodeEvent``, signed (unless signed offline) when it starts.

        Starting or iterating raises ``GatewayError`` if the stream fails; ``reconnect=``
        (which needs a signer) reopens a broken stream instead. ``ValueError`` if
        ``reconnect=`` is given without a signer.
        """
        _check_reconnect(self._context, reconnect)

        async def open_(resume: Position | None) -> AsyncIterator[ChaincodeEvent]:
            if resume is None and _from_next_commit(self._request.start_position, self._signed):
                resume = (await _height(self._context, self._request.channel_id), "")
            signed = self._signed if resume is None else self._resumed(*resume)
            if not signed.signature:
                signed.signature = await self._context.signing.sign(signed.request)
            responses = await self._context.client.chaincode_events(signed, call_options)
            return _chaincode_events(responses)

        return EventStream._opening(open_, lambda e: (e.block_number, e.transaction_id), reconnect)

    def _resumed(self, block_number: int, transaction_id: str) -> Any:
        request = gateway_pb2.ChaincodeEventsRequest()
        request.CopyFrom(self._request)
        request.start_position.CopyFrom(_specified(block_number))
        request.after_transaction_id = transaction_id
        return gateway_pb2.SignedChaincodeEventsRequest(request=request.SerializeToString())


async def _chaincode_events(
    responses: AsyncIterator[gateway_pb2.ChaincodeEventsResponse],
) -> AsyncIterator[ChaincodeEvent]:
    try:
        async for response in responses:
            for event in response.events:
                yield ChaincodeEvent(
                    block_number=response.block_number,
                    transaction_id=event.tx_id,
                    chaincode_name=event.chaincode_id,
                    event_name=event.event_name,
                    payload=bytes(event.payload),
                )
    finally:
        await responses.aclose()  # type: ignore[attr-defined]


class BlockEventsRequest:
    """A Deliver seek request for whole blocks (``common_pb2.Block``); ``events()`` opens
    the stream. ``FilteredBlockEventsRequest`` and ``BlockAndPrivateDataEventsRequest`` are
    the same for the other two Deliver streams.

    ``bytes()`` and ``digest()`` serve offline signing
    (``Gateway.new_signed_block_events_request`` and its siblings).
    """

    kind: ClassVar[BlockEventsKind] = "block"

    def __init__(self, context: Context, envelope: common_pb2.Envelope) -> None:
        self._context = context
        self._envelope = envelope
        payload = common_pb2.Payload.FromString(envelope.payload)
        self._channel_id = common_pb2.ChannelHeader.FromString(
            payload.header.channel_header
        ).channel_id

    @classmethod
    def build(
        cls,
        context: Context,
        channel_id: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> Any:
        """Build an unsigned request (stop: the largest block number, i.e. never)."""
        position, _ = seek_position(start_block, checkpoint)
        return cls(context, _seek_envelope(context, channel_id, position))

    def bytes(self) -> builtins.bytes:
        """The serialized ``common.Envelope``."""
        return self._envelope.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the envelope payload: what an offline signer signs."""
        return self._context.signing.digest(self._envelope.payload)

    def events(
        self, *, call_options: CallOptions | None = None, reconnect: Reconnect | None = None
    ) -> EventStream[Any]:
        """The stream of blocks, signed (unless signed offline) when it starts.

        Starting or iterating raises ``GatewayError`` if the stream fails, ``DeliverError``
        if the peer ends it with a status other than SUCCESS; ``reconnect=`` (which needs a
        signer) reopens a broken stream instead. ``ValueError`` if ``reconnect=`` is given
        without a signer.
        """
        _check_reconnect(self._context, reconnect)

        async def open_(resume: Position | None) -> AsyncIterator[Any]:
            envelope = self._envelope
            seek = ab_pb2.SeekInfo.FromString(common_pb2.Payload.FromString(envelope.payload).data)
            if resume is None and _from_next_commit(seek.start, envelope):
                resume = (await _height(self._context, self._channel_id), "")
            if resume is not None:
                envelope = _seek_envelope(self._context, self._channel_id, _specified(resume[0]))
            if not envelope.signature:
                envelope.signature = await self._context.signing.sign(envelope.payload)
            responses = await self._context.client.block_events(envelope, self.kind, call_options)
            return _blocks(responses)

        return EventStream._opening(open_, lambda b: (_block_number(b) + 1, ""), reconnect)


class FilteredBlockEventsRequest(BlockEventsRequest):
    """A Deliver seek request for filtered blocks (``events_pb2.FilteredBlock``: transaction
    ids, validation codes and chaincode event names, no payloads)."""

    kind: ClassVar[BlockEventsKind] = "filtered_block"


class BlockAndPrivateDataEventsRequest(BlockEventsRequest):
    """A Deliver seek request for blocks with the private data this client may see
    (``events_pb2.BlockAndPrivateData``)."""

    kind: ClassVar[BlockEventsKind] = "block_and_private_data"


def _seek_envelope(
    context: Context, channel_id: str, position: ab_pb2.SeekPosition
) -> common_pb2.Envelope:
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.DELIVER_SEEK_INFO,
        channel_id=channel_id,
        epoch=0,
        tls_cert_hash=context.tls_cert_hash,
    )
    channel_header.timestamp.GetCurrentTime()
    signature_header = common_pb2.SignatureHeader(
        creator=context.signing.creator, nonce=new_nonce()
    )
    seek_info = ab_pb2.SeekInfo(
        start=position,
        stop=ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=_MAX_BLOCK_NUMBER)),
        behavior=ab_pb2.SeekInfo.BLOCK_UNTIL_READY,
    )
    payload = common_pb2.Payload(
        header=common_pb2.Header(
            channel_header=channel_header.SerializeToString(),
            signature_header=signature_header.SerializeToString(),
        ),
        data=seek_info.SerializeToString(),
    )
    return common_pb2.Envelope(payload=payload.SerializeToString())


def _block_number(block: Any) -> int:
    # common.Block has header.number; FilteredBlock has number; BlockAndPrivateData has block.
    if hasattr(block, "header"):
        return int(block.header.number)
    if hasattr(block, "block"):
        return int(block.block.header.number)
    return int(block.number)


async def _blocks(responses: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        async for response in responses:
            which = response.WhichOneof("Type")
            if which != "status":
                yield getattr(response, which)
            elif response.status == common_pb2.SUCCESS:
                return
            else:
                raise DeliverError(response.status)
    finally:
        await responses.aclose()  # type: ignore[attr-defined]
