"""The PKCS#11 signer against a real SoftHSM2 token: P-256 and P-384, low S, clear errors."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from fedfabric.gateway import hash as hashes_
from fedfabric.gateway.pkcs11 import HSMSigner
from tests.fixtures.softhsm import LIBRARY, PIN, TOKEN, generate_key, init_token

CURVES = {"P-256": "secp256r1", "P-384": "secp384r1"}


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    init_token(tmp_path_factory.mktemp("softhsm"))
    for label, curve in CURVES.items():
        generate_key(label, curve)
    yield


@pytest.mark.parametrize("label", list(CURVES))
async def test_signs_the_digest_with_low_s(token: None, label: str) -> None:
    digest = hashes_.sha256(b"proposal bytes")  # Fabric hashes with SHA-256 on every curve
    with HSMSigner(LIBRARY, token_label=TOKEN, pin=PIN, key_label=label) as signer:
        public_key = signer.public_key()
        signatures = [await signer(digest) for _ in range(8)]

    order = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}[label]
    assert isinstance(public_key.curve, order)
    for signature in signatures:
        public_key.verify(signature, digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        _, s = decode_dss_signature(signature)
        assert s <= _order(label) // 2


def _order(label: str) -> int:
    from fedfabric.gateway.pkcs11 import _ORDERS

    return _ORDERS[{"P-256": ec.SECP256R1, "P-384": ec.SECP384R1}[label]]


def test_an_unknown_key_is_a_clear_error(token: None) -> None:
    with pytest.raises(ValueError, match="no single EC key"):
        HSMSigner(LIBRARY, token_label=TOKEN, pin=PIN, key_label="nobody")


def test_an_unknown_token_is_a_clear_error(token: None) -> None:
    with pytest.raises(ValueError, match="no single token labelled 'other'"):
        HSMSigner(LIBRARY, token_label="other", pin=PIN, key_label="P-256")


def test_a_key_must_be_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="key_label= or key_id="):
        HSMSigner(LIBRARY, token_label=TOKEN, pin=PIN)
