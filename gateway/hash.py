"""Hash functions that turn a message into the digest a signer signs.

A hash is any ``Callable[[bytes], bytes]``. Fabric verifies with the channel MSP's hash family,
SHA-256 by default, whatever the key's curve; Ed25519 identities sign the whole message, so use
``none`` with an Ed25519 signer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

Hash = Callable[[bytes], bytes]

__all__ = ["Hash", "none", "sha3_256", "sha3_384", "sha256", "sha384"]


def sha256(message: bytes) -> bytes:
    """SHA-256 digest of ``message`` (Fabric's default)."""
    return hashlib.sha256(message).digest()


def sha384(message: bytes) -> bytes:
    """SHA-384 digest of ``message``."""
    return hashlib.sha384(message).digest()


def sha3_256(message: bytes) -> bytes:
    """SHA3-256 digest of ``message`` (channel MSPs with the SHA3 hash family)."""
    return hashlib.sha3_256(message).digest()


def sha3_384(message: bytes) -> bytes:
    """SHA3-384 digest of ``message``."""
    return hashlib.sha3_384(message).digest()


def none(message: bytes) -> bytes:
    """The message itself, unhashed: for signers that hash internally, such as Ed25519."""
    return bytes(message)
