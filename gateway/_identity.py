"""Client identities and loading them (and their keys) from PEM files or an MSP folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from fabric_protos.msp import identities_pb2

from fedfabric.gateway import hash as hashes
from fedfabric.gateway.signers import Signer, new_private_key_signer


class Identity(Protocol):
    """Who the client is: an MSP id and the credentials that MSP understands."""

    @property
    def msp_id(self) -> str: ...

    @property
    def credentials(self) -> bytes: ...


@dataclass(frozen=True)
class X509Identity:
    """An X.509 identity: ``msp_id`` and the PEM-encoded certificate (``credentials``)."""

    msp_id: str
    credentials: bytes

    def __post_init__(self) -> None:
        x509.load_pem_x509_certificate(self.credentials)  # fail early on a bad certificate


def serialize_identity(identity: Identity) -> bytes:
    """The ``msp.SerializedIdentity`` bytes Fabric uses as creator / endorser / identity."""
    return identities_pb2.SerializedIdentity(
        mspid=identity.msp_id, id_bytes=identity.credentials
    ).SerializeToString()


def load_identity(msp_id: str, cert_path: str | Path) -> X509Identity:
    """Read an ``X509Identity`` from a PEM certificate file.

    Raises ``OSError`` if the file cannot be read and ``ValueError`` naming the file if it holds
    no PEM certificate.
    """
    try:
        return X509Identity(msp_id, Path(cert_path).read_bytes())
    except ValueError as err:
        raise ValueError(f"{cert_path}: not a PEM X.509 certificate: {err}") from err


def load_private_key(
    key_path: str | Path,
) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    """Read an unencrypted PEM private key (PKCS#8 or SEC1); ECDSA or Ed25519.

    Raises ``OSError`` if the file cannot be read and ``ValueError`` naming the file if it holds
    no usable key (corrupt, encrypted, or of an unsupported type).
    """
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{key_path}: not a readable unencrypted PEM private key: {err}") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise ValueError(f"{key_path}: unsupported private key type {type(key).__name__}")
    return key


def load_msp(msp_id: str, msp_dir: str | Path) -> tuple[X509Identity, Signer]:
    """Load the identity in ``signcerts/`` and a signer for its key in ``keystore/``.

    The keystore may hold several keys (Fabric CA names them ``<ski>_sk``, cryptogen
    ``priv_sk``); the one whose public key matches the certificate is used.
    Raises ``ValueError`` if there is not exactly one certificate or no matching key.

    Example::

        identity, signer = load_msp("Org1MSP", "users/User1@org1.example.com/msp")
    """
    msp = Path(msp_dir)
    certs = sorted(p for p in (msp / "signcerts").iterdir() if p.is_file())
    if len(certs) != 1:
        raise ValueError(f"{msp / 'signcerts'}: expected one certificate, found {len(certs)}")
    identity = load_identity(msp_id, certs[0])
    public = _public_bytes(x509.load_pem_x509_certificate(identity.credentials).public_key())
    for key_path in sorted(p for p in (msp / "keystore").iterdir() if p.is_file()):
        try:
            key = load_private_key(key_path)
        except ValueError:
            continue
        if _public_bytes(key.public_key()) == public:
            return identity, new_private_key_signer(key)
    raise ValueError(f"{msp / 'keystore'}: no private key matches {certs[0].name}")


def _public_bytes(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def hash_for_key(key: object) -> hashes.Hash:
    """The hash a signer for ``key`` (a private or public key) must be given: ``hash.none``
    for Ed25519, which signs the whole message, else Fabric's default ``hash.sha256``."""
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return hashes.none
    return hashes.sha256


def hash_for_identity(identity: Identity) -> hashes.Hash:
    """``hash_for_key`` of the key in ``identity``'s certificate (``hash.sha256`` if its
    credentials are not an X.509 certificate)."""
    try:
        certificate = x509.load_pem_x509_certificate(identity.credentials)
    except ValueError:
        return hashes.sha256
    return hash_for_key(certificate.public_key())
