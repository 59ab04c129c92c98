"""Per-organisation identity: `generate_org`, the public bundle and ``fedfabric org``.

An organisation makes its own keys on its own host and gives the others a bundle: its CA
certificates, admins, NodeOU settings and node endpoints, sealed by a digest, never a private
key. A bundle that is malformed, carries a key, was changed or does not hold together is
refused, naming the field.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedfabric.network import (
    BundleError,
    NetworkError,
    export_bundle,
    load_topology,
    parse_topology,
    read_bundle,
    write_bundle,
    write_msp,
)
from fedfabric.network._crypto import generate, generate_org, msp_roots_dir, org_dir
from fedfabric.network._topology import OrdererOrg, Organization
from fedfabric.network.cli import main
from tests.conftest import topology_data, with_addresses

TOPOLOGY = load_topology()
TRANSPORT = TOPOLOGY.org("transport")
ORDERING = TOPOLOGY.orderer_org


@pytest.fixture(scope="module")
def crypto_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every organisation's material, made once for the tests that only read it."""
    folder = tmp_path_factory.mktemp("crypto")
    generate(TOPOLOGY, folder)
    return folder


@pytest.fixture(scope="module")
def transport(crypto_dir: Path) -> dict[str, Any]:
    """The transport organisation's bundle as JSON data."""
    return export_bundle(TOPOLOGY, "transport", crypto_dir).to_json()


@pytest.fixture(scope="module")
def ordering(crypto_dir: Path) -> dict[str, Any]:
    """The ordering organisation's bundle as JSON data."""
    return export_bundle(TOPOLOGY, "OrderingMSP", crypto_dir).to_json()


def files(root: Path) -> dict[str, int]:
    """Every file under ``root``: its relative path and its permission bits."""
    return {
        str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()
    }


def resealed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with its digest recomputed as the format defines it (what a forger can do)."""
    body = {k: v for k, v in data.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {**body, "digest": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()}


def changed(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with the field at ``path`` set to ``value`` (or deleted: None)."""
    data = copy.deepcopy(data)
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    if value is None:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


def refused(data: Any, tmp_path: Path, name: str = "transport.json") -> BundleError:
    """The error `read_bundle` refuses the bundle ``data`` with (written to a file)."""
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    with pytest.raises(BundleError) as info:
        read_bundle(path)
    assert isinstance(info.value, NetworkError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"bundle {path}")
    assert info.value.bundle == str(path)
    return info.value


def pem(crypto_dir: Path, relative: str) -> str:
    return (crypto_dir / relative).read_text()


# generate_org: one organisation's material, in the layout generate uses


def test_generate_writes_exactly_what_generate_org_writes_for_every_org(tmp_path: Path) -> None:
    generate(TOPOLOGY, tmp_path / "all")
    union: dict[str, int] = {}

    orgs: list[Organization | OrdererOrg] = [ORDERING, *TOPOLOGY.organizations]
    for org in orgs:
        one = tmp_path / org.name
        generate_org(TOPOLOGY, org.msp_id, one)
        written = files(one)
        own = str(org_dir(one, org).relative_to(one))
        roots = str(msp_roots_dir(one).relative_to(one))
        assert {p for p in written if not p.startswith(own + "/")} <= {f"{roots}/{org.msp_id}.pem"}
        union |= written

    assert union == files(tmp_path / "all")


def test_generate_org_names_the_known_organizations(tmp_path: Path) -> None:
    with pytest.raises(NetworkError, match="unknown organization 'water'.*transport.*ordering"):
        generate_org(TOPOLOGY, "water", tmp_path)


# The bundle: what it holds, and that it round-trips


def test_org_init_makes_one_org_and_a_bundle_that_round_trips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"

    code = main(["org", "init", "--org", "transport", "--state-dir", str(state)])

    assert code == 0
    path = state / "bundles" / "TransportMSP.json"
    bundle = read_bundle(path)
    assert f"bundle {path} {bundle.digest}" in capsys.readouterr().out
    assert sorted(p.name for p in (state / "crypto" / "peerOrganizations").iterdir()) == [
        TRANSPORT.domain
    ]
    assert not (state / "crypto" / "ordererOrganizations").exists()
    assert bundle == export_bundle(TOPOLOGY, "transport", state / "crypto")
    assert write_bundle(bundle, tmp_path / "again.json") == tmp_path / "again.json"
    assert read_bundle((tmp_path / "again.json").read_bytes()) == bundle


def test_a_peer_org_bundle_holds_its_certificates_admins_nodeous_and_peers(
    crypto_dir: Path,
) -> None:
    root = f"peerOrganizations/{TRANSPORT.domain}"

    bundle = export_bundle(TOPOLOGY, "TransportMSP", crypto_dir)

    assert (bundle.kind, bundle.name, bundle.msp_id, bundle.version) == (
        "peer",
        "transport",
        "TransportMSP",
        1,
    )
    assert bundle.ca_cert == pem(crypto_dir, f"{root}/msp/cacerts/ca.{TRANSPORT.domain}-cert.pem")
    assert bundle.tls_ca_cert == pem(
        crypto_dir, f"{root}/msp/tlscacerts/tlsca.{TRANSPORT.domain}-cert.pem"
    )
    admin = f"{root}/users/Admin@{TRANSPORT.domain}/msp/signcerts/Admin@{TRANSPORT.domain}-cert.pem"
    assert bundle.admin_certs == (pem(crypto_dir, admin),)
    assert (bundle.node_ous.enable, bundle.node_ous.admin, bundle.node_ous.peer) == (
        True,
        "admin",
        "peer",
    )
    assert [(n.name, n.host, n.address, n.port) for n in bundle.nodes] == [
        ("peer0", "peer0.transport.smartcity.example", "127.0.0.1", 7151)
    ]
    assert bundle.digest.startswith("sha256:") and resealed(bundle.to_json()) == bundle.to_json()


def test_the_ordering_org_bundle_names_each_orderers_tls_certificate(
    crypto_dir: Path, ordering: dict[str, Any]
) -> None:
    nodes = ordering["nodes"]

    assert ordering["kind"] == "orderer"
    assert [(n["host"], n["port"], n["admin_port"]) for n in nodes] == [
        (o.host, o.port, o.admin_port) for o in ORDERING.orderers
    ]
    for node, orderer in zip(nodes, ORDERING.orderers, strict=True):
        server = f"ordererOrganizations/{ORDERING.domain}/orderers/{orderer.host}/tls/server.crt"
        assert node["tls_cert"] == pem(crypto_dir, server)


def test_bundle_nodes_carry_the_addresses_of_the_topology(tmp_path: Path) -> None:
    data = with_addresses(topology_data(), energy="10.77.0.3", ordering="10.77.0.10")
    data["orderer_org"]["orderers"][2]["address"] = "orderer2.example.org"
    topology = parse_topology(data)
    generate(topology, tmp_path)

    energy = export_bundle(topology, "energy", tmp_path)
    ordering = read_bundle(
        write_bundle(export_bundle(topology, "ordering", tmp_path), tmp_path / "o")
    )

    assert [(n.host, n.address) for n in energy.nodes] == [
        ("peer0.energy.smartcity.example", "10.77.0.3")
    ]
    assert [n.address for n in ordering.nodes] == [
        "10.77.0.10",
        "10.77.0.10",
        "orderer2.example.org",
    ]


def test_org_bundle_exports_again_to_a_chosen_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state")
    main(["org", "init", "--org", "ordering", "--state-dir", state])
    out = tmp_path / "out" / "ordering.json"

    code = main(["org", "bundle", "--org", "OrderingMSP", "--state-dir", state, "--out", str(out)])

    assert code == 0
    assert read_bundle(out) == read_bundle(tmp_path / "state" / "bundles" / "OrderingMSP.json")
    assert str(out) in capsys.readouterr().out


def test_org_bundle_before_init_says_to_run_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["org", "bundle", "--org", "energy", "--state-dir", str(tmp_path)])

    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no crypto material for organization energy")
    assert "fedfabric org init --org energy" in err


def test_nothing_in_the_bundles_folder_holds_a_private_key(tmp_path: Path) -> None:
    for org in ("ordering", "transport", "energy", "health"):
        assert main(["org", "init", "--org", org, "--state-dir", str(tmp_path)]) == 0

    bundles = sorted((tmp_path / "bundles").iterdir())

    assert [p.name for p in bundles] == [
        "EnergyMSP.json",
        "HealthMSP.json",
        "OrderingMSP.json",
        "TransportMSP.json",
    ]
    for path in bundles:
        assert "PRIVATE KEY" not in path.read_text()
        assert "PRIVATE KEY" not in json.dumps(read_bundle(path).to_json())
    assert any("PRIVATE KEY" in p.read_text() for p in (tmp_path / "crypto").rglob("priv_sk"))


# Refusals: private material, changes after export, inconsistency, malformed fields


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pkcs8_pem() -> str:
    return (
        _key()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def _der_base64() -> str:
    der = _key().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return base64.b64encode(der).decode()


def _disguised_as_certificate() -> str:
    return f"-----BEGIN CERTIFICATE-----\n{_der_base64()}\n-----END CERTIFICATE-----\n"


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (("ca_cert",), "ca_cert"),
        (("admin_certs", 0), "admin_certs[0]"),
        (("nodes", 0, "name"), "nodes[0].name"),
        (("node_ous", "admin"), "node_ous.admin"),
        (("note",), "note"),
    ],
)
@pytest.mark.parametrize("key", [_pkcs8_pem, _der_base64, _disguised_as_certificate])
def test_a_private_key_in_any_field_is_refused_naming_the_field(
    transport: dict[str, Any], tmp_path: Path, path: tuple[str | int, ...], field: str, key: Any
) -> None:
    secret = key()
    data = resealed(changed(transport, path, secret))

    error = refused(data, tmp_path)

    message = str(error)
    assert f"contains private key material (field {field})" in message
    assert error.field == field
    middle = len(secret) // 2
    assert secret[middle : middle + 16] not in message  # the key itself is never echoed


def test_a_private_key_in_a_bundle_that_is_not_json_is_refused_as_such(
    transport: dict[str, Any], tmp_path: Path
) -> None:
    text = json.dumps(transport)[:-1] + ', "extra": "' + _pkcs8_pem()

    assert "contains private key material" in str(refused(text, tmp_path))


def test_write_bundle_refuses_a_bundle_with_a_private_key(crypto_dir: Path, tmp_path: Path) -> None:
    bundle = export_bundle(TOPOLOGY, "transport", crypto_dir)
    leaked = dataclasses.replace(bundle, admin_certs=(_pkcs8_pem(),))

    with pytest.raises(BundleError, match=r"private key material \(field admin_certs\[0\]\)"):
        write_bundle(leaked, tmp_path / "leaked.json")

    assert not (tmp_path / "leaked.json").exists()


def test_a_bundle_changed_after_export_is_refused(
    crypto_dir: Path, transport: dict[str, Any], tmp_path: Path
) -> None:
    other_admin = export_bundle(TOPOLOGY, "energy", crypto_dir).admin_certs[0]
    data = changed(transport, ("admin_certs", 0), other_admin)  # digest left as it was

    error = refused(data, tmp_path)

    assert "digest mismatch: the bundle was changed after export" in str(error)
    assert error.field == "digest"


T = f"peerOrganizations/{TRANSPORT.domain}"
Source = Callable[[Path, Path, dict[str, Any]], str]


def _file(relative: str) -> Source:
    return lambda crypto_dir, tmp_path, data: pem(crypto_dir, relative)


def _energy_admin(crypto_dir: Path, tmp_path: Path, data: dict[str, Any]) -> str:
    return export_bundle(TOPOLOGY, "energy", crypto_dir).admin_certs[0]


def _impostor_admin(crypto_dir: Path, tmp_path: Path, data: dict[str, Any]) -> str:
    generate_org(TOPOLOGY, "transport", tmp_path)  # a second transport CA: same name, other key
    return export_bundle(TOPOLOGY, "transport", tmp_path).admin_certs[0]


# (bundle, field, the certificate put there, the error, whether it says "inconsistent": the
# certificate is fine in itself, but not issued by this bundle's CA or not an admin's)
WRONG_CERTIFICATES: list[tuple[str, tuple[str | int, ...], Source, str, bool]] = [
    (
        "transport",
        ("admin_certs", 0),
        _energy_admin,
        "admin_certs[0]: not issued by the bundle's ca_cert but by CN=ca.energy",
        True,
    ),
    (
        "transport",
        ("admin_certs", 0),
        _impostor_admin,
        "admin_certs[0]: not issued by the bundle's ca_cert: its signature does not verify",
        True,
    ),
    (
        "transport",
        ("admin_certs", 0),
        _file(
            f"{T}/users/User1@{TRANSPORT.domain}/msp/signcerts/User1@{TRANSPORT.domain}-cert.pem"
        ),
        "admin_certs[0]: its subject has no OU 'admin'",
        True,
    ),
    (
        "ordering",
        ("nodes", 0, "tls_cert"),
        _file(f"{T}/peers/peer0.{TRANSPORT.domain}/tls/server.crt"),
        "nodes[0].tls_cert: not issued by the bundle's tls_ca_cert",
        True,
    ),
    (
        "transport",
        ("ca_cert",),
        _file(
            f"{T}/peers/peer0.{TRANSPORT.domain}/msp/signcerts/peer0.{TRANSPORT.domain}-cert.pem"
        ),
        "ca_cert: not a CA certificate",
        False,
    ),
    (
        "ordering",
        ("nodes", 0, "tls_cert"),
        lambda crypto_dir, tmp_path, data: data["nodes"][1]["tls_cert"],
        "nodes[0].tls_cert: does not name its host orderer0.ordering.smartcity.example",
        False,
    ),
    (
        "transport",
        ("tls_ca_cert",),
        lambda crypto_dir, tmp_path, data: "hello",
        "tls_ca_cert: expected one PEM certificate",
        False,
    ),
    (
        "transport",
        ("ca_cert",),
        lambda crypto_dir, tmp_path, data: data["ca_cert"] * 2,
        "ca_cert: expected one PEM certificate",
        False,
    ),
]


@pytest.mark.parametrize(("org", "path", "source", "expected", "inconsistent"), WRONG_CERTIFICATES)
def test_a_resealed_bundle_whose_certificates_do_not_hold_together_is_refused(
    crypto_dir: Path,
    transport: dict[str, Any],
    ordering: dict[str, Any],
    tmp_path: Path,
    org: str,
    path: tuple[str | int, ...],
    source: Source,
    expected: str,
    inconsistent: bool,
) -> None:
    data = transport if org == "transport" else ordering
    forged = resealed(changed(data, path, source(crypto_dir, tmp_path / "other", data)))

    error = refused(forged, tmp_path)

    assert expected in str(error)
    assert str(error).endswith("the bundle is inconsistent") is inconsistent
    assert error.field == expected.partition(":")[0]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("msp_id",), None, "msp_id: missing"),
        (("nodes", 0, "port"), "7151", "nodes[0].port: expected an integer, got a string"),
        (("nodes", 0, "port"), 70000, "nodes[0].port: expected a port in [1, 65535]"),
        (("node_ous", "enable"), "yes", "node_ous.enable: expected true or false"),
        (("admin_certs",), [], "admin_certs: expected at least one entry"),
        (("admin_certs",), "a PEM", "admin_certs: expected a list, got a string"),
        (("nodes", 0, "tls_cert"), "x", "nodes[0].tls_cert: unexpected field"),
        (("signature",), "x", "signature: unexpected field"),
        (("msp_id",), "Transport MSP", "msp_id: 'Transport MSP' may hold only letters"),
        (("nodes", 0, "host"), "peer0/..", "nodes[0].host: 'peer0/..' is not a DNS name"),
        (("nodes", 0, "address"), "10.77.0.256", "nodes[0].address: '10.77.0.256' is no IP"),
        (("nodes", 0, "address"), "0.0.0.0", "nodes[0].address: '0.0.0.0' binds every interface"),
        (("version",), 2, "version: 2 is not supported (this fedfabric reads 1)"),
        (("format",), "something-else", "format: expected 'fedfabric.org-bundle'"),
        (("kind",), "client", "kind: expected 'peer' or 'orderer'"),
    ],
)
def test_a_missing_mistyped_or_malformed_field_is_named(
    transport: dict[str, Any],
    tmp_path: Path,
    path: tuple[str | int, ...],
    value: Any,
    expected: str,
) -> None:
    data = resealed(changed(transport, path, value))

    error = refused(data, tmp_path)

    assert f"transport.json: {expected}" in str(error)
    assert error.field == expected.partition(":")[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ('{"format": 1, "format": 2}', "is not valid JSON: field 'format' is given twice"),
        ("[1, 2]", "the bundle: expected an object"),
    ],
)
def test_a_bundle_that_is_no_json_object_is_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in str(refused(text, tmp_path))


def test_a_missing_bundle_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot read bundle .*nowhere.json"):
        read_bundle(tmp_path / "nowhere.json")


# write_msp: an organisation MSP from a bundle alone


def test_write_msp_makes_the_org_msp_that_generate_org_made(
    crypto_dir: Path, tmp_path: Path
) -> None:
    bundle = read_bundle(
        write_bundle(export_bundle(TOPOLOGY, "transport", crypto_dir), tmp_path / "t.json")
    )
    generated = org_dir(crypto_dir, TRANSPORT) / "msp"

    msp = write_msp(bundle, tmp_path / "msp")

    assert files(msp) == files(generated)
    assert (msp / "cacerts" / f"ca.{TRANSPORT.domain}-cert.pem").read_text() == bundle.ca_cert
    assert (msp / "tlscacerts" / f"tlsca.{TRANSPORT.domain}-cert.pem").read_text() == (
        bundle.tls_ca_cert
    )
    assert (msp / "config.yaml").read_bytes() == (generated / "config.yaml").read_bytes()
    assert not (msp / "admincerts").exists()  # NodeOUs name the admins


# fedfabric org check


def test_org_check_prints_each_bundle_and_exits_0_when_all_pass(
    crypto_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [
        write_bundle(export_bundle(TOPOLOGY, org, crypto_dir), tmp_path / f"{org}.json")
        for org in ("transport", "ordering")
    ]

    code = main(["org", "check", *map(str, paths)])

    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].startswith(f"{paths[0]}: TransportMSP sha256:")
    assert out[1].startswith(f"{paths[1]}: OrderingMSP sha256:")


def test_org_check_exits_1_naming_each_refused_bundle(
    crypto_dir: Path, transport: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_bundle(export_bundle(TOPOLOGY, "energy", crypto_dir), tmp_path / "energy.json")
    bad = tmp_path / "transport.json"
    bad.write_text(json.dumps(changed(transport, ("name",), "traffic")))

    code = main(["org", "check", str(bad), str(good)])

    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.startswith(f"error: bundle {bad}: digest mismatch: the bundle was changed")
    assert len(captured.err.splitlines()) == 1
    assert captured.out.startswith(f"{good}: EnergyMSP sha256:")
