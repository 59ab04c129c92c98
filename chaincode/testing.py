"""Run contracts without a peer: an in-memory ledger, a recording stub and fake identities.

Example::

    from fedfabric.chaincode.testing import MemoryLedger, fake_identity, invoke

    ledger = MemoryLedger()
    result = await invoke(Assets(), "Put", "a", 1, ledger=ledger)
    assert result.status == 200 and result.rwset.writes == (("a", b"1"),)
    result = await invoke(Assets(), "Get", "a", ledger=ledger,
                          creator=fake_identity("Org2MSP", role="admin"))
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2

from fedfabric.chaincode import _convert
from fedfabric.chaincode._contract import Contract
from fedfabric.chaincode._memory import MemoryLedger, MemoryStub, ReadWriteSet
from fedfabric.chaincode._router import Router

__all__ = [
    "InvokeResult",
    "MemoryLedger",
    "MemoryStub",
    "ReadWriteSet",
    "fake_identity",
    "invoke",
]

DEFAULT_TIMESTAMP = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
_ATTRIBUTES_OID = x509.ObjectIdentifier("1.2.3.4.5.6.7.8.1")


@dataclasses.dataclass(frozen=True)
class InvokeResult:
    """The chaincode response, the chaincode event and the recorded read/write set."""

    status: int
    message: str
    payload: bytes
    event: tuple[str, bytes] | None
    rwset: ReadWriteSet
    tx_id: str


async def invoke(
    contract: Contract | Sequence[Contract],
    function: str,
    *args: Any,
    creator: bytes | None = None,
    transient: Mapping[str, bytes] | None = None,
    ledger: MemoryLedger | None = None,
    channel_id: str = "testchannel",
    timestamp: datetime.datetime = DEFAULT_TIMESTAMP,
    init: bool = False,
    commit: bool | None = None,
) -> InvokeResult:
    """Invoke ``function`` (``Fn`` or ``contract:Fn``) as the peer would, against ``ledger``.

    ``args`` that are not bytes or str are sent as the contract API returns values (JSON).
    ``creator`` is ``SerializedIdentity`` bytes (default: a client of ``Org1MSP``). The writes
    are committed to ``ledger`` when ``commit`` is true; by default, when the call succeeded
    (status < 400) and the function is a ``@submit`` transaction.
    """
    contracts = [contract] if isinstance(contract, Contract) else list(contract)
    router = Router(contracts)
    ledger = ledger if ledger is not None else MemoryLedger()
    creator = creator if creator is not None else _default_creator()
    raw_args = [function.encode()] + [_arg(a) for a in args]
    nonce = hashlib.sha256(b"\x00".join(raw_args)).digest()[:24]
    tx_id = hashlib.sha256(nonce + creator).hexdigest()
    chaincode_input = chaincode_pb2.ChaincodeInput(args=raw_args, is_init=init)
    stub = MemoryStub(
        ledger,
        channel_id=channel_id,
        tx_id=tx_id,
        chaincode_input=chaincode_input,
        signed_proposal=_signed_proposal(
            chaincode_input, channel_id, tx_id, creator, nonce, timestamp, transient or {}
        ),
    )
    response = await router.execute(stub)
    rwset = stub.rwset()
    if commit is None:
        commit = response.status < 400 and _tag(router, function) == "submit"
    if commit:
        ledger.commit(rwset, tx_id=tx_id, timestamp=timestamp)
    return InvokeResult(
        response.status, response.message, response.payload, stub.event, rwset, tx_id
    )


def fake_identity(
    msp_id: str = "Org1MSP",
    *,
    role: str = "client",
    name: str | None = "user1",
    attributes: Mapping[str, str] | None = None,
    locality: str | None = None,
) -> bytes:
    """``SerializedIdentity`` bytes of a self-signed X.509 identity with ``OU=<role>`` and
    ``CN=<name>`` (none when `name` is None), and ``L=<locality>`` if given.

    ``attributes`` are written like Fabric CA attributes (read by
    ``ClientIdentity.attribute``). No peer would accept it; contracts under test do.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    fields = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role)]
    if name is not None:
        fields.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    if locality is not None:
        fields.append(x509.NameAttribute(NameOID.LOCALITY_NAME, locality))
    subject = x509.Name(fields)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC))
    )
    if attributes:
        value = json.dumps({"attrs": dict(attributes)}).encode()
        builder = builder.add_extension(
            x509.UnrecognizedExtension(_ATTRIBUTES_OID, value), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    pem = cert.public_bytes(serialization.Encoding.PEM)
    return identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=pem).SerializeToString()


@functools.cache
def _default_creator() -> bytes:
    return fake_identity()


def _arg(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else _convert.to_bytes(value)


def _tag(router: Router, function: str) -> str | None:
    name, _, fn = function.rpartition(":")
    contract = router.contracts.get(name) if name else router.default
    tx = contract.transactions().get(fn) if contract is not None else None
    return tx.tag if tx is not None else None


def _signed_proposal(
    chaincode_input, channel_id, tx_id, creator, nonce, timestamp, transient
) -> proposal_pb2.SignedProposal:
    channel_header = common_pb2.ChannelHeader(
        type=common_pb2.ENDORSER_TRANSACTION, channel_id=channel_id, tx_id=tx_id
    )
    channel_header.timestamp.FromDatetime(timestamp)
    header = common_pb2.Header(
        channel_header=channel_header.SerializeToString(),
        signature_header=common_pb2.SignatureHeader(
            creator=creator, nonce=nonce
        ).SerializeToString(),
    )
    spec = chaincode_pb2.ChaincodeInvocationSpec(
        chaincode_spec=chaincode_pb2.ChaincodeSpec(input=chaincode_input)
    )
    payload = proposal_pb2.ChaincodeProposalPayload(
        input=spec.SerializeToString(), TransientMap=dict(transient)
    )
    proposal = proposal_pb2.Proposal(
        header=header.SerializeToString(), payload=payload.SerializeToString()
    )
    return proposal_pb2.SignedProposal(proposal_bytes=proposal.SerializeToString())
