"""Signers: callables that sign a digest made by a ``fedfabric.gateway.hash``.

A signer returns the signature, or an awaitable of it (an ``async def`` signer, for a remote
or hardware key that must not block the event loop: see ``fedfabric.gateway.pkcs11``).
The private key stays inside the signer; nothing hands it back out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

Signer = Callable[[bytes], bytes | Awaitable[bytes]]

__all__ = ["Signer", "low_s_signature", "new_private_key_signer"]

_PREHASH_BY_SIZE: dict[int, hashes.HashAlgorithm] = {
    32: hashes.SHA256(),
    48: hashes.SHA384(),
    64: hashes.SHA512(),
}

_CURVE_ORDERS = {
    "secp256r1": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "secp384r1": int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}


def new_private_key_signer(
    private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
) -> Callable[[bytes], bytes]:
    """Return a signer for an ECDSA (P-256, P-384) or Ed25519 private key.

    ECDSA signs the given digest (pair it with ``hash.sha256``) and returns a DER
    ``SEQUENCE{r, s}`` with low S, as Fabric rejects ``s > N/2``. Ed25519 signs the given
    bytes as they are (pair it with ``hash.none``).

    Raises ``ValueError`` for other key types or curves.

    Example::

        signer = signers.new_private_key_signer(load_private_key("keystore/priv_sk"))
    """
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        ed_key = private_key

        def sign_message(message: bytes) -> bytes:
            return ed_key.sign(message)

        return sign_message
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type: {type(private_key).__name__}")
    order = _CURVE_ORDERS.get(private_key.curve.name)
    if order is None:
        raise ValueError(f"unsupported elliptic curve: {private_key.curve.name}")

    def sign(digest: bytes) -> bytes:
        algorithm = _PREHASH_BY_SIZE.get(len(digest))
        if algorithm is None:
            raise ValueError(f"digest of {len(digest)} bytes; expected 32, 48 or 64")
        signature = private_key.sign(digest, ec.ECDSA(Prehashed(algorithm)))
        return low_s_signature(signature, order)

    return sign


def low_s_signature(der_signature: bytes, curve_order: int) -> bytes:
    """Return ``der_signature`` with S replaced by ``N - S`` when S is above half the order."""
    r, s = decode_dss_signature(der_signature)
    if s > curve_order // 2:
        s = curve_order - s
    return encode_dss_signature(r, s)
