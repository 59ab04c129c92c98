"""A signer whose private key stays in a PKCS#11 hardware security module (HSM).

Needs the optional extra ``fedfabric[hsm]`` (the ``python-pkcs11`` library) and the vendor's
PKCS#11 module (a ``.so``; SoftHSM2's is ``/usr/lib/softhsm/libsofthsm2.so`` on Debian).
The token signs ECDSA P-256 or P-384 over the digest it is given; the signer returns the DER
``SEQUENCE{r, s}`` with low S, as Fabric requires. Signing is an HSM round trip, so the
signer is ``async`` and runs it off the event loop.

Example::

    from fedfabric.gateway import connect, load_identity
    from fedfabric.gateway.pkcs11 import HSMSigner

    with HSMSigner("/usr/lib/softhsm/libsofthsm2.so", token_label="fabric", pin="1234",
                   key_label="User1") as signer:
        async with connect(identity=load_identity("Org1MSP", cert_path), signer=signer,
                           endpoint="127.0.0.1:7051", tls_root_cert=ca_pem) as gateway:
            ...
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fedfabric.gateway.signers import low_s_signature

__all__ = ["HSMSigner"]

# The order N of each curve, by the size of a raw PKCS#11 ECDSA signature r || s.
_ORDER_BY_SIGNATURE_SIZE = {
    64: ec.SECP256R1,
    96: ec.SECP384R1,
}
_ORDERS = {
    ec.SECP256R1: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    ec.SECP384R1: int(
        "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF"
        "581A0DB248B0A77AECEC196ACCC52973",
        16,
    ),
}


class HSMSigner:
    """An async signer (``await signer(digest)``) for an EC key in a PKCS#11 token.

    ``library`` is the path of the PKCS#11 module, ``token_label`` and ``pin`` open a user
    session, and ``key_label`` and/or ``key_id`` pick the private key (exactly one must
    match). Raises ``ImportError`` naming the extra if ``python-pkcs11`` is missing, and
    ``ValueError`` if the token or key cannot be found or the key is not P-256 / P-384.
    Close it (or use ``with``) to end the session.
    """

    def __init__(
        self,
        library: str,
        *,
        token_label: str,
        pin: str,
        key_label: str | None = None,
        key_id: bytes | None = None,
    ) -> None:
        pkcs11 = _library()
        if key_label is None and key_id is None:
            raise ValueError("HSMSigner needs key_label= or key_id= to find the key")
        try:
            token = pkcs11.lib(library).get_token(token_label=token_label)
        except (pkcs11.NoSuchToken, pkcs11.MultipleTokensReturned) as err:
            raise ValueError(f"{library}: no single token labelled {token_label!r}") from err
        self._session = token.open(user_pin=pin)
        self._lock = threading.Lock()  # a PKCS#11 session runs one operation at a time
        query: dict[str, Any] = {"key_type": pkcs11.KeyType.EC}
        if key_label is not None:
            query["label"] = key_label
        if key_id is not None:
            query["id"] = key_id
        try:
            self._key = self._session.get_key(object_class=pkcs11.ObjectClass.PRIVATE_KEY, **query)
            self._public = self._session.get_key(
                object_class=pkcs11.ObjectClass.PUBLIC_KEY, **query
            )
        except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned) as err:
            self._session.close()
            raise ValueError(f"token {token_label!r}: no single EC key {query}") from err
        curve = self.public_key().curve
        if type(curve) not in _ORDERS:
            self._session.close()
            raise ValueError(f"unsupported elliptic curve {curve.name}: use P-256 or P-384")
        self._mechanism = pkcs11.Mechanism.ECDSA

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The key's public half, for example to have a certificate issued for it."""
        from pkcs11.util.ec import encode_ec_public_key

        key = serialization.load_der_public_key(encode_ec_public_key(self._public))
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key

    async def __call__(self, digest: bytes) -> bytes:
        """Sign ``digest`` in the token; return a low-S DER ECDSA signature."""
        return await asyncio.to_thread(self._sign, digest)

    def _sign(self, digest: bytes) -> bytes:
        with self._lock:
            raw = self._key.sign(digest, mechanism=self._mechanism)
        size = len(raw) // 2
        der = encode_dss_signature(
            int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
        )
        return low_s_signature(der, _ORDERS[_ORDER_BY_SIGNATURE_SIZE[len(raw)]])

    def close(self) -> None:
        """End the PKCS#11 session."""
        self._session.close()

    def __enter__(self) -> HSMSigner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _library() -> Any:
    try:
        import pkcs11
    except ImportError as err:
        raise ImportError(
            "the PKCS#11 signer needs python-pkcs11: pip install 'fedfabric[hsm]'"
        ) from err
    return pkcs11
