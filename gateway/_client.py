"""The only caller of the peer's gRPC stubs, and the only place that translates gRPC errors."""

from __future__ import annotations

from collections.abc import AsyncGenerator
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
    GatewayError,
    SubmitError,
    TransactionError,
)

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


class GatewayClient:
    """Calls the Gateway and Deliver services of one peer over a shared grpc.aio channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._gateway = gateway_pb2_grpc.GatewayStub(channel)
        self._deliver = events_pb2_grpc.DeliverStub(channel)

    async def call(
        self, method: GatewayMethod, request: Any, *, transaction_id: str, timeout: float
    ) -> Any:
        """Call a unary Gateway method; a failure raises the error of that step."""
        try:
            return await getattr(self._gateway, method)(request, timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise translate(err, _STEP_ERRORS[method], transaction_id) from err

    def chaincode_events(
        self, request: gateway_pb2.SignedChaincodeEventsRequest
    ) -> AsyncGenerator[gateway_pb2.ChaincodeEventsResponse, None]:
        return _stream(self._gateway.ChaincodeEvents(request))

    def block_events(
        self, request: common_pb2.Envelope, kind: BlockEventsKind
    ) -> AsyncGenerator[events_pb2.DeliverResponse, None]:
        method = {
            "block": self._deliver.Deliver,
            "filtered_block": self._deliver.DeliverFiltered,
            "block_and_private_data": self._deliver.DeliverWithPrivateData,
        }[kind]
        return _stream(method(iter([request])))


async def _stream(call: Any) -> AsyncGenerator[Any, None]:
    try:
        async for response in call:
            yield response
    except grpc.aio.AioRpcError as err:
        raise translate(err) from err
    finally:
        call.cancel()


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
