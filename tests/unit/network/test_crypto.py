"""Crypto material: Fabric's MSP layout, NodeOUs, P-256 keys, TLS SANs; generation is idempotent."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfabric.network import load_topology
from fedfabric.network._crypto import generate, issue_identity, org_dir

TOPOLOGY = load_topology()


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_msp_layout_nodeous_and_roles(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path)
    org = TOPOLOGY.org("energy")
    root = org_dir(tmp_path, org)

    config = yaml.safe_load((root / "msp" / "config.yaml").read_text())
    assert config["NodeOUs"]["Enable"] is True
    assert config["NodeOUs"]["PeerOUIdentifier"] == {
        "Certificate": f"cacerts/ca.{org.domain}-cert.pem",
        "OrganizationalUnitIdentifier": "peer",
    }
    ca = cert(root / "msp" / "cacerts" / f"ca.{org.domain}-cert.pem")
    tlsca = cert(root / "msp" / "tlscacerts" / f"tlsca.{org.domain}-cert.pem")
    assert ca.subject != tlsca.subject
    roles = {
        "peers/peer0.energy.smartcity.example": "peer",
        f"users/Admin@{org.domain}": "admin",
        f"users/User3@{org.domain}": "client",
    }
    for folder, role in roles.items():
        msp = root / folder / "msp"
        signcert = cert(next((msp / "signcerts").glob("*.pem")))
        assert (
            signcert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
            == role
        )
        assert signcert.issuer == ca.subject
        ca.public_key().verify(
            signcert.signature,
            signcert.tbs_certificate_bytes,
            ec.ECDSA(signcert.signature_hash_algorithm),
        )
        key = load_pem_private_key((msp / "keystore" / "priv_sk").read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
        assert key.public_key().public_numbers() == signcert.public_key().public_numbers()
    assert not (root / "users" / f"User4@{org.domain}").exists()


def test_tls_server_certificates_name_loopback(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path)
    o = TOPOLOGY.orderer_org.orderers[0]
    tls = org_dir(tmp_path, TOPOLOGY.orderer_org) / "orderers" / o.host / "tls"

    server = cert(tls / "server.crt")
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {o.host, "localhost"}
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    assert server.issuer == cert(tls / "ca.crt").subject


def test_generation_is_idempotent(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    generate(TOPOLOGY, tmp_path)

    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_issue_an_expired_identity(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path)
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)

    folder = issue_identity(
        tmp_path,
        TOPOLOGY.org("health"),
        "Expired",
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )

    signcert = cert(next((folder / "msp" / "signcerts").glob("*.pem")))
    assert signcert.not_valid_after_utc < dt.datetime.now(dt.UTC)
