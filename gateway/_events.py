"""Event streams: chaincode events from the Gateway, blocks from the peer's Deliver service."""

from __future__ import annotations

import builtins  # `bytes()` methods shadow the builtin in their class's annotations
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2

from fedfabric.gateway._checkpointers import Checkpoint
from fedfabric.gateway._client import BlockEventsKind
from fedfabric.gateway._context import Context, new_nonce
from fedfabric.gateway._errors import DeliverError

T = TypeVar("T")

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
    """An async iterator of events; as an async context manager it closes the stream on exit.

    Example::

        async with network.chaincode_events("fl", checkpoint=checkpointer) as events:
            async for event in events:
                handle(event)
                await checkpointer.checkpoint_chaincode_event(event)
    """

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._source = source

    async def __aenter__(self) -> EventStream[T]:
        return self

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
        return await self._source.__anext__()

    async def aclose(self) -> None:
        """Cancel the underlying gRPC stream."""
        await self._source.aclose()  # type: ignore[attr-defined]


def start_position(
    start_block: int | None, checkpoint: Checkpoint | None
) -> tuple[ab_pb2.SeekPosition, str]:
    """Where to start reading, and the last transaction already processed in that block.

    A checkpoint that is not at its zero value wins over ``start_block``; with neither, events
    start at the next block to be committed.
    """
    if checkpoint is not None and (checkpoint.block_number or checkpoint.transaction_id):
        specified = ab_pb2.SeekSpecified(number=checkpoint.block_number)
        return ab_pb2.SeekPosition(specified=specified), checkpoint.transaction_id
    if start_block is not None:
        return ab_pb2.SeekPosition(specified=ab_pb2.SeekSpecified(number=start_block)), ""
    return ab_pb2.SeekPosition(next_commit=ab_pb2.SeekNextCommit()), ""


class ChaincodeEventsRequest:
    """A request for the events of one chaincode; ``events()`` opens the stream.

    ``bytes()`` and ``digest()`` serve offline signing
    (``Gateway.new_signed_chaincode_events_request``).
    """

    def __init__(self, context: Context, signed: gateway_pb2.SignedChaincodeEventsRequest) -> None:
        self._context = context
        self._signed = signed

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
        position, after_transaction_id = start_position(start_block, checkpoint)
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

    def events(self) -> EventStream[ChaincodeEvent]:
        """Sign (unless signed offline) and open the stream of ``ChaincodeEvent``.

        Iterating raises ``GatewayError`` if the stream fails.
        """
        if not self._signed.signature:
            self._signed.signature = self._context.signing.sign(self._signed.request)
        return EventStream(self._iterate())

    async def _iterate(self) -> AsyncIterator[ChaincodeEvent]:
        responses = self._context.client.chaincode_events(self._signed)
        async with contextlib.aclosing(responses):
            async for response in responses:
                for event in response.events:
                    yield ChaincodeEvent(
                        block_number=response.block_number,
                        transaction_id=event.tx_id,
                        chaincode_name=event.chaincode_id,
                        event_name=event.event_name,
                        payload=bytes(event.payload),
                    )


class BlockEventsRequest:
    """A signed Deliver seek request for blocks of one ``kind``; ``events()`` opens the stream.

    ``kind`` is ``"block"`` (``common.Block``), ``"filtered_block"`` (``peer.FilteredBlock``) or
    ``"block_and_private_data"`` (``peer.BlockAndPrivateData``). ``bytes()`` and ``digest()``
    serve offline signing (``Gateway.new_signed_block_events_request``).
    """

    def __init__(self, context: Context, envelope: common_pb2.Envelope, kind: BlockEventsKind):
        self._context = context
        self._envelope = envelope
        self._kind = kind

    @classmethod
    def build(
        cls,
        context: Context,
        channel_id: str,
        kind: BlockEventsKind,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> BlockEventsRequest:
        """Build an unsigned request (stop: the largest block number, i.e. never)."""
        position, _ = start_position(start_block, checkpoint)
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
        return cls(context, common_pb2.Envelope(payload=payload.SerializeToString()), kind)

    @property
    def kind(self) -> BlockEventsKind:
        """Which Deliver stream the request is for."""
        return self._kind

    def bytes(self) -> builtins.bytes:
        """The serialized ``common.Envelope``."""
        return self._envelope.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the envelope payload: what an offline signer signs."""
        return self._context.signing.digest(self._envelope.payload)

    def events(self) -> EventStream[Any]:
        """Sign (unless signed offline) and open the stream of blocks.

        Iterating raises ``GatewayError`` if the stream fails, ``DeliverError`` if the peer
        ends it with a status other than SUCCESS.
        """
        if not self._envelope.signature:
            self._envelope.signature = self._context.signing.sign(self._envelope.payload)
        return EventStream(self._iterate())

    async def _iterate(self) -> AsyncIterator[Any]:
        responses = self._context.client.block_events(self._envelope, self._kind)
        async with contextlib.aclosing(responses):
            async for response in responses:
                which = response.WhichOneof("Type")
                if which != "status":
                    yield getattr(response, which)
                elif response.status == common_pb2.SUCCESS:
                    return
                else:
                    raise DeliverError(response.status)
