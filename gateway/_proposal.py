"""Transaction proposals: build, digest, sign, then evaluate or endorse."""

from __future__ import annotations

import builtins  # `bytes()` methods shadow the builtin in their class's annotations
from collections.abc import Mapping, Sequence

from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2

from fedfabric.gateway._context import Context, new_nonce, transaction_id
from fedfabric.gateway._options import UNSET, CallOptions, Timeouts, _Unset
from fedfabric.gateway._transaction import Transaction

Argument = str | bytes
"""One argument of a transaction function: text (sent as UTF-8) or bytes."""


def check_arguments(args: Sequence[Argument]) -> list[bytes]:
    """The arguments as bytes; ``TypeError`` for a bare ``str`` or ``bytes`` (a sequence of
    characters or byte values, almost certainly a mistake for ``[value]``) or for an element
    that is neither text nor bytes."""
    if isinstance(args, str | bytes | bytearray | memoryview):
        raise TypeError(
            f"args must be a list of arguments, not a bare {type(args).__name__}: "
            f"write [{args!r}] for one argument"
        )
    out = []
    for index, value in enumerate(args):
        if isinstance(value, str):
            out.append(value.encode())
        elif isinstance(value, bytes | bytearray | memoryview):
            out.append(bytes(value))
        else:
            raise TypeError(f"args[{index}] must be str or bytes, not {type(value).__name__}")
    return out


def build_proposal(
    context: Context,
    *,
    channel_id: str,
    chaincode: str,
    transaction_name: str,
    args: Sequence[Argument] = (),
    transient: Mapping[str, bytes] | None = None,
    endorsing_orgs: Sequence[str] | None = None,
) -> Proposal:
    """Build an unsigned proposal for ``transaction_name`` with arguments ``args``."""
    arguments = check_arguments(args)
    creator = context.signing.creator
    nonce = new_nonce()
    tx_id = transaction_id(nonce, creator)
    chaincode_id = chaincode_pb2.ChaincodeID(name=chaincode)
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION,
        channel_id=channel_id,
        tx_id=tx_id,
        epoch=0,
        extension=proposal_pb2.ChaincodeHeaderExtension(
            chaincode_id=chaincode_id
        ).SerializeToString(),
    )
    channel_header.timestamp.GetCurrentTime()
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(
            creator=creator, nonce=nonce
        ).SerializeToString(),
    )
    spec = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(
            chaincode_id=chaincode_id,
            input=chaincode_pb2.ChaincodeInput(args=[transaction_name.encode(), *arguments]),
        )
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=spec.SerializeToString(), TransientMap=dict(transient or {})
    )
    proposal = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    )
    proposed = gateway_pb2.ProposedTransaction(
        transaction_id=tx_id,
        proposal=proposal_pb2.SignedProposal(proposal_bytes=proposal.SerializeToString()),
        endorsing_organizations=list(endorsing_orgs or ()),
    )
    return Proposal(context, proposed)


class Proposal:
    """A transaction proposal, signed or waiting for an offline signature.

    ``evaluate()`` runs it as a query; ``endorse()`` collects endorsements and returns the
    ``Transaction`` to submit. ``bytes()`` and ``digest()`` serve offline signing
    (``Gateway.new_signed_proposal``).
    """

    def __init__(self, context: Context, proposed: gateway_pb2.ProposedTransaction) -> None:
        self._context = context
        self._proposed = proposed
        header = common_pb2.Header.FromString(
            proposal_pb2.Proposal.FromString(proposed.proposal.proposal_bytes).header
        )
        self._channel_id = common_pb2.ChannelHeader.FromString(header.channel_header).channel_id

    @property
    def transaction_id(self) -> str:
        """The id of the transaction this proposal starts."""
        return self._proposed.transaction_id

    @property
    def channel_id(self) -> str:
        """The channel the proposal is addressed to."""
        return self._channel_id

    def bytes(self) -> builtins.bytes:
        """The serialized ``gateway.ProposedTransaction`` (with its signature, if any)."""
        return self._proposed.SerializeToString()

    def digest(self) -> builtins.bytes:
        """The hash of the proposal bytes: what an offline signer signs."""
        return self._context.signing.digest(self._proposed.proposal.proposal_bytes)

    async def evaluate(
        self, *, timeout: float | None | _Unset = UNSET, call_options: CallOptions | None = None
    ) -> builtins.bytes:
        """Run the proposal on a peer without ordering it; return the chaincode's payload.

        ``timeout`` in seconds (``None``: no deadline) replaces the gateway's ``evaluate``
        timeout. Raises ``EvaluateError`` if the peer or the chaincode reports an error.
        """
        request = gateway_pb2.EvaluateRequest(
            transaction_id=self.transaction_id,
            channel_id=self._channel_id,
            proposed_transaction=await self._signed(),
            target_organizations=self._proposed.endorsing_organizations,
        )
        response = await self._context.client.call(
            "Evaluate",
            request,
            transaction_id=self.transaction_id,
            timeout=Timeouts(evaluate=timeout).over(self._context.timeouts).seconds("evaluate"),
            options=call_options,
        )
        return bytes(response.result.payload)

    async def endorse(
        self, *, timeout: float | None | _Unset = UNSET, call_options: CallOptions | None = None
    ) -> Transaction:
        """Have the proposal endorsed; return the (unsigned until submitted) transaction.

        ``timeout`` as for ``evaluate``, replacing the gateway's ``endorse`` timeout. Raises
        ``EndorseError`` if not enough organisations endorse it, for example because the
        chaincode refused the transaction.
        """
        request = gateway_pb2.EndorseRequest(
            transaction_id=self.transaction_id,
            channel_id=self._channel_id,
            proposed_transaction=await self._signed(),
            endorsing_organizations=self._proposed.endorsing_organizations,
        )
        response = await self._context.client.call(
            "Endorse",
            request,
            transaction_id=self.transaction_id,
            timeout=Timeouts(endorse=timeout).over(self._context.timeouts).seconds("endorse"),
            options=call_options,
        )
        prepared = gateway_pb2.PreparedTransaction(
            transaction_id=self.transaction_id, envelope=response.prepared_transaction
        )
        return Transaction(self._context, prepared)

    async def _signed(self) -> proposal_pb2.SignedProposal:
        signed = self._proposed.proposal
        if not signed.signature:
            signed.signature = await self._context.signing.sign(signed.proposal_bytes)
        return signed
