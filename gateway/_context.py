"""What every request object needs: the client, the signing identity and the timeouts."""

from __future__ import annotations

import hashlib
import inspect
import os
from dataclasses import dataclass

from fedfabric.gateway import hash as hashes
from fedfabric.gateway._client import GatewayClient
from fedfabric.gateway._identity import Identity, serialize_identity
from fedfabric.gateway._options import Timeouts
from fedfabric.gateway.signers import Signer

NONCE_SIZE = 24


class SigningIdentity:
    """An identity, its hash function and (unless signing offline) its signer."""

    def __init__(
        self, identity: Identity, signer: Signer | None, hash: hashes.Hash = hashes.sha256
    ) -> None:
        self.identity = identity
        self.creator = serialize_identity(identity)
        self._signer = signer
        self._hash = hash

    @property
    def can_sign(self) -> bool:
        return self._signer is not None

    def digest(self, message: bytes) -> bytes:
        return self._hash(message)

    async def sign(self, message: bytes) -> bytes:
        """Sign ``message`` (hashing it first), awaiting the signer if it returns an
        awaitable; ``ValueError`` when there is no signer."""
        if self._signer is None:
            raise ValueError(
                "the gateway has no signer: sign the digest() offline and use the "
                "gateway's new_signed_*() methods"
            )
        signature = self._signer(self.digest(message))
        if inspect.isawaitable(signature):
            signature = await signature
        return signature


@dataclass(frozen=True)
class Context:
    client: GatewayClient
    signing: SigningIdentity
    timeouts: Timeouts
    tls_cert_hash: bytes = b""


def new_nonce() -> bytes:
    """24 random bytes, as the official clients use."""
    return os.urandom(NONCE_SIZE)


def transaction_id(nonce: bytes, creator: bytes) -> str:
    """Fabric's transaction id: lowercase hex of SHA-256(nonce || creator)."""
    return hashlib.sha256(nonce + creator).hexdigest()
