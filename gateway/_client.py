"""The only caller of the peer's gRPC stubs, and the only place that translates gRPC errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal

import grpc
import grpc.aio
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.peer import events_pb2, events_pb2_grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

from fedfabric.gateway._errors import (
    CommitStatusError,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    GatewayClosedError,
    GatewayError,
    SubmitError,
    TransactionError,
)
from fedfabric.gateway._options import CallOptions

BlockEventsKind = Literal["block", "filtered_block", "block_and_private_data"]
GatewayMethod = Literal["Evaluate", "Endorse", "Submit", "CommitStatus"]

_STATUS_DETAILS_KEY = "grpc-status-details-bin"
_ERROR_DETAIL_TYPE_URL = "type.googleapis.com/gateway.ErrorDetail"
_STEP_ERRORS: dict[GatewayMethod, type[TransactionError]] = {
    "Evaluate": EvaluateError,
    "Endorse": EndorseError,
    "Submit": SubmitError,
    "CommitStatus": CommitStatusError,
}
_NO_OPTIONS = CallOptions()

SUBMIT_LINGER = 0.03
"""Seconds a Submit may wait under load, so that submits reach the orderer in waves
(`GatewayClient`); ``connect(submit_linger=0)`` turns it off."""
WAVE_FROM = 32
"""Calls of one gateway in flight from which its submits travel in waves."""


class GatewayClient:
    """Calls the Gateway and Deliver services of a peer over shared grpc.aio channels.

    With several channels (peers of one organisation), a call that cannot reach the current
    peer (``UNAVAILABLE`` without per-peer details: the gateway peer itself is gone) is tried
    on the next one, which then stays current. Every call is safe to repeat: a proposal has no
    effect until submitted, a resubmitted envelope commits once (the copy is a DUPLICATE_TXID),
    and the rest only read.

    Under load (`WAVE_FROM` calls or more in flight) a Submit waits up to `submit_linger`
    seconds for the others that become ready meanwhile, and they go together. The orderer
    then cuts fuller blocks, and every peer validates and commits fewer of them: on a
    CPU-bound network that is more transactions a second (measured: `scripts/bench gateway`,
    and the README's gateway section). A transaction that waits that long has waited far
    longer in the queues already; with fewer calls in flight nothing waits.
    """

    def __init__(
        self, channels: Sequence[grpc.aio.Channel], *, submit_linger: float = SUBMIT_LINGER
    ) -> None:
        if not channels:
            raise ValueError("a gateway needs at least one channel")
        self.submit_linger = submit_linger
        self._wave: asyncio.Future[None] | None = None  # the submits waiting to go together
        self._stubs = [
            (gateway_pb2_grpc.GatewayStub(c), events_pb2_grpc.DeliverStub(c)) for c in channels
        ]
        self._current = 0
        self._calls: set[Any] = set()  # unary calls in flight
        self._streams: set[Any] = set()  # open event streams
        self._idle = asyncio.Event()
        self._idle.set()
        self.closed = False

    async def call(
        self,
        method: GatewayMethod,
        request: Any,
        *,
        transaction_id: str,
        timeout: float | None,
        options: CallOptions | None = None,
    ) -> Any:
        """Call a unary Gateway method; a failure raises the error of that step."""
        what = f"{method} of transaction {transaction_id}"
        if method == "Submit" and self.submit_linger and len(self._calls) >= WAVE_FROM:
            await self._next_wave()
        for index, last in self._failover_order():
            gateway, _ = self._stubs[index]
            try:
                call = self._start(getattr(gateway, method), request, what, timeout, options)
                with self._tracked(call, what):
                    response = await call
            except grpc.aio.AioRpcError as err:
                if not last and self._unreachable(err):
                    continue
                raise translate(err, _STEP_ERRORS[method], transaction_id) from err
            self._current = index
            return response
        raise AssertionError("unreachable: the last peer's error is raised")

    async def _next_wave(self) -> None:
        """Return with the wave of submits that leaves `submit_linger` seconds after the
        first of them arrived here."""
        if self._wave is None:
            wave = self._wave = asyncio.get_running_loop().create_future()

            def leave() -> None:
                self._wave = None
                wave.set_result(None)

            asyncio.get_running_loop().call_later(self.submit_linger, leave)
        await asyncio.shield(self._wave)

    async def chaincode_events(
        self, request: gateway_pb2.SignedChaincodeEventsRequest, options: CallOptions | None
    ) -> AsyncIterator[gateway_pb2.ChaincodeEventsResponse]:
        """Start the stream (the call is under way when this returns) and return its
        responses. A peer that cannot be reached is only seen when they are read (the
        peer sends nothing before the first event)."""

        async def start(index: int) -> Any:
            gateway, _ = self._stubs[index]
            return self._start(gateway.ChaincodeEvents, request, "chaincode events", None, options)

        return await self._open_stream(start)

    async def block_events(
        self, request: common_pb2.Envelope, kind: BlockEventsKind, options: CallOptions | None
    ) -> AsyncIterator[events_pb2.DeliverResponse]:
        """Start the Deliver stream of ``kind`` (the seek request is sent when this returns)."""
        names = {
            "block": "Deliver",
            "filtered_block": "DeliverFiltered",
            "block_and_private_data": "DeliverWithPrivateData",
        }

        async def start(index: int) -> Any:
            _, deliver = self._stubs[index]
            call = self._start(getattr(deliver, names[kind]), None, "block events", None, options)
            await call.write(request)
            await call.done_writing()
            return call

        return await self._open_stream(start)

    async def close(self, grace: float | None) -> None:
        """Refuse new calls and cancel open event streams (they never end by themselves);
        let unary calls in flight finish for ``grace`` seconds (``None``: as long as they
        take), then cancel them. Each cancelled call raises ``GatewayClosedError``."""
        self.closed = True
        for stream in list(self._streams):
            stream.cancel()
        if grace is None or grace > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._idle.wait()
        for call in list(self._calls):
            call.cancel()

    def _start(
        self,
        method: Any,
        request: Any,
        what: str,
        timeout: float | None,
        options: CallOptions | None,
    ) -> Any:
        if self.closed:
            raise GatewayClosedError(what)
        options = options or _NO_OPTIONS
        args = () if request is None else (request,)
        return method(
            *args,
            timeout=timeout,
            metadata=tuple(options.metadata) or None,
            wait_for_ready=options.wait_for_ready,
            compression=options.compression,
        )

    @contextlib.contextmanager
    def _tracked(self, call: Any, what: str) -> Iterator[None]:
        """Count the unary ``call`` as in flight while it runs."""
        self._calls.add(call)
        self._idle.clear()
        try:
            with self._closed_is_an_error(call, what):
                yield
        finally:
            self._calls.discard(call)
            if not self._calls:
                self._idle.set()

    @contextlib.contextmanager
    def _closed_is_an_error(self, call: Any, what: str) -> Iterator[None]:
        """A ``call`` cancelled by ``close`` raises ``GatewayClosedError``, not a bare
        ``CancelledError`` (a cancellation of the caller's own task stays one)."""
        try:
            yield
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.closed and call.cancelled() and not (task and task.cancelling()):
                raise GatewayClosedError(what) from None
            raise

    async def _open_stream(self, start: Callable[[int], Awaitable[Any]]) -> AsyncIterator[Any]:
        for index, last in self._failover_order():
            try:
                call = await start(index)
            except grpc.aio.AioRpcError as err:
                if not last and self._unreachable(err):
                    continue
                raise translate(err) from err
            self._current = index
            self._streams.add(call)
            return self._responses(call)
        raise AssertionError("unreachable: the last peer's error is raised")

    async def _responses(self, call: Any) -> AsyncIterator[Any]:
        try:
            with self._closed_is_an_error(call, "event stream"):
                async for response in call:
                    yield response
        except grpc.aio.AioRpcError as err:
            raise translate(err) from err
        finally:
            self._streams.discard(call)
            call.cancel()

    def _failover_order(self) -> list[tuple[int, bool]]:
        """Each channel's index, the current one first, and whether it is the last to try."""
        count = len(self._stubs)
        return [((self._current + step) % count, step == count - 1) for step in range(count)]

    def _unreachable(self, err: grpc.aio.AioRpcError) -> bool:
        """Whether the peer could not be reached at all (so the next one may serve)."""
        return (
            not self.closed
            and err.code() == grpc.StatusCode.UNAVAILABLE
            and not error_details(err.trailing_metadata())
        )


def translate(
    err: grpc.aio.AioRpcError,
    error_type: type[TransactionError] | None = None,
    transaction_id: str = "",
) -> GatewayError:
    """Turn a gRPC error into our error type, decoding the Gateway's per-peer details."""
    code = err.code()
    grpc_message = err.details() or ""
    details = error_details(err.trailing_metadata())
    if error_type is None:
        message = f"{code.name}: {grpc_message}" + "".join(f"\n  - {d}" for d in details)
        return GatewayError(message, code=code, grpc_message=grpc_message, details=details)
    return error_type(transaction_id, code=code, grpc_message=grpc_message, details=details)


def error_details(metadata: Any) -> list[ErrorDetail]:
    """Decode the ``gateway.ErrorDetail`` messages of a ``grpc-status-details-bin`` trailer."""
    for key, value in metadata or ():
        if key == _STATUS_DETAILS_KEY:
            status = _RpcStatus.FromString(value)
            return [
                _error_detail(gateway_pb2.ErrorDetail.FromString(item.value))
                for item in status.details
                if item.type_url == _ERROR_DETAIL_TYPE_URL
            ]
    return []


def _error_detail(detail: gateway_pb2.ErrorDetail) -> ErrorDetail:
    return ErrorDetail(address=detail.address, msp_id=detail.msp_id, message=detail.message)


def _rpc_status_class() -> Any:
    # google.rpc.Status{int32 code = 1; string message = 2; repeated Any details = 3} is built
    # in a private pool: no googleapis-common-protos needed, and no clash with it in the
    # default pool if another library loads it.
    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)
    field = descriptor_pb2.FieldDescriptorProto
    status_file = descriptor_pb2.FileDescriptorProto(
        name="google/rpc/status.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=[any_file.name],
    )
    status = status_file.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(
        name="details",
        number=3,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


_RpcStatus = _rpc_status_class()
