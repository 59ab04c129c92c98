"""Errors raised by the Gateway client.

All failures of a call to the peer are ``GatewayError``. The step that failed is told by the
subclass; every step error carries the transaction id, the gRPC status code and the per-peer
details that the Gateway attached to its status (address, MSP id, message)::

    Exception
    ├── GatewayError               a call to the Gateway or Deliver service failed (.code, .details)
    │   ├── TransactionError       ... while running one transaction (.transaction_id)
    │   │   ├── EvaluateError      Evaluate: the query was not answered
    │   │   ├── EndorseError       Endorse: not enough organisations endorsed the proposal
    │   │   ├── SubmitError        Submit: the orderer did not accept the transaction
    │   │   └── CommitStatusError  CommitStatus: the outcome of the transaction is unknown
    │   └── DeliverError           an event stream ended with a non-success Deliver status
    └── CommitError                the transaction was committed but marked invalid (.code_name)

Raw ``grpc.aio.AioRpcError`` never reaches the caller: ``fedfabric.gateway._client`` translates
it into the matching error above and chains the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.peer import transaction_pb2


@dataclass(frozen=True)
class ErrorDetail:
    """What one peer (or orderer) answered when the Gateway asked it to do its part."""

    address: str
    msp_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.address} ({self.msp_id}): {self.message}"


class GatewayError(Exception):
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
    """A step of one transaction failed; ``transaction_id`` names the transaction."""

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


class EvaluateError(TransactionError):
    """Evaluating a transaction (a query that is not sent to the orderer) failed."""

    step = "evaluate"


class EndorseError(TransactionError):
    """The proposal could not be endorsed by enough organisations.

    A chaincode that refuses the transaction ends up here; its message is in ``grpc_message``
    and in the ``details`` of the peers that ran it, unchanged.
    """

    step = "endorse"


class SubmitError(TransactionError):
    """The endorsed transaction could not be sent to the orderer."""

    step = "submit"


class CommitStatusError(TransactionError):
    """The commit status of a submitted transaction could not be obtained (e.g. timeout)."""

    step = "commit status"


class DeliverError(GatewayError):
    """A block event stream ended with a Deliver ``status`` other than SUCCESS."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.status_name = _enum_name(common_pb2.Status, status)
        super().__init__(
            f"block events stream ended with status {status} ({self.status_name})", code=None
        )


class CommitError(Exception):
    """The transaction reached the ledger but was marked invalid by the committing peers.

    ``code`` is the ``TxValidationCode`` number and ``code_name`` its name, for example
    ``"MVCC_READ_CONFLICT"``.
    """

    def __init__(self, transaction_id: str, code: int) -> None:
        self.transaction_id = transaction_id
        self.code = code
        self.code_name = _enum_name(transaction_pb2.TxValidationCode, code)
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
