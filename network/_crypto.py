"""Crypto material in Fabric's on-disk MSP layout, made with `cryptography` (no cryptogen).

Per organisation: a signing CA and a separate TLS CA (ECDSA P-256), an organisation MSP
(``cacerts/``, ``tlscacerts/``, NodeOU ``config.yaml``) and, for every peer, orderer, admin and
client user, a local MSP (``signcerts/``, ``keystore/priv_sk``) plus TLS material
(``tls/ca.crt``, ``server.crt``/``server.key`` or ``client.crt``/``client.key``). Identity
roles are carried by the subject OU (``peer``, ``orderer``, ``admin``, ``client``).

Each organisation's material is made on its own (`generate_org`, what ``fedfabric org init``
runs on that organisation's host); `generate` makes every organisation's, for a network on one
machine. Generation is idempotent: existing CA keys are reused, so re-running adds missing
identities without invalidating the ones a running network already trusts.

A node's TLS server certificate names its host name (``peer0.energy.<name>.example``) and the
address it is reached at (its `bind_host`: an IP SAN for an IP address, a DNS SAN for a name);
only for the 127.0.0.1 default does it also name ``localhost``. A TLS certificate already on
disk is kept while its SANs cover these, and otherwise (the topology moved the node to another
address) re-issued for the same key: Fabric recognises an orderer in a channel's Raft consenter
set by its TLS public key, so the node keeps its place, and nothing pinned to the key changes.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedfabric.network._topology import DEFAULT_ADDRESS, OrdererOrg, Organization, Topology

_VALIDITY = dt.timedelta(days=3650)
_NODE_OUS = ("client", "peer", "admin", "orderer")


@dataclass(frozen=True)
class NodeOUs:
    """An organisation MSP's NodeOU settings (its ``config.yaml``): whether identities are
    classified by the OU of their certificate's subject, and which OU marks each role."""

    enable: bool = True
    client: str = "client"
    peer: str = "peer"
    admin: str = "admin"
    orderer: str = "orderer"


@dataclass(frozen=True)
class _CA:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


def org_dir(crypto_dir: Path, org: Organization | OrdererOrg) -> Path:
    """Root of one organisation's material (cryptogen's layout)."""
    kind = "ordererOrganizations" if isinstance(org, OrdererOrg) else "peerOrganizations"
    return crypto_dir / kind / org.domain


def user_name(org: Organization | OrdererOrg, user: str) -> str:
    """Directory name of a user: ``Admin@<domain>``, ``User1@<domain>``."""
    return f"{user}@{org.domain}"


def msp_roots_dir(crypto_dir: Path) -> Path:
    """A folder of ``<MSP id>.pem``: each peer organisation's CA certificate, the root its
    channel MSP trusts (`generate` writes it). Chaincode servers get it as setting
    ``ca_certs``, to check certificates carried inside transactions (device batches)."""
    return crypto_dir / "msp-roots"


def generate(topology: Topology, crypto_dir: Path) -> None:
    """Write (or complete) every organisation's MSP and TLS material under ``crypto_dir``,
    and the organisations' CA certificates to `msp_roots_dir` (`generate_org` for each)."""
    orgs: list[Organization | OrdererOrg] = [topology.orderer_org, *topology.organizations]
    for org in orgs:
        generate_org(topology, org.msp_id, crypto_dir)


def generate_org(topology: Topology, name: str, crypto_dir: Path) -> Organization | OrdererOrg:
    """Write (or complete) the material of one organisation, ``name`` (its name or MSP id; a
    peer organisation or the ordering organisation), and return that organisation.

    Everything goes under `org_dir`: its CA and TLS CA, its organisation MSP, and a local MSP
    with TLS material for each of its nodes, its ``Admin`` and (peer organisations) its
    ``User<n>``; a peer organisation's CA certificate also goes to `msp_roots_dir`. Existing
    keys are reused. Raises `TopologyError` for a name the topology does not have.
    """
    org = topology.any_org(name)
    ca, tlsca = _org_cas(org, crypto_dir)
    root = org_dir(crypto_dir, org)
    if isinstance(org, OrdererOrg):
        for o in org.orderers:
            _node(root / "orderers" / o.host, org, o.host, "orderer", ca, tlsca, o.bind_host)
    else:
        _write(
            msp_roots_dir(crypto_dir) / f"{org.msp_id}.pem",
            ca.cert.public_bytes(serialization.Encoding.PEM),
        )
        for p in org.peers:
            _node(root / "peers" / p.host, org, p.host, "peer", ca, tlsca, p.bind_host)
    admin = user_name(org, "Admin")
    _node(root / "users" / admin, org, admin, "admin", ca, tlsca)
    if isinstance(org, Organization):
        for i in range(1, org.users + 1):
            user = user_name(org, f"User{i}")
            _node(root / "users" / user, org, user, "client", ca, tlsca)
    return org


def ca_file(domain: str) -> str:
    """File name of an organisation's CA certificate in ``cacerts/`` (cryptogen's)."""
    return f"ca.{domain}-cert.pem"


def tls_ca_file(domain: str) -> str:
    """File name of an organisation's TLS CA certificate in ``tlscacerts/``."""
    return f"tlsca.{domain}-cert.pem"


def write_msp_folder(
    msp: Path,
    domain: str,
    ca_cert: bytes,
    tls_ca_cert: bytes,
    node_ous: NodeOUs | None = None,
    admin_certs: Sequence[bytes] = (),
) -> None:
    """Write the public part of an MSP folder: ``cacerts/``, ``tlscacerts/``, a NodeOU
    ``config.yaml`` and, if any are given, ``admincerts/`` (Fabric needs them only when
    NodeOUs are disabled). Certificates are PEM bytes."""
    _write(msp / "cacerts" / ca_file(domain), ca_cert)
    _write(msp / "tlscacerts" / tls_ca_file(domain), tls_ca_cert)
    for i, cert in enumerate(admin_certs):
        _write(msp / "admincerts" / f"admin{i}-cert.pem", cert)
    node_ous = node_ous or NodeOUs()
    lines = ["NodeOUs:", f"  Enable: {'true' if node_ous.enable else 'false'}"]
    for role in _NODE_OUS:
        lines += [
            f"  {role.capitalize()}OUIdentifier:",
            f"    Certificate: cacerts/{ca_file(domain)}",
            f"    OrganizationalUnitIdentifier: {getattr(node_ous, role)}",
        ]
    _write(msp / "config.yaml", ("\n".join(lines) + "\n").encode())


def read_node_ous(msp: Path) -> NodeOUs:
    """The NodeOU settings of the MSP folder ``msp`` (disabled when it has no config.yaml)."""
    path = msp / "config.yaml"
    if not path.exists():
        return NodeOUs(enable=False)
    section = (yaml.safe_load(path.read_text()) or {}).get("NodeOUs") or {}
    ous = {
        role: str(
            (section.get(f"{role.capitalize()}OUIdentifier") or {}).get(
                "OrganizationalUnitIdentifier", role
            )
        )
        for role in _NODE_OUS
    }
    return NodeOUs(enable=section.get("Enable") is True, **ous)


def issue_identity(
    crypto_dir: Path,
    org: Organization,
    name: str,
    *,
    role: str = "client",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> Path:
    """Issue an extra identity of ``org`` (e.g. an expired one for tests); return its folder."""
    if role not in _NODE_OUS:
        raise ValueError(f"role must be one of {_NODE_OUS}, got {role!r}")
    ca, tlsca = _org_cas(org, crypto_dir)
    folder = org_dir(crypto_dir, org) / "users" / user_name(org, name)
    _node(
        folder,
        org,
        user_name(org, name),
        role,
        ca,
        tlsca,
        not_before=not_before,
        not_after=not_after,
    )
    return folder


def server_tls(folder: Path, tls_ca_dir: Path, address: str) -> tuple[Path, Path]:
    """A TLS server certificate for ``address``, signed by an organisation's TLS CA (for a
    chaincode server, which its peer dials at ``address``); kept or re-issued as a node's."""
    _tls_pair(folder, "server", _load_ca(tls_ca_dir), _name(address, org=None), address, None)
    return folder / "server.crt", folder / "server.key"


def _org_cas(org: Organization | OrdererOrg, crypto_dir: Path) -> tuple[_CA, _CA]:
    root = org_dir(crypto_dir, org)
    ca = _ensure_ca(root / "ca", f"ca.{org.domain}", org.domain)
    tlsca = _ensure_ca(root / "tlsca", f"tlsca.{org.domain}", org.domain)
    _write_msp_certs(root / "msp", org, ca, tlsca)
    return ca, tlsca


def _ensure_ca(folder: Path, cn: str, domain: str) -> _CA:
    if (folder / "priv_sk").exists():
        return _load_ca(folder)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(cn, org=domain)
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, True, True, False, False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / "priv_sk", _key_pem(key))
    _write(folder / f"{cn}-cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    return _CA(key, cert)


def _load_ca(folder: Path) -> _CA:
    cert = x509.load_pem_x509_certificate(next(folder.glob("*-cert.pem")).read_bytes())
    return _CA(_load_key(folder / "priv_sk"), cert)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def _write_msp_certs(msp: Path, org: Organization | OrdererOrg, ca: _CA, tlsca: _CA) -> None:
    write_msp_folder(
        msp,
        org.domain,
        ca.cert.public_bytes(serialization.Encoding.PEM),
        tlsca.cert.public_bytes(serialization.Encoding.PEM),
    )


def _node(
    folder: Path,
    org: Organization | OrdererOrg,
    cn: str,
    role: str,
    ca: _CA,
    tlsca: _CA,
    address: str = DEFAULT_ADDRESS,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> None:
    """An identity's local MSP and TLS pair; ``address`` is where a node is reached (a client's
    TLS certificate names its identity and the default address, as it always has)."""
    msp = folder / "msp"
    _write_msp_certs(msp, org, ca, tlsca)
    if not (msp / "keystore" / "priv_sk").exists():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(
            ca,
            key.public_key(),
            _name(cn, org=org.domain, ou=role),
            not_before=not_before,
            not_after=not_after,
        )
        _write(msp / "keystore" / "priv_sk", _key_pem(key))
        _write(msp / "signcerts" / f"{cn}-cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    tls = folder / "tls"
    prefix = "server" if role in ("peer", "orderer") else "client"
    _write(tls / "ca.crt", tlsca.cert.public_bytes(serialization.Encoding.PEM))
    subject = _name(cn, org=org.domain)
    _tls_pair(tls, prefix, tlsca, subject, address, cn, not_before=not_before, not_after=not_after)


def _tls_pair(
    folder: Path,
    prefix: str,
    tlsca: _CA,
    subject: x509.Name,
    address: str,
    host: str | None,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> None:
    """``<prefix>.crt`` and ``<prefix>.key`` in ``folder``, the certificate naming `_tls_names`
    of ``address`` and ``host``. A pair on disk whose certificate already covers those names is
    kept; a certificate that does not is re-issued for the key on disk (see the module
    docstring); a missing key is made."""
    cert_path, key_path = folder / f"{prefix}.crt", folder / f"{prefix}.key"
    names = _tls_names(address, host)
    if key_path.exists() and cert_path.exists() and set(names) <= _sans(cert_path):
        return
    key = _load_key(key_path) if key_path.exists() else ec.generate_private_key(ec.SECP256R1())
    cert = _issue(
        tlsca, key.public_key(), subject, sans=names, not_before=not_before, not_after=not_after
    )
    if not key_path.exists():
        _write(key_path, _key_pem(key))
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM))


def _tls_names(address: str, host: str | None) -> list[x509.GeneralName]:
    """The SANs of a TLS certificate: its ``host`` name, its ``address`` (an IP SAN for an IP
    address, else a DNS SAN), and ``localhost`` for the 127.0.0.1 default only."""
    names: list[x509.GeneralName] = [x509.DNSName(host)] if host else []
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(address)))
    except ValueError:
        names.append(x509.DNSName(address))
    if address == DEFAULT_ADDRESS:
        names.append(x509.DNSName("localhost"))
    return list(dict.fromkeys(names))


def _sans(cert_path: Path) -> set[x509.GeneralName]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return set()


def _issue(
    ca: _CA,
    public_key: ec.EllipticCurvePublicKey,
    subject: x509.Name,
    *,
    sans: Sequence[x509.GeneralName] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(aki, critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if not sans:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        )
    return builder.sign(ca.key, hashes.SHA256())


def _name(cn: str, *, org: str | None, ou: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Smart City"),
    ]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(("_sk", ".key")):
        path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
