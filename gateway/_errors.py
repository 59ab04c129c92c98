"""Errors raised by the Gateway client.

Every error this package raises for a failed call or transaction derives from ``FabricError``.
A failed call to the peer is a ``GatewayError``, whose subclass tells the step that failed;
every step error carries the transaction id, the gRPC status code and the per-peer details that
the Gateway attached to its status (address, MSP id, message, and the chaincode's own status and
message when a chaincode refused)::

    Exception
    └── FabricError                    the root: every error below
        ├── GatewayError               a call to the Gateway or Deliver service failed
        │   │                          (.code, .grpc_message, .details)
        │   ├── TransactionError       ... while running one transaction (.transaction_id)
        │   │   ├── EvaluateError      Evaluate: the query was not answered
        │   │   ├── EndorseError       Endorse: not enough organisations endorsed the proposal
        │   │   ├── SubmitError        Submit: the orderer did not accept the transaction
        │   │   └── CommitStatusError  CommitStatus: the outcome is unknown (.result kept)
        │   ├── DeliverError           an event stream ended with a non-success Deliver status
        │   └── GatewayClosedError     the gateway was closed before the call finished
        └── CommitError                the transaction was committed but marked invalid (.code_name)

Raw ``grpc.aio.AioRpcError`` never reaches the caller: ``fedfabric.gateway._client`` translates
it into the matching error above and chains the original as ``__cause__``. Bad arguments are
``TypeError`` / ``ValueError``, raised before anything is sent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.peer import transaction_pb2

# How Fabric's gateway words a chaincode's own refusal (internal/pkg/gateway/api.go).
_CHAINCODE_RESPONSE = re.compile(r"chaincode response (\d+), (.*)", re.DOTALL)


def chaincode_response(message: str) -> tuple[int, str] | None:
    """The chaincode's ``(status, message)`` in a Fabric error message, if it holds one."""
    found = _CHAINCODE_RESPONSE.search(message)
    return (int(found.group(1)), found.group(2)) if found else None


@dataclass(frozen=True)
class ErrorDetail:
    """What one peer (or orderer) answered when the Gateway asked it to do its part.

    ``chaincode_status`` and ``chaincode_message`` are the status and message the chaincode
    itself returned (``shim.Error``), when the peer's message carries them; else ``None``.
    """

    address: str
    msp_id: str
    message: str
    chaincode_status: int | None = field(init=False, default=None)
    chaincode_message: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        response = chaincode_response(self.message)
        if response is not None:
            object.__setattr__(self, "chaincode_status", response[0])
            object.__setattr__(self, "chaincode_message", response[1])

    def __str__(self) -> str:
        return f"{self.address} ({self.msp_id}): {self.message}"


class FabricError(Exception):
    """The root of every error of ``fedfabric.gateway``: catch it to catch them all."""


class GatewayError(FabricError):
    """A call to the peer's Gateway or Deliver service failed.

    ``code`` is the gRPC status code (``None`` only for ``DeliverError``), ``grpc_message`` the
    status message exactly as sent by the peer, and ``details`` what each contacted node said.
    """

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None,
        grpc_message: str = "",
        details: Sequence[ErrorDetail] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.grpc_message = grpc_message
        self.details = list(details)


class TransactionError(GatewayError):
    """A step of one transaction failed; ``transaction_id`` names the transaction.

    ``chaincode_status`` and ``chaincode_message`` are what the chaincode returned when it
    refused the transaction (from the first peer detail, or the status message, that carries
    them), else ``None``.
    """

    step = "transaction"

    def __init__(
        self,
        transaction_id: str,
        *,
        code: grpc.StatusCode,
        grpc_message: str,
        details: Sequence[ErrorDetail] = (),
    ) -> None:
        message = (
            f"{self.step} failed for transaction {transaction_id}: {code.name}: {grpc_message}"
        )
        message += "".join(f"\n  - {detail}" for detail in details)
        super().__init__(message, code=code, grpc_message=grpc_message, details=details)
        self.transaction_id = transaction_id
        response = next(
            (
                (d.chaincode_status, d.chaincode_message)
                for d in self.details
                if d.chaincode_status is not None
            ),
            chaincode_response(grpc_message),
        )
        self.chaincode_status: int | None = response[0] if response else None
        self.chaincode_message: str | None = response[1] if response else None


class EvaluateError(TransactionError):
    """Evaluating a transaction (a query that is not sent to the orderer) failed."""

    step = "evaluate"


class EndorseError(TransactionError):
    """The proposal could not be endorsed by enough organisations.

    A chaincode that refuses the transaction ends up here; its message is in ``grpc_message``
    and in the ``details`` of the peers that ran it, unchanged, and parsed into
    ``chaincode_status`` / ``chaincode_message``.
    """

    step = "endorse"


class SubmitError(TransactionError):
    """The endorsed transaction could not be sent to the orderer."""

    step = "submit"


class CommitStatusError(TransactionError):
    """The commit status of a submitted transaction could not be obtained (e.g. timeout).

    The transaction was endorsed and submitted, and may still commit: ``result`` holds what
    the chaincode returned when ``Contract.submit`` raised this (``None`` otherwise).
    """

    step = "commit status"
    result: bytes | None = None


class DeliverError(GatewayError):
    """A block event stream ended with a Deliver ``status`` other than SUCCESS."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.status_name = _enum_name(common_pb2.Status, status)
        super().__init__(
            f"block events stream ended with status {status} ({self.status_name})", code=None
        )


class GatewayClosedError(GatewayError):
    """The gateway was closed while the call was in flight, or before it started."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what}: the gateway was closed", code=grpc.StatusCode.CANCELLED)


class CommitError(FabricError):
    """The transaction reached the ledger but was marked invalid by the committing peers.

    ``code`` is the ``TxValidationCode`` number and ``code_name`` its name, for example
    ``"MVCC_READ_CONFLICT"``; ``result`` what the chaincode returned when it endorsed.
    """

    def __init__(self, transaction_id: str, code: int, *, result: bytes | None = None) -> None:
        self.transaction_id = transaction_id
        self.code = code
        self.code_name = _enum_name(transaction_pb2.TxValidationCode, code)
        self.result = result
        super().__init__(
            f"transaction {transaction_id} failed to commit with status code {code} "
            f"({self.code_name})"
        )


class _EnumType(Protocol):
    """A generated protobuf enum (``EnumTypeWrapper``), as far as naming a number goes."""

    def Name(self, number: int) -> str: ...


def _enum_name(enum: _EnumType, number: int) -> str:
    try:
        return enum.Name(number)
    except ValueError:
        return "UNKNOWN"
