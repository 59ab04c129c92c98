"""Test doubles for the gateway unit tests: TLS material, a fake peer, Fabric-side checks."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import time
from dataclasses import dataclass, field

import grpc
import grpc.aio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import (
    chaincode_pb2,
    events_pb2,
    events_pb2_grpc,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)

from fedfabric.gateway import X509Identity, signers

MSP_ID = "Org1MSP"
SERVER_NAME = "peer0.org1.example.com"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
ENDORSER_MSP_IDS = ("Org1MSP", "Org2MSP")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue_cert(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    issuer_key: ec.EllipticCurvePrivateKey | None = None,
    issuer_name: str | None = None,
    *,
    is_ca: bool = False,
    dns_name: str | None = None,
) -> bytes:
    """A PEM certificate for ``key``, self-signed unless an issuer is given."""
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(issuer_name or common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if dns_name:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: bytes
    server_cert: bytes
    server_key: bytes
    client_cert: bytes
    client_key: bytes


@dataclass(frozen=True)
class User:
    identity: X509Identity
    key: ec.EllipticCurvePrivateKey

    @property
    def signer(self) -> signers.Signer:
        return signers.new_private_key_signer(self.key)

    @property
    def creator(self) -> bytes:
        return identities_pb2.SerializedIdentity(
            mspid=self.identity.msp_id, id_bytes=self.identity.credentials
        ).SerializeToString()


def verify(creator: bytes, message: bytes, signature: bytes) -> bool:
    """Verify as Fabric does: ECDSA over SHA-256(message), low S only."""
    identity = identities_pb2.SerializedIdentity.FromString(creator)
    public_key = x509.load_pem_x509_certificate(identity.id_bytes).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    _, s = decode_dss_signature(signature)
    if s > 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551 // 2:
        return False
    try:
        digest = hashlib.sha256(message).digest()
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    except Exception:
        return False
    return True


def rpc_status(code: int, message: str, details: list[gateway_pb2.ErrorDetail]) -> bytes:
    """google.rpc.Status encoded by hand (protobuf wire format), independent of the client."""

    def length_delimited(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    out = _varint(1 << 3) + _varint(code) + length_delimited(2, message.encode())
    for detail in details:
        any_message = length_delimited(
            1, b"type.googleapis.com/gateway.ErrorDetail"
        ) + length_delimited(2, detail.SerializeToString())
        out += length_delimited(3, any_message)
    return out


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def proposal_hash(proposal: proposal_pb2.Proposal) -> bytes:
    """The endorser's GetProposalHash1: transient data excluded."""
    header = common_pb2.Header.FromString(proposal.header)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    without_transient = proposal_pb2.ChaincodeProposalPayload(input=payload.input)
    return hashlib.sha256(
        header.channel_header + header.signature_header + without_transient.SerializeToString()
    ).digest()


def invocation(signed: proposal_pb2.SignedProposal) -> list[str]:
    """The chaincode name, then the function and arguments a proposal asks to run."""
    proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
    payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    return [spec.chaincode_id.name, *(arg.decode() for arg in spec.input.args)]


@dataclass
class Failure:
    code: grpc.StatusCode
    message: str
    details: list[gateway_pb2.ErrorDetail] = field(default_factory=list)


class FakePeer(gateway_pb2_grpc.GatewayServicer, events_pb2_grpc.DeliverServicer):
    """Plays a peer's Gateway and Deliver services, recording and checking what it receives."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object]] = []
        self.arrived: list[tuple[str, float]] = []  # method, time.monotonic() of each call
        self.failures: dict[str, Failure] = {}
        self.evaluate_payload = b"evaluated"
        self.chaincode_payload = b"endorsed"
        self.commit_code = transaction_pb2.VALID
        self.commit_block = 7
        self.height = 12  # what qscc GetChainInfo answers
        self.hang_commit_status = False
        self.chaincode_events: list[gateway_pb2.ChaincodeEventsResponse] = []
        self.deliver_responses: list[events_pb2.DeliverResponse] = []
        self.client_cert_der: bytes | None = None
        self.stream_closed = asyncio.Event()
        self.called: dict[str, asyncio.Event] = {}  # method -> set once it was called
        self.deadlines: dict[str, float | None] = {}  # method -> seconds left when called
        self.metadata: dict[str, dict[str, str]] = {}  # method -> the call's metadata
        self.commit_status_gate: asyncio.Event | None = None  # CommitStatus waits for it

    def was_called(self, method: str) -> asyncio.Event:
        return self.called.setdefault(method, asyncio.Event())

    def received(self, method: str) -> list:
        return [request for name, request in self.requests if name == method]

    async def _record(self, method: str, request: object, context) -> None:
        self.requests.append((method, request))
        self.arrived.append((method, time.monotonic()))
        self.deadlines[method] = context.time_remaining()
        self.metadata[method] = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        self.was_called(method).set()
        failure = self.failures.get(method)
        if failure is not None:
            status = rpc_status(failure.code.value[0], failure.message, failure.details)
            await context.abort(
                failure.code, failure.message, trailing_metadata=((STATUS_DETAILS_KEY, status),)
            )

    async def Evaluate(self, request, context):
        await self._record("Evaluate", request, context)
        payload = self.evaluate_payload
        if invocation(request.proposed_transaction)[:2] == ["qscc", "GetChainInfo"]:
            payload = ledger_pb2.BlockchainInfo(height=self.height).SerializeToString()
        response = proposal_response_pb2.Response(status=200, payload=payload)
        return gateway_pb2.EvaluateResponse(result=response)

    async def Endorse(self, request, context):
        await self._record("Endorse", request, context)
        return gateway_pb2.EndorseResponse(
            prepared_transaction=self.prepare(request.proposed_transaction)
        )

    def prepare(self, signed: proposal_pb2.SignedProposal) -> common_pb2.Envelope:
        """Assemble the transaction from the proposal as Fabric's gateway does."""
        proposal = proposal_pb2.Proposal.FromString(signed.proposal_bytes)
        header = common_pb2.Header.FromString(proposal.header)
        action = proposal_pb2.ChaincodeAction(
            response=proposal_response_pb2.Response(status=200, payload=self.chaincode_payload)
        )
        response_payload = proposal_response_pb2.ProposalResponsePayload(
            proposal_hash=proposal_hash(proposal), extension=action.SerializeToString()
        ).SerializeToString()
        endorsements = [
            proposal_response_pb2.Endorsement(endorser=msp_id.encode(), signature=b"sig")
            for msp_id in ENDORSER_MSP_IDS
        ]
        cpp = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        action_payload = transaction_pb2.ChaincodeActionPayload(
            chaincode_proposal_payload=proposal_pb2.ChaincodeProposalPayload(
                input=cpp.input
            ).SerializeToString(),
            action=transaction_pb2.ChaincodeEndorsedAction(
                proposal_response_payload=response_payload, endorsements=endorsements
            ),
        )
        transaction = transaction_pb2.Transaction(
            actions=[
                transaction_pb2.TransactionAction(
                    header=header.signature_header, payload=action_payload.SerializeToString()
                )
            ]
        )
        payload = common_pb2.Payload(header=header, data=transaction.SerializeToString())
        return common_pb2.Envelope(payload=payload.SerializeToString())

    async def Submit(self, request, context):
        await self._record("Submit", request, context)
        return gateway_pb2.SubmitResponse()

    async def CommitStatus(self, request, context):
        await self._record("CommitStatus", request, context)
        if self.hang_commit_status:
            await asyncio.Event().wait()
        if self.commit_status_gate is not None:
            await self.commit_status_gate.wait()
        return gateway_pb2.CommitStatusResponse(
            result=self.commit_code, block_number=self.commit_block
        )

    async def ChaincodeEvents(self, request, context):
        await self._record("ChaincodeEvents", request, context)
        try:
            for response in self.chaincode_events:
                yield response
            await asyncio.Event().wait()  # like Fabric, the stream never ends by itself
        finally:
            self.stream_closed.set()

    async def Deliver(self, request_iterator, context):
        async for envelope in self._deliver("Deliver", request_iterator, context):
            yield envelope

    async def DeliverFiltered(self, request_iterator, context):
        async for envelope in self._deliver("DeliverFiltered", request_iterator, context):
            yield envelope

    async def DeliverWithPrivateData(self, request_iterator, context):
        async for envelope in self._deliver("DeliverWithPrivateData", request_iterator, context):
            yield envelope

    async def _deliver(self, method, request_iterator, context):
        envelope = await anext(aiter(request_iterator))
        certs = context.auth_context().get("x509_pem_cert")
        if certs:
            self.client_cert_der = x509.load_pem_x509_certificate(certs[0]).public_bytes(
                serialization.Encoding.DER
            )
        await self._record(method, envelope, context)
        for response in self.deliver_responses:
            yield response


@dataclass
class PeerServer:
    peer: FakePeer
    endpoint: str
    server: grpc.aio.Server


async def start_peer(tls: TlsMaterial, *, mutual_tls: bool = False) -> PeerServer:
    peer = FakePeer()
    limit = 100 * 1024 * 1024
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", limit),
            ("grpc.max_receive_message_length", limit),
        ]
    )
    gateway_pb2_grpc.add_GatewayServicer_to_server(peer, server)
    events_pb2_grpc.add_DeliverServicer_to_server(peer, server)
    credentials = grpc.ssl_server_credentials(
        [(tls.server_key, tls.server_cert)],
        root_certificates=tls.ca_cert if mutual_tls else None,
        require_client_auth=mutual_tls,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return PeerServer(peer, f"127.0.0.1:{port}", server)
