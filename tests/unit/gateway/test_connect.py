"""Connecting: option checks, channel ownership, connection profiles, MSP folders."""

import json
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from fabric_protos.msp import identities_pb2
from gateway_fakes import MSP_ID, SERVER_NAME, PeerServer, TlsMaterial, User, issue_cert, key_pem

from fedfabric.gateway import (
    X509Identity,
    connect,
    connect_org,
    connect_profile,
    load_identity,
    load_msp,
    load_private_key,
)
from fedfabric.gateway._identity import serialize_identity


def test_connect_needs_exactly_one_of_channel_and_endpoint(user: User) -> None:
    with pytest.raises(ValueError, match="exactly one of channel= and endpoint="):
        connect(identity=user.identity)


def test_connect_needs_a_tls_root_cert(user: User) -> None:
    with pytest.raises(ValueError, match="tls_root_cert"):
        connect(identity=user.identity, endpoint="127.0.0.1:7051")


def test_connect_needs_both_halves_of_a_client_tls_pair(user: User, tls: TlsMaterial) -> None:
    with pytest.raises(ValueError, match="client_cert= and client_key="):
        connect(
            identity=user.identity,
            endpoint="127.0.0.1:7051",
            tls_root_cert=tls.ca_cert,
            client_cert=tls.client_cert,
        )


async def test_gateway_leaves_a_callers_channel_open(
    peer_server: PeerServer, tls: TlsMaterial, user: User
) -> None:
    credentials = grpc.ssl_channel_credentials(tls.ca_cert)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    async with grpc.aio.secure_channel(peer_server.endpoint, credentials, options) as channel:
        async with connect(identity=user.identity, signer=user.signer, channel=channel) as gateway:
            await gateway.get_network("mychannel").get_contract("fl").evaluate("Get")

        again = connect(identity=user.identity, signer=user.signer, channel=channel)
        result = await again.get_network("mychannel").get_contract("fl").evaluate("Get")

    assert result == b"evaluated"


def test_x509_identity_serializes_as_a_serialized_identity(user: User) -> None:
    creator = serialize_identity(user.identity)

    parsed = identities_pb2.SerializedIdentity.FromString(creator)
    assert (parsed.mspid, parsed.id_bytes) == (MSP_ID, user.identity.credentials)


def test_x509_identity_rejects_a_non_certificate() -> None:
    with pytest.raises(ValueError):
        X509Identity(MSP_ID, b"not a certificate")


def test_corrupt_key_file_error_names_the_file(tmp_path: Path) -> None:
    key_file = tmp_path / "priv_sk"
    key_file.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")

    with pytest.raises(ValueError, match=f"^{key_file}: not a readable unencrypted PEM"):
        load_private_key(key_file)


def test_corrupt_certificate_file_error_names_the_file(tmp_path: Path) -> None:
    cert_file = tmp_path / "cert.pem"
    cert_file.write_text("not a certificate")

    with pytest.raises(ValueError, match=f"^{cert_file}: not a PEM X.509 certificate"):
        load_identity(MSP_ID, cert_file)


def write_msp(msp_dir: Path, key: ec.EllipticCurvePrivateKey, other_keys: int = 1) -> bytes:
    (msp_dir / "signcerts").mkdir(parents=True)
    (msp_dir / "keystore").mkdir()
    cert = issue_cert(key, "User1@org1.example.com")
    (msp_dir / "signcerts" / "User1@org1.example.com-cert.pem").write_bytes(cert)
    for index in range(other_keys):
        other = key_pem(ec.generate_private_key(ec.SECP256R1()))
        (msp_dir / "keystore" / f"a{index}_sk").write_bytes(other)
    (msp_dir / "keystore" / "priv_sk").write_bytes(key_pem(key))
    return cert


def test_load_msp_finds_the_key_matching_the_certificate(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = write_msp(tmp_path / "msp", key, other_keys=2)

    identity, signer = load_msp(MSP_ID, tmp_path / "msp")

    assert identity == X509Identity(MSP_ID, cert)
    digest = bytes(32)
    key.public_key().verify(signer(digest), digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def test_load_msp_without_matching_key_fails(tmp_path: Path) -> None:
    write_msp(tmp_path / "msp", ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "msp" / "keystore" / "priv_sk").unlink()

    with pytest.raises(ValueError, match="no private key matches"):
        load_msp(MSP_ID, tmp_path / "msp")


def write_profile(directory: Path, endpoint: str, tls: TlsMaterial, user: User, **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "tlsca.pem").write_bytes(tls.ca_cert)
    (directory / "user1-cert.pem").write_bytes(user.identity.credentials)
    (directory / "user1-key.pem").write_bytes(key_pem(user.key))
    profile = {
        "msp_id": MSP_ID,
        "peer_endpoint": endpoint,
        "tls_root_cert_path": "tlsca.pem",
        "server_name": SERVER_NAME,
        "users": {"User1": {"cert_path": "user1-cert.pem", "key_path": "user1-key.pem"}},
        **extra,
    }
    path = directory / "Org1.json"
    path.write_text(json.dumps(profile))
    return path


async def test_connect_profile_connects_as_the_named_user(
    tmp_path: Path, peer_server: PeerServer, tls: TlsMaterial, user: User
) -> None:
    path = write_profile(tmp_path, peer_server.endpoint, tls, user)

    async with connect_profile(path, "User1") as gateway:
        result = await gateway.get_network("mychannel").get_contract("fl").evaluate("Get")

    assert result == b"evaluated"
    assert gateway.identity == user.identity


async def test_connect_org_finds_the_org_profile_in_a_directory(
    tmp_path: Path, peer_server: PeerServer, tls: TlsMaterial, user: User
) -> None:
    write_profile(tmp_path, peer_server.endpoint, tls, user)

    async with connect_org(tmp_path, "Org1", "User1") as gateway:
        assert gateway.identity.msp_id == MSP_ID


def test_connect_profile_rejects_an_unknown_user(
    tmp_path: Path, tls: TlsMaterial, user: User
) -> None:
    path = write_profile(tmp_path, "127.0.0.1:7051", tls, user)

    with pytest.raises(ValueError, match="no user 'Admin'"):
        connect_profile(path, "Admin")
