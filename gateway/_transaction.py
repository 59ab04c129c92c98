"""Endorsed transactions and their commits."""

from __future__ import annotations

import builtins  # `bytes()` methods shadow the builtin in their class's annotations
from dataclasses import dataclass

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import proposal_pb2, proposal_response_pb2, transaction_pb2

from fedfabric.gateway._context import Context
from fedfabric.gateway._errors import _enum_name
from fedfabric.gateway._options import UNSET, CallOptions, Timeouts, _Unset


class Transaction:
    """An endorsed transaction, ready to be signed and submitted to the orderer.

    ``result`` is what the chaincode returned. ``bytes()`` and ``digest()`` serve offline
    signing (``Gateway.new_signed_transaction``).
    """

    def __init__(self, context: Context, prepared: gateway_pb2.PreparedTransaction) -> None:
        self._context = context
        self._prepared = prepared
        payload = common_pb2.Payload.FromString(prepared.envelope.payload)
        self._channel_id = common_pb2.ChannelHeader.FromString(
            payload.header.channel_header
        ).channel_id
        self._result = _chaincode_result(payload)

    @property
    def transaction_id(self) -> str:
        """The transaction id."""
        return self._prepared.transaction_id

    @property
    def result(self) -> builtins.bytes:
        """The payload the chaincode returned when endorsing the transaction."""
        return self._result

    def bytes(self) -> builtins.bytes:
        """The serialized ``gateway.PreparedTransaction`` (with its signature, if any)."""
        return self._prepared.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the envelope payload: what an offline signer signs."""
        return self._context.signing.digest(self._prepared.envelope.payload)

    async def submit(
        self, *, timeout: float | None | _Unset = UNSET, call_options: CallOptions | None = None
    ) -> SubmittedTransaction:
        """Sign (unless signed offline) and send the transaction to the orderer.

        Returns the ``SubmittedTransaction`` (a ``Commit`` with the chaincode's ``result``) to
        wait on. ``timeout`` in seconds (``None``: no deadline) replaces the gateway's
        ``submit`` timeout. Raises ``SubmitError`` if it was not accepted.
        """
        envelope = self._prepared.envelope
        if not envelope.signature:
            envelope.signature = await self._context.signing.sign(envelope.payload)
        request = gateway_pb2.SubmitRequest(
            transaction_id=self.transaction_id,
            channel_id=self._channel_id,
            prepared_transaction=envelope,
        )
        await self._context.client.call(
            "Submit",
            request,
            transaction_id=self.transaction_id,
            timeout=Timeouts(submit=timeout).over(self._context.timeouts).seconds("submit"),
            options=call_options,
        )
        status_request = gateway_pb2.CommitStatusRequest(
            transaction_id=self.transaction_id,
            channel_id=self._channel_id,
            identity=self._context.signing.creator,
        )
        return SubmittedTransaction(
            self._context,
            gateway_pb2.SignedCommitStatusRequest(request=status_request.SerializeToString()),
            self._result,
        )


@dataclass(frozen=True)
class Status:
    """The outcome of a committed transaction: its validation ``code`` and block."""

    transaction_id: str
    code: int
    block_number: int

    @property
    def successful(self) -> bool:
        """Whether the transaction is VALID and so changed the ledger state."""
        return self.code == transaction_pb2.VALID

    @property
    def code_name(self) -> str:
        """The ``TxValidationCode`` name, for example ``"MVCC_READ_CONFLICT"``."""
        return _enum_name(transaction_pb2.TxValidationCode, self.code)


class Commit:
    """A submitted transaction whose commit status can be awaited.

    ``bytes()`` and ``digest()`` serve offline signing (``Gateway.new_signed_commit``).
    """

    def __init__(self, context: Context, signed: gateway_pb2.SignedCommitStatusRequest) -> None:
        self._context = context
        self._signed = signed
        self._request = gateway_pb2.CommitStatusRequest.FromString(signed.request)

    @property
    def transaction_id(self) -> str:
        """The transaction id."""
        return self._request.transaction_id

    def bytes(self) -> builtins.bytes:
        """The serialized ``gateway.SignedCommitStatusRequest``."""
        return self._signed.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the commit status request: what an offline signer signs."""
        return self._context.signing.digest(self._signed.request)

    async def status(
        self, *, timeout: float | None | _Unset = UNSET, call_options: CallOptions | None = None
    ) -> Status:
        """Wait until the transaction is committed and return its ``Status``.

        An invalid transaction is a ``Status`` with ``successful`` false, not an error.
        ``timeout`` in seconds (``None``: no deadline) replaces the gateway's
        ``commit_status`` timeout. Raises ``CommitStatusError`` if the status cannot be
        obtained (e.g. timeout).
        """
        if not self._signed.signature:
            self._signed.signature = await self._context.signing.sign(self._signed.request)
        limits = Timeouts(commit_status=timeout).over(self._context.timeouts)
        response = await self._context.client.call(
            "CommitStatus",
            self._signed,
            transaction_id=self.transaction_id,
            timeout=limits.seconds("commit_status"),
            options=call_options,
        )
        return Status(self.transaction_id, response.result, response.block_number)


class SubmittedTransaction(Commit):
    """A transaction accepted by the orderer: the chaincode's ``result`` now, its ``Commit``
    status when awaited (``status()``), as Node's ``submitAsync`` returns."""

    def __init__(
        self, context: Context, signed: gateway_pb2.SignedCommitStatusRequest, result: bytes
    ) -> None:
        super().__init__(context, signed)
        self._result = result

    @property
    def result(self) -> builtins.bytes:
        """The payload the chaincode returned when endorsing the transaction."""
        return self._result


def _chaincode_result(payload: common_pb2.Payload) -> bytes:
    transaction = transaction_pb2.Transaction.FromString(payload.data)
    for action in transaction.actions:
        action_payload = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
        response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
            action_payload.action.proposal_response_payload
        )
        chaincode_action = proposal_pb2.ChaincodeAction.FromString(response_payload.extension)
        return bytes(chaincode_action.response.payload)
    raise ValueError("prepared transaction has no actions")
