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

from fedfabric.network import load_topology, parse_topology
from fedfabric.network._crypto import generate, issue_identity, org_dir, server_tls
from tests.conftest import topology_data, with_addresses

TOPOLOGY = load_topology()
LOOPBACK = "127.0.0.1"


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def names(path: Path) -> tuple[set[str], set[str]]:
    """The DNS names and IP addresses a certificate's SANs carry."""
    sans = cert(path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    return set(sans.get_values_for_type(x509.DNSName)), ips


def tls_dir(crypto_dir: Path, host: str) -> Path:
    """The TLS folder of the peer or orderer ``host`` of the default topology's layout."""
    return next(crypto_dir.glob(f"*Organizations/*/*/{host}/tls"))


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


def test_tls_certificates_name_the_nodes_address_as_ip_or_dns(tmp_path: Path) -> None:
    data = with_addresses(topology_data(), energy="10.77.0.3", ordering="fd00:77::10")
    data["orderer_org"]["orderers"][2]["address"] = "orderer2.example.org"
    topology = parse_topology(data)
    energy, transport = topology.org("energy").peers[0], topology.org("transport").peers[0]
    o0, _, o2 = topology.orderer_org.orderers

    generate(topology, tmp_path)

    server = "server.crt"
    assert names(tls_dir(tmp_path, energy.host) / server) == (
        {energy.host},
        {"10.77.0.3"},
    )
    assert names(tls_dir(tmp_path, o0.host) / server) == (
        {o0.host},
        {"fd00:77::10"},
    )
    assert names(tls_dir(tmp_path, o2.host) / server) == ({o2.host, "orderer2.example.org"}, set())
    assert names(tls_dir(tmp_path, transport.host) / server) == (
        {transport.host, "localhost"},
        {LOOPBACK},
    )


def test_a_moved_node_gets_a_certificate_for_its_new_address_and_keeps_its_key(
    tmp_path: Path,
) -> None:
    generate(TOPOLOGY, tmp_path)
    energy, transport = (TOPOLOGY.org(n).peers[0].host for n in ("energy", "transport"))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    moved = parse_topology(with_addresses(topology_data(), energy="10.77.0.3"))

    generate(moved, tmp_path)

    tls = tls_dir(tmp_path, energy)
    changed = {p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() != before[p]}
    assert changed == {tls / "server.crt"}
    assert names(tls / "server.crt") == ({energy}, {"10.77.0.3"})
    assert (
        cert(tls / "server.crt").public_key()
        == load_pem_private_key((tls / "server.key").read_bytes(), None).public_key()
    )
    assert names(tls_dir(tmp_path, transport) / "server.crt")[1] == {LOOPBACK}
    generate(TOPOLOGY, tmp_path)  # and back: loopback again
    assert names(tls / "server.crt") == ({energy, "localhost"}, {LOOPBACK})


def test_a_chaincode_servers_certificate_names_its_peers_address(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path)
    tlsca = org_dir(tmp_path, TOPOLOGY.org("energy")) / "tlsca"

    cert_path, key_path = server_tls(tmp_path / "cc", tlsca, "10.77.0.3")
    key = key_path.read_bytes()
    server_tls(tmp_path / "cc", tlsca, "cc.energy.example.org")

    assert names(cert_path) == ({"cc.energy.example.org"}, set())
    assert key_path.read_bytes() == key
    assert names(server_tls(tmp_path / "default", tlsca, "127.0.0.1")[0]) == (
        {"localhost"},
        {LOOPBACK},
    )


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


def test_a_host_issues_identities_only_for_its_own_organisations(tmp_path: Path) -> None:
    import pytest

    from fedfabric.network import FabricNetwork, NetworkError
    from fedfabric.network._binaries import fabric_release

    topology = parse_topology(topology_data())
    net = FabricNetwork(topology, tmp_path, fabric_release(None), orgs=["transport"])
    with pytest.raises(NetworkError, match="only EnergyMSP's own host can issue one"):
        net.issue_identity("energy", "worker7")
    assert not (tmp_path / "crypto").exists()  # no CA made up for another organisation
    assert net.issue_identity("transport", "worker7").msp_id == "TransportMSP"
