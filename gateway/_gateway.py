"""The Gateway: a connection to one peer's Gateway service, for one client identity."""

from __future__ import annotations

import hashlib
from types import TracebackType

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2

from fedfabric.gateway import hash as hashes
from fedfabric.gateway._client import BlockEventsKind, GatewayClient
from fedfabric.gateway._context import Context, SigningIdentity, Timeouts
from fedfabric.gateway._contract import Network
from fedfabric.gateway._events import BlockEventsRequest, ChaincodeEventsRequest
from fedfabric.gateway._identity import Identity
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
    hash: hashes.Hash = hashes.sha256,
    channel: grpc.aio.Channel | None = None,
    endpoint: str | None = None,
    tls_root_cert: bytes | None = None,
    client_cert: bytes | None = None,
    client_key: bytes | None = None,
    server_name_override: str | None = None,
    timeouts: Timeouts | None = None,
) -> Gateway:
    """Connect to a peer's Gateway service as ``identity``.

    Either pass your own ``channel`` (you close it), or an ``endpoint`` ("host:port") with the
    PEM ``tls_root_cert`` of the peer's TLS CA, plus ``client_cert``/``client_key`` for mutual
    TLS; the gateway then owns the channel (message limits raised to 100 MiB) and closes it.
    With your own mutual-TLS channel, also pass ``client_cert`` so block event requests carry
    its hash. Without a ``signer`` every request must be signed offline (``digest()`` and
    ``Gateway.new_signed_*``). Raises ``ValueError`` for inconsistent options.

    Example::

        async with connect(identity=identity, signer=signer, endpoint="127.0.0.1:7051",
                           tls_root_cert=ca_pem) as gateway:
            contract = gateway.get_network("mychannel").get_contract("fl")
            result = await contract.submit("SubmitUpdate", [task_id, "1", update, "600"])
    """
    if (channel is None) == (endpoint is None):
        raise ValueError("pass exactly one of channel= and endpoint=")
    if (client_cert is None) != (client_key is None) and channel is None:
        raise ValueError("mutual TLS needs both client_cert= and client_key=")
    owns_channel = channel is None
    if channel is None:
        assert endpoint is not None  # exactly one of channel= and endpoint=, checked above
        if tls_root_cert is None:
            raise ValueError("endpoint= needs tls_root_cert=")
        channel = open_channel(
            endpoint,
            tls_root_cert=tls_root_cert,
            client_cert=client_cert,
            client_key=client_key,
            server_name_override=server_name_override,
        )
    context = Context(
        client=GatewayClient(channel),
        signing=SigningIdentity(identity, signer, hash),
        timeouts=timeouts or Timeouts(),
        tls_cert_hash=_cert_hash(client_cert) if client_cert else b"",
    )
    return Gateway(context, channel, owns_channel=owns_channel)


class Gateway:
    """A client identity connected to a peer's Gateway service; an async context manager.

    Closing it closes the gRPC channel only if ``connect`` created it.
    """

    def __init__(self, context: Context, channel: grpc.aio.Channel, *, owns_channel: bool):
        self._context = context
        self._channel = channel
        self._owns_channel = owns_channel

    @property
    def identity(self) -> Identity:
        """The client identity."""
        return self._context.signing.identity

    def get_network(self, channel_name: str) -> Network:
        """The network (channel) ``channel_name``."""
        return Network(self._context, channel_name)

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
        self, request_bytes: bytes, signature: bytes, *, kind: BlockEventsKind = "block"
    ) -> BlockEventsRequest:
        """Rebuild a request from ``BlockEventsRequest.bytes()`` with an offline signature."""
        envelope = common_pb2.Envelope.FromString(request_bytes)
        envelope.signature = signature
        return BlockEventsRequest(self._context, envelope, kind)

    async def close(self) -> None:
        """Close the gRPC channel if ``connect`` created it."""
        if self._owns_channel:
            await self._channel.close()

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


def _cert_hash(cert_pem: bytes) -> bytes:
    # Fabric compares this with SHA-256 of the DER certificate seen in the TLS handshake.
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).digest()
