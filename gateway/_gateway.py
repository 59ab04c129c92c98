"""The Gateway: a connection to a peer's Gateway service (one of several, with failover),
for one client identity."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import TracebackType

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2

from fedfabric.gateway import hash as hashes
from fedfabric.gateway._client import SUBMIT_LINGER, GatewayClient
from fedfabric.gateway._context import Context, SigningIdentity
from fedfabric.gateway._contract import Network
from fedfabric.gateway._events import (
    BlockAndPrivateDataEventsRequest,
    BlockEventsRequest,
    ChaincodeEventsRequest,
    FilteredBlockEventsRequest,
)
from fedfabric.gateway._identity import Identity, hash_for_identity
from fedfabric.gateway._options import Timeouts
from fedfabric.gateway._proposal import Proposal
from fedfabric.gateway._transaction import Commit, Transaction
from fedfabric.gateway.signers import Signer

# The largest gRPC message either way: Fabric peers' own default limit (a model update of up
# to `fedfabric.chaincode.fl.MAX_UPDATE_BYTES` travels twice in one transaction).
MAX_MESSAGE_SIZE = 100 * 1024 * 1024


def open_channel(
    endpoint: str,
    *,
    tls_root_cert: bytes,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    server_name_override: str | None = None,
) -> grpc.aio.Channel:
    """A TLS gRPC channel to a peer (mutual TLS with `client_cert`/`client_key`), with message
    limits raised to `MAX_MESSAGE_SIZE`. The caller closes it; any number of `connect`
    gateways (one per identity) can share it."""
    credentials = grpc.ssl_channel_credentials(tls_root_cert, client_key, client_cert)
    options: list[tuple[str, str | int]] = [
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ]
    if server_name_override:
        options.append(("grpc.ssl_target_name_override", server_name_override))
    return grpc.aio.secure_channel(endpoint, credentials, options=options)


def connect(
    *,
    identity: Identity,
    signer: Signer | None = None,
    hash: hashes.Hash | None = None,
    channel: grpc.aio.Channel | None = None,
    endpoint: str | Sequence[str] | None = None,
    tls_root_cert: bytes | None = None,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    server_name_override: str | None = None,
    timeouts: Timeouts | None = None,
    submit_linger: float = SUBMIT_LINGER,
) -> Gateway:
    """Connect to a peer's Gateway service as ``identity``.

    Either pass your own ``channel`` (you close it), or an ``endpoint`` ("host:port") with the
    PEM ``tls_root_cert`` of the peer's TLS CA, plus ``client_cert``/``client_key`` for mutual
    TLS; the gateway then owns the channel (message limits raised to 100 MiB) and closes it.
    ``endpoint`` may be a list of peers of the organisation (one TLS CA): calls go to the
    first, and move on to the next when a peer cannot be reached (failover).
    With your own mutual-TLS channel, also pass ``client_cert`` so block event requests carry
    its hash. Without a ``signer`` every request must be signed offline (``digest()`` and
    ``Gateway.new_signed_*``). ``hash`` defaults to what the identity's key needs
    (``hash.none`` for Ed25519, else ``hash.sha256``). ``timeouts`` replace the built-in
    ones step by step. ``submit_linger``: seconds a submit may wait, while this gateway has
    32 or more calls in flight, for others to go with it (fuller blocks; 0: never wait).
    Raises ``ValueError`` for inconsistent options.

    Example::

        async with connect(identity=identity, signer=signer, endpoint="127.0.0.1:7051",
                           tls_root_cert=ca_pem) as gateway:
            contract = gateway.get_network("mychannel").get_contract("fl")
            result = await contract.submit("SubmitUpdate", [task_id, "1", update, "600"])
    """
    if (channel is None) == (endpoint is None):
        raise ValueError("pass exactly one of channel= and endpoint=")
    if not submit_linger >= 0:  # also refuses NaN
        raise ValueError(f"submit_linger must be >= 0 seconds, got {submit_linger!r}")
    if (client_cert is None) != (client_key is None) and channel is None:
        raise ValueError("mutual TLS needs both client_cert= and client_key=")
    if channel is not None:
        channels = [channel]
    else:
        endpoints = [endpoint] if isinstance(endpoint, str) else list(endpoint or ())
        if not endpoints:
            raise ValueError("endpoint= needs at least one peer address")
        if tls_root_cert is None:
            raise ValueError("endpoint= needs tls_root_cert=")
        channels = [
            open_channel(
                address,
                tls_root_cert=tls_root_cert,
                client_cert=client_cert,
                client_key=client_key,
                server_name_override=server_name_override,
            )
            for address in endpoints
        ]
    context = Context(
        client=GatewayClient(channels, submit_linger=submit_linger),
        signing=SigningIdentity(identity, signer, hash or hash_for_identity(identity)),
        timeouts=timeouts or Timeouts(),
        tls_cert_hash=_cert_hash(client_cert) if client_cert else b"",
    )
    return Gateway(context, channels if channel is None else [])


class Gateway:
    """A client identity connected to a peer's Gateway service; an async context manager.

    Closing it ends its calls in order (see ``close``) and closes the gRPC channels that
    ``connect`` created.
    """

    def __init__(self, context: Context, owned_channels: Sequence[grpc.aio.Channel]):
        self._context = context
        self._owned_channels = list(owned_channels)

    @property
    def identity(self) -> Identity:
        """The client identity."""
        return self._context.signing.identity

    def get_network(self, channel_name: str) -> Network:
        """The network (channel) ``channel_name``."""
        return Network(self._context, channel_name)

    # Unsigned re-creation: a request built (and maybe stored or sent) elsewhere, from its
    # bytes(); it is signed by this gateway's signer when used.
    def new_proposal(self, proposal_bytes: bytes) -> Proposal:
        """A proposal from ``Proposal.bytes()`` (signed by this gateway's signer when sent,
        unless the bytes carry a signature)."""
        return Proposal(self._context, gateway_pb2.ProposedTransaction.FromString(proposal_bytes))

    def new_transaction(self, transaction_bytes: bytes) -> Transaction:
        """A transaction from ``Transaction.bytes()``."""
        prepared = gateway_pb2.PreparedTransaction.FromString(transaction_bytes)
        return Transaction(self._context, prepared)

    def new_commit(self, commit_bytes: bytes) -> Commit:
        """A commit from ``Commit.bytes()``."""
        signed = gateway_pb2.SignedCommitStatusRequest.FromString(commit_bytes)
        return Commit(self._context, signed)

    def new_chaincode_events_request(self, request_bytes: bytes) -> ChaincodeEventsRequest:
        """A chaincode events request from ``ChaincodeEventsRequest.bytes()``."""
        signed = gateway_pb2.SignedChaincodeEventsRequest.FromString(request_bytes)
        return ChaincodeEventsRequest(self._context, signed)

    def new_block_events_request(self, request_bytes: bytes) -> BlockEventsRequest:
        """A block events request from ``BlockEventsRequest.bytes()``."""
        return BlockEventsRequest(self._context, common_pb2.Envelope.FromString(request_bytes))

    def new_filtered_block_events_request(self, request_bytes: bytes) -> FilteredBlockEventsRequest:
        """A filtered block events request from ``FilteredBlockEventsRequest.bytes()``."""
        envelope = common_pb2.Envelope.FromString(request_bytes)
        return FilteredBlockEventsRequest(self._context, envelope)

    def new_block_and_private_data_events_request(
        self, request_bytes: bytes
    ) -> BlockAndPrivateDataEventsRequest:
        """A request from ``BlockAndPrivateDataEventsRequest.bytes()``."""
        envelope = common_pb2.Envelope.FromString(request_bytes)
        return BlockAndPrivateDataEventsRequest(self._context, envelope)

    # Offline signing: the same, with the signature made elsewhere over its digest().
    def new_signed_proposal(self, proposal_bytes: bytes, signature: bytes) -> Proposal:
        """Rebuild a proposal from ``Proposal.bytes()`` with an offline ``signature``."""
        proposed = gateway_pb2.ProposedTransaction.FromString(proposal_bytes)
        proposed.proposal.signature = signature
        return Proposal(self._context, proposed)

    def new_signed_transaction(self, transaction_bytes: bytes, signature: bytes) -> Transaction:
        """Rebuild a transaction from ``Transaction.bytes()`` with an offline ``signature``."""
        prepared = gateway_pb2.PreparedTransaction.FromString(transaction_bytes)
        prepared.envelope.signature = signature
        return Transaction(self._context, prepared)

    def new_signed_commit(self, commit_bytes: bytes, signature: bytes) -> Commit:
        """Rebuild a commit from ``Commit.bytes()`` with an offline ``signature``."""
        signed = gateway_pb2.SignedCommitStatusRequest.FromString(commit_bytes)
        signed.signature = signature
        return Commit(self._context, signed)

    def new_signed_chaincode_events_request(
        self, request_bytes: bytes, signature: bytes
    ) -> ChaincodeEventsRequest:
        """Rebuild a request from ``ChaincodeEventsRequest.bytes()`` with an offline signature."""
        signed = gateway_pb2.SignedChaincodeEventsRequest.FromString(request_bytes)
        signed.signature = signature
        return ChaincodeEventsRequest(self._context, signed)

    def new_signed_block_events_request(
        self, request_bytes: bytes, signature: bytes
    ) -> BlockEventsRequest:
        """Rebuild a request from ``BlockEventsRequest.bytes()`` with an offline signature."""
        return BlockEventsRequest(self._context, _signed_envelope(request_bytes, signature))

    def new_signed_filtered_block_events_request(
        self, request_bytes: bytes, signature: bytes
    ) -> FilteredBlockEventsRequest:
        """Rebuild a request from ``FilteredBlockEventsRequest.bytes()`` with a signature."""
        envelope = _signed_envelope(request_bytes, signature)
        return FilteredBlockEventsRequest(self._context, envelope)

    def new_signed_block_and_private_data_events_request(
        self, request_bytes: bytes, signature: bytes
    ) -> BlockAndPrivateDataEventsRequest:
        """Rebuild a request from ``BlockAndPrivateDataEventsRequest.bytes()`` with a
        signature."""
        envelope = _signed_envelope(request_bytes, signature)
        return BlockAndPrivateDataEventsRequest(self._context, envelope)

    async def close(self, *, grace: float | None = 5.0) -> None:
        """Close the gateway in order: new calls raise ``GatewayClosedError`` at once;
        calls in flight (event streams included) may finish for ``grace`` seconds (``None``:
        however long they take), then are cancelled and raise ``GatewayClosedError``; last,
        the gRPC channels that ``connect`` created are closed. Closing twice is harmless."""
        await self._context.client.close(grace)
        for channel in self._owned_channels:
            await channel.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _signed_envelope(request_bytes: bytes, signature: bytes) -> common_pb2.Envelope:
    envelope = common_pb2.Envelope.FromString(request_bytes)
    envelope.signature = signature
    return envelope


def _cert_hash(cert_pem: bytes) -> bytes:
    # Fabric compares this with SHA-256 of the DER certificate seen in the TLS handshake.
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()
