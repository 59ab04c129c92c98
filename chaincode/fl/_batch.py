"""Device batches: many devices' signed updates in one ``SubmitBatch`` transaction.

An organisation's gateway identity collects the updates of its devices and submits them
together; each update stays signed by its own device, whose certificate the organisation's
CA issued. The contract checks every entry on its own (`verify_certificate`,
`verify_signature`, then every check of ``SubmitUpdate``) and records each accepted one
exactly as ``SubmitUpdate`` would.

Batch encoding (``SubmitBatch``'s third argument; all integers unsigned big-endian)::

    b"FLB1"                                  magic and version
    u32  entries                             1..MAX_BATCH_ENTRIES
    then per entry:
    u32  certificate length, certificate     the device's X.509 certificate, DER
    u32  update length, update               the encoded update (`encode_update`)
    u32  num_samples
    u16  signature length, signature         the device's ECDSA signature (DER) of
                                             `entry_message`, over its SHA-256

Nothing may follow the last entry. The signed message binds the channel, task, round,
the update's SHA-256 and the sample count, so a signed update cannot be replayed into another
channel, task or round, nor given another weight::

    b"fedfabric.fl.batch-entry.v1\\0" channel \\0 task \\0 round \\0 sha256-hex \\0 num_samples

(round and num_samples in decimal). A client signs it with a Fabric signer:
``signer(hashlib.sha256(entry_message(...)).digest())``.

Certificates are checked against the issuing organisation's CA certificate only (the roots
in the channel's MSP: the chaincode server's ``ca_certs`` setting, a folder of
``<MSP id>.pem``): issuer name, the CA's signature, and validity at the transaction's
timestamp (the proposal's, so every endorser decides the same; the submitting organisation
sets it, so expiry binds its devices, not the organisation itself), and no CA certificate as
a device. Intermediate CAs and CRLs are not consulted; an organisation stops a device with
``RemoveWorkers``.
"""

from __future__ import annotations

import datetime
import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from fedfabric.chaincode import enrollment_id
from fedfabric.chaincode.fl._errors import UpdateError
from fedfabric.chaincode.fl._task import MAX_UPDATE_BYTES

MAGIC = b"FLB1"
MAX_BATCH_ENTRIES = 2000
"""The most entries a batch may hold: bounds one endorsement's work (about 1 ms an entry)."""
MAX_CERT_BYTES = 8192
MAX_SIGNATURE_BYTES = 139  # a DER ECDSA signature on P-521, the largest curve

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_DOMAIN = b"fedfabric.fl.batch-entry.v1\x00"


@dataclass(frozen=True)
class BatchEntry:
    """One device's update in a batch: certificate (DER), encoded update, claimed samples
    and the device's signature of `entry_message`."""

    certificate: bytes
    update: bytes
    num_samples: int
    signature: bytes


@dataclass(frozen=True)
class Device:
    """A device whose certificate its organisation's CA issued: enrolment id (as
    ``RegisterWorkers`` takes it), subject and public key."""

    enrolment: str
    subject: str
    key: ec.EllipticCurvePublicKey


def entry_message(channel: str, task: str, round_no: int, update: bytes, num_samples: int) -> bytes:
    """The bytes a device signs for its update (see the module docstring)."""
    parts = [channel, task, str(round_no), hashlib.sha256(update).hexdigest(), str(num_samples)]
    return _DOMAIN + b"\x00".join(p.encode() for p in parts)


def encode_batch(entries: Sequence[BatchEntry]) -> bytes:
    """The batch bytes of `entries`. Raises ValueError for an empty batch, more than
    `MAX_BATCH_ENTRIES` entries, or a field that does not fit its length prefix."""
    if not 1 <= len(entries) <= MAX_BATCH_ENTRIES:
        raise ValueError(f"a batch holds 1..{MAX_BATCH_ENTRIES} entries, got {len(entries)}")
    out = [MAGIC, _U32.pack(len(entries))]
    for e in entries:
        if len(e.signature) > MAX_SIGNATURE_BYTES or not 0 <= e.num_samples < 2**32:
            raise ValueError("a batch entry's signature or num_samples is out of range")
        out += [_U32.pack(len(e.certificate)), e.certificate, _U32.pack(len(e.update)), e.update]
        out += [_U32.pack(e.num_samples), _U16.pack(len(e.signature)), e.signature]
    return b"".join(out)


def entry_size(entry: BatchEntry) -> int:
    """Bytes `entry` adds to an encoded batch."""
    return 14 + len(entry.certificate) + len(entry.update) + len(entry.signature)


def decode_batch(data: bytes) -> list[BatchEntry]:
    """The entries of an encoded batch. Raises `UpdateError` (check ``batch-format``) for
    anything that is not exactly one well-formed batch within the limits (an update up to
    `MAX_UPDATE_BYTES`: the task's own ``max_update_bytes`` refuses an entry alone)."""
    view = memoryview(data)
    if bytes(view[:4]) != MAGIC or len(view) < 8:
        raise UpdateError("batch-format", f"not a batch: expected the magic {MAGIC!r}")
    (count,) = _U32.unpack_from(view, 4)
    if not 1 <= count <= MAX_BATCH_ENTRIES:
        raise UpdateError("batch-format", f"{count} entries; a batch holds 1..{MAX_BATCH_ENTRIES}")
    at, entries = 8, list[BatchEntry]()

    def take(n: int, what: str) -> bytes:
        nonlocal at
        if at + n > len(view):
            raise UpdateError("batch-format", f"entry {len(entries)}: {what} runs past the end")
        at += n
        return bytes(view[at - n : at])

    def sized(prefix: struct.Struct, limit: int, what: str) -> bytes:
        (n,) = prefix.unpack(take(prefix.size, f"{what} length"))
        if n > limit:
            raise UpdateError(
                "batch-format", f"entry {len(entries)}: {what} of {n} bytes exceeds {limit}"
            )
        return take(n, what)

    for _ in range(count):
        cert = sized(_U32, MAX_CERT_BYTES, "certificate")
        update = sized(_U32, MAX_UPDATE_BYTES, "update")
        (samples,) = _U32.unpack(take(4, "num_samples"))
        signature = sized(_U16, MAX_SIGNATURE_BYTES, "signature")
        entries.append(BatchEntry(cert, update, samples, signature))
    if at != len(view):
        raise UpdateError("batch-format", f"{len(view) - at} bytes follow the last entry")
    return entries


class Authorities:
    """The CA certificates of the channel's organisations, read once from a folder of
    ``<MSP id>.pem`` (the ``ca_certs`` setting); missing folder or file: no CA for that org."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self._cas: dict[str, x509.Certificate | None] = {}

    def ca(self, msp_id: str) -> x509.Certificate | None:
        """`msp_id`'s CA certificate, or None when this endorser has none configured."""
        if msp_id not in self._cas:
            path = self.folder / f"{msp_id}.pem" if self.folder else None
            found = None
            if path is not None and path.is_file():
                found = x509.load_pem_x509_certificate(path.read_bytes())
            self._cas[msp_id] = found
        return self._cas[msp_id]


def verify_certificate(
    certificate: bytes, msp_id: str, ca: x509.Certificate | None, when: datetime.datetime | None
) -> Device:
    """The device of a certificate (DER) that `ca` (`msp_id`'s CA) issued and that is valid
    at `when`. Pure and deterministic. Raises `UpdateError` (check ``certificate``): not
    parseable, not issued by `ca`, no CA configured, not valid at `when`, a CA certificate,
    no enrolment id, not an ECDSA key."""
    if ca is None:
        raise UpdateError(
            "certificate",
            f"this endorser has no CA certificate for {msp_id} (chaincode server setting "
            "ca_certs: a folder of <MSP id>.pem)",
        )
    try:
        cert = x509.load_der_x509_certificate(certificate)
    except ValueError as exc:
        raise UpdateError("certificate", f"not a DER X.509 certificate: {exc}") from exc
    subject = cert.subject.rfc4514_string()
    if cert.issuer != ca.subject:
        raise UpdateError("certificate", f"{subject} was not issued by {msp_id}'s CA")
    ca_key = ca.public_key()
    algorithm = cert.signature_hash_algorithm
    try:
        if not isinstance(ca_key, ec.EllipticCurvePublicKey) or algorithm is None:
            raise InvalidSignature
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algorithm))
    except InvalidSignature as exc:
        raise UpdateError(
            "certificate", f"{subject}: the signature is not {msp_id}'s CA's"
        ) from exc
    if when is None:
        raise UpdateError("certificate", "the proposal has no timestamp to check validity at")
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise UpdateError(
            "certificate",
            f"{subject} is valid {cert.not_valid_before_utc.isoformat()} to "
            f"{cert.not_valid_after_utc.isoformat()}, not at {when.isoformat()}",
        )
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise UpdateError("certificate", f"{subject} is a CA certificate, not a device's")
    enrolment = enrollment_id(cert)
    if not enrolment:
        raise UpdateError("certificate", f"{subject} has no enrolment id (hf.EnrollmentID or CN)")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UpdateError("certificate", f"{subject}: only ECDSA device keys are supported")
    return Device(enrolment, subject, key)


def verify_signature(device: Device, signature: bytes, message: bytes) -> None:
    """Check that `device` signed `message` (ECDSA over its SHA-256). Raises `UpdateError`
    (check ``signature``)."""
    try:
        device.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError) as exc:
        raise UpdateError(
            "signature",
            f"{device.subject} did not sign this update for this channel, task, round and "
            "sample count",
        ) from exc
