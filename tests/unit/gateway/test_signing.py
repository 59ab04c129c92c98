"""Signers, hashes and transaction ids against fixed vectors."""

import hashlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from fedfabric.gateway import hash, signers
from fedfabric.gateway._context import transaction_id

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_PRIVATE_VALUE = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
DIGEST = hashlib.sha256(b"sample").digest()


def test_high_s_signature_is_normalised_to_low_s_der() -> None:
    # DER SEQUENCE{INTEGER 0x80 (needs a 0x00 pad byte), INTEGER N-1}; N-1 is high-S, so S -> 1.
    high_s = bytes.fromhex("302702020080022100" + f"{P256_ORDER - 1:064x}")

    low_s = signers.low_s_signature(high_s, P256_ORDER)

    assert low_s == bytes.fromhex("300702020080020101")


def test_low_s_signature_is_unchanged() -> None:
    low = bytes.fromhex("3006020101020102")

    assert signers.low_s_signature(low, P256_ORDER) == low


def test_normalised_high_s_signature_still_verifies() -> None:
    key = ec.derive_private_key(P256_PRIVATE_VALUE, ec.SECP256R1())
    algorithm = ec.ECDSA(Prehashed(hashes.SHA256()))
    r, s = decode_dss_signature(key.sign(DIGEST, algorithm))

    high = encode_dss_signature(r, max(s, P256_ORDER - s))

    low = signers.low_s_signature(high, P256_ORDER)

    assert decode_dss_signature(low) == (r, min(s, P256_ORDER - s))
    key.public_key().verify(low, DIGEST, algorithm)


def test_p256_signer_signs_the_digest_with_low_s() -> None:
    key = ec.derive_private_key(P256_PRIVATE_VALUE, ec.SECP256R1())
    sign = signers.new_private_key_signer(key)

    signatures = [sign(DIGEST) for _ in range(64)]

    for signature in signatures:
        _, s = decode_dss_signature(signature)
        assert s <= P256_ORDER // 2
        key.public_key().verify(signature, DIGEST, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_p384_signer_signs_a_sha256_digest() -> None:
    key = ec.generate_private_key(ec.SECP384R1())

    signature = signers.new_private_key_signer(key)(hash.sha256(b"message"))

    key.public_key().verify(signature, b"message", ec.ECDSA(hashes.SHA256()))


def test_ed25519_signer_signs_the_whole_message_rfc8032_vector() -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )

    signature = signers.new_private_key_signer(key)(hash.none(b""))

    assert signature == bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )


def test_unsupported_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="secp521r1"):
        signers.new_private_key_signer(ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(ValueError, match="RSAPrivateKey"):
        signers.new_private_key_signer(rsa.generate_private_key(65537, 2048))  # type: ignore[arg-type]


def test_ecdsa_signer_refuses_a_digest_of_unknown_size() -> None:
    sign = signers.new_private_key_signer(ec.generate_private_key(ec.SECP256R1()))

    with pytest.raises(ValueError, match="digest of 5 bytes"):
        sign(b"short")


def test_hashes_match_fixed_vectors() -> None:
    assert hash.sha256(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert hash.none(b"abc") == b"abc"


def test_transaction_id_is_hex_sha256_of_nonce_then_creator() -> None:
    nonce = bytes(range(24))
    creator = bytes.fromhex(
        "0a074f7267314d5350121c2d2d2d2d2d424547494e2043455254494649434154452d2d2d2d2d0a"
    )

    assert transaction_id(nonce, creator) == (
        "a43210668f3686adbbcd1946c6edefb58fbb56f6af54fb2f01a58a56900f3851"
    )
