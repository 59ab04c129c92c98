"""An organisation's public bundle: all that other organisations need to trust it, no secret.

``fedfabric org init`` makes one organisation's keys and certificates on that organisation's
host (`generate_org`) and exports this bundle; the organisations of a consortium exchange
bundles, never keys. A bundle is one JSON file:

    format, version        "fedfabric.org-bundle", 1
    kind                   "peer" (an organisation with peers) or "orderer" (the ordering one)
    name, msp_id, domain   as in the topology
    ca_cert, tls_ca_cert   PEM: the organisation's self-signed CA and TLS CA
    admin_certs            PEM: its admins, issued by ca_cert, with the admin OU
    node_ous               its MSP's NodeOU settings (config.yaml)
    nodes                  each peer {name, host, address, port}; each orderer also
                           {admin_port, tls_cert}: its TLS server certificate, which the
                           channel's Raft consenter set names
    digest                 "sha256:<hex>" of the canonical JSON of everything else

`read_bundle` refuses a bundle (`BundleError`, naming the bundle and the field) that is not
well-formed, holds private key material anywhere, was changed after export (its digest), or
whose certificates do not hold together. `write_msp` turns a bundle into an organisation MSP
folder: all that configtxgen needs of an organisation to build a channel configuration.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from fedfabric.network._crypto import (
    NodeOUs,
    ca_file,
    org_dir,
    read_node_ous,
    tls_ca_file,
    write_msp_folder,
)
from fedfabric.network._errors import NetworkError
from fedfabric.network._topology import (
    _DNS,
    _MSP_ID,
    _NAME,
    OrdererOrg,
    Topology,
    address_problem,
)

FORMAT = "fedfabric.org-bundle"
VERSION = 1
_KINDS = ("peer", "orderer")
_ROLES = tuple(f.name for f in dataclasses.fields(NodeOUs) if f.name != "enable")
_TOP = (
    "format",
    "version",
    "kind",
    "name",
    "msp_id",
    "domain",
    "ca_cert",
    "tls_ca_cert",
    "admin_certs",
    "node_ous",
    "nodes",
    "digest",
)
_PEER_NODE = ("name", "host", "address", "port")
_ORDERER_NODE = (*_PEER_NODE, "admin_port", "tls_cert")
_OU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_ONE_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]{64,}$")
_PRIVATE_MARKER = "PRIVATE KEY"  # PKCS#8, encrypted PKCS#8, EC, RSA and OpenSSH key headers


class BundleError(NetworkError, ValueError):
    """A bundle is malformed, holds private key material, was changed after export or does not
    hold together. The message names the bundle and the field; so do ``bundle`` (its path or
    label) and ``field`` (``nodes[0].port``; None when the bundle as a whole is at fault)."""

    def __init__(self, message: str, *, bundle: str, field: str | None = None) -> None:
        super().__init__(message)
        self.bundle, self.field = bundle, field


def _fail(label: str, field: str, problem: str) -> BundleError:
    return BundleError(f"bundle {label}: {field}: {problem}", bundle=label, field=field)


@dataclass(frozen=True)
class BundleNode:
    """A node of the organisation as the other organisations reach it.

    ``host`` is its DNS name (the name its TLS certificate carries), ``address`` the IP address
    or name it is reachable at. Orderers also have ``admin_port`` (channel participation) and
    ``tls_cert``, their TLS server certificate (PEM), which the Raft consenter set names.
    """

    name: str
    host: str
    address: str
    port: int
    admin_port: int | None = None
    tls_cert: str | None = None


@dataclass(frozen=True)
class OrgBundle:
    """One organisation's public bundle (see the module docstring for its fields).

    Made by `export_bundle`, read and checked by `read_bundle`; ``digest`` covers every other
    field, so a bundle changed after export is refused.
    """

    version: int
    kind: str
    name: str
    msp_id: str
    domain: str
    ca_cert: str
    tls_ca_cert: str
    admin_certs: tuple[str, ...]
    node_ous: NodeOUs
    nodes: tuple[BundleNode, ...]
    digest: str

    def to_json(self) -> dict[str, Any]:
        """The bundle as JSON data, digest included (what `write_bundle` writes)."""
        return {**_body(self), "digest": self.digest}


def export_bundle(topology: Topology, name: str, crypto_dir: Path) -> OrgBundle:
    """The public bundle of organisation ``name`` (name or MSP id), read from its material in
    ``crypto_dir`` (`generate_org` made it). Raises `NetworkError` when that material is
    missing, `BundleError` when it does not make a valid bundle."""
    org = topology.any_org(name)
    root = org_dir(crypto_dir, org)
    msp = root / "msp"
    if not (msp / "cacerts" / ca_file(org.domain)).exists():
        raise NetworkError(
            f"no crypto material for organization {org.name} in {crypto_dir}; "
            f"run `fedfabric org init --org {org.name}` first"
        )
    node_ous = read_node_ous(msp)
    if isinstance(org, OrdererOrg):
        kind = "orderer"
        nodes = tuple(
            BundleNode(
                o.name,
                o.host,
                o.bind_host,
                o.port,
                o.admin_port,
                _read(root / "orderers" / o.host / "tls" / "server.crt"),
            )
            for o in org.orderers
        )
    else:
        kind = "peer"
        nodes = tuple(BundleNode(p.name, p.host, p.bind_host, p.port) for p in org.peers)
    unsealed = OrgBundle(
        VERSION,
        kind,
        org.name,
        org.msp_id,
        org.domain,
        _read(msp / "cacerts" / ca_file(org.domain)),
        _read(msp / "tlscacerts" / tls_ca_file(org.domain)),
        _admin_certs(root, node_ous),
        node_ous,
        nodes,
        digest="",
    )
    bundle = dataclasses.replace(unsealed, digest=_digest(unsealed))
    _check(bundle, f"of {org.name} (from {root})")
    return bundle


def write_bundle(bundle: OrgBundle, path: str | Path) -> Path:
    """Check ``bundle`` and write it to ``path`` as JSON; return the path."""
    path = Path(path)
    _check(bundle, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle.to_json(), indent=2) + "\n")
    return path


def read_bundle(source: str | Path | bytes, *, label: str | None = None) -> OrgBundle:
    """Read and check a bundle: a file, or its bytes (``label`` names it in errors).

    Raises `BundleError` naming what is wrong: the file cannot be read or is not JSON; a field
    is missing, unexpected or of the wrong type; private key material is in any field; the
    digest does not match the content; a certificate does not parse, a CA is not a self-signed
    CA, an admin or orderer TLS certificate was not issued by the bundle's CA.

    >>> bundle = read_bundle("bundles/EnergyMSP.json")
    >>> bundle.msp_id, bundle.digest
    """
    if isinstance(source, bytes):
        label, raw = label or "<bytes>", source
    else:
        label = label or str(source)
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read bundle {label}: {exc.strerror}", bundle=label) from exc
    try:
        data = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as exc:  # not UTF-8, not JSON, or a field given twice
        if _PRIVATE_MARKER.encode() in raw:
            raise BundleError(
                f"bundle {label} contains private key material (and is not valid JSON)",
                bundle=label,
            ) from None
        raise BundleError(f"bundle {label} is not valid JSON: {exc}", bundle=label) from None
    _refuse_private(data, label)
    bundle = _parse(data, label)
    _check(bundle, label)
    return bundle


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a field given twice (which one would count is not obvious)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"field {key!r} is given twice")
        data[key] = value
    return data


def write_msp(bundle: OrgBundle, folder: str | Path) -> Path:
    """Write the organisation MSP folder of ``bundle`` (``cacerts/``, ``tlscacerts/``, the
    NodeOU ``config.yaml``, and ``admincerts/`` when NodeOUs are disabled) in the shape
    `generate_org` writes it, so configtxgen can build a channel configuration from bundles
    alone. Returns the folder."""
    folder = Path(folder)
    _check(bundle, f"of {bundle.msp_id}")
    write_msp_folder(
        folder,
        bundle.domain,
        bundle.ca_cert.encode(),
        bundle.tls_ca_cert.encode(),
        bundle.node_ous,
        () if bundle.node_ous.enable else [c.encode() for c in bundle.admin_certs],
    )
    return folder


def _body(bundle: OrgBundle) -> dict[str, Any]:
    """Everything the digest covers, as JSON data."""
    return {
        "format": FORMAT,
        "version": bundle.version,
        "kind": bundle.kind,
        "name": bundle.name,
        "msp_id": bundle.msp_id,
        "domain": bundle.domain,
        "ca_cert": bundle.ca_cert,
        "tls_ca_cert": bundle.tls_ca_cert,
        "admin_certs": list(bundle.admin_certs),
        "node_ous": dataclasses.asdict(bundle.node_ous),
        "nodes": [
            {k: v for k, v in dataclasses.asdict(n).items() if v is not None} for n in bundle.nodes
        ],
    }


def _digest(bundle: OrgBundle) -> str:
    canonical = json.dumps(_body(bundle), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise NetworkError(f"cannot read {path}: {exc.strerror}") from exc


def _admin_certs(root: Path, node_ous: NodeOUs) -> tuple[str, ...]:
    """The organisation's admins: its users whose certificate carries the admin OU (or, with
    NodeOUs disabled, the certificates in its MSP's admincerts/)."""
    if not node_ous.enable:
        return tuple(_read(p) for p in sorted((root / "msp" / "admincerts").glob("*.pem")))
    admins = []
    for path in sorted((root / "users").glob("*/msp/signcerts/*.pem")):
        pem = _read(path)
        if node_ous.admin in _ous(x509.load_pem_x509_certificate(pem.encode())):
            admins.append(pem)
    return tuple(admins)


# Reading: JSON data → OrgBundle, checking presence and types only.


def _parse(data: Any, label: str) -> OrgBundle:
    top = _Reader(data, "", label)
    fmt = top.string("format")
    if fmt != FORMAT:
        raise top.fail("format", f"expected {FORMAT!r}, got {_show(fmt)}: not an org bundle")
    version = top.integer("version")
    if version != VERSION:
        raise top.fail("version", f"{version} is not supported (this fedfabric reads {VERSION})")
    top.only(_TOP)
    kind = top.string("kind")
    if kind not in _KINDS:
        raise top.fail("kind", f"expected 'peer' or 'orderer', got {_show(kind)}")
    ous = top.sub("node_ous")
    ous.only(("enable", *_ROLES))
    nodes = []
    for node in top.items("nodes"):
        node.only(_ORDERER_NODE if kind == "orderer" else _PEER_NODE)
        nodes.append(
            BundleNode(
                node.string("name"),
                node.string("host"),
                node.string("address"),
                node.integer("port"),
                node.integer("admin_port") if kind == "orderer" else None,
                node.string("tls_cert") if kind == "orderer" else None,
            )
        )
    return OrgBundle(
        version,
        kind,
        top.string("name"),
        top.string("msp_id"),
        top.string("domain"),
        top.string("ca_cert"),
        top.string("tls_ca_cert"),
        tuple(r.data for r in top.items("admin_certs", str)),
        NodeOUs(ous.boolean("enable"), *(ous.string(role) for role in _ROLES)),
        tuple(nodes),
        top.string("digest"),
    )


class _Reader:
    """Typed access to one JSON object of a bundle, with the field path in every error."""

    def __init__(self, data: Any, where: str, label: str) -> None:
        self.data, self.where, self.label = data, where, label

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def fail(self, key: str, problem: str) -> BundleError:
        return _fail(self.label, self.field(key), problem)

    def _object(self) -> dict[str, Any]:
        if not isinstance(self.data, dict):
            where = self.where or "the bundle"
            raise BundleError(
                f"bundle {self.label}: {where}: expected an object",
                bundle=self.label,
                field=self.where or None,
            )
        return self.data

    def _get(self, key: str, kind: type, what: str) -> Any:
        if key not in self._object():
            raise self.fail(key, "missing")
        value = self.data[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise self.fail(key, f"expected {what}, got {_json_type(value)}")
        return value

    def only(self, keys: tuple[str, ...]) -> None:
        unexpected = sorted(set(self._object()) - set(keys))
        if unexpected:
            raise self.fail(str(unexpected[0]), "unexpected field")

    def string(self, key: str) -> str:
        return str(self._get(key, str, "a string"))

    def integer(self, key: str) -> int:
        return int(self._get(key, int, "an integer"))

    def boolean(self, key: str) -> bool:
        return bool(self._get(key, bool, "true or false"))

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key, dict, "an object"), self.field(key), self.label)

    def items(self, key: str, kind: type = dict) -> list[_Reader]:
        values = self._get(key, list, "a list")
        if not values:
            raise self.fail(key, "expected at least one entry, got an empty list")
        readers = []
        for i, value in enumerate(values):
            where = f"{self.field(key)}[{i}]"
            if not isinstance(value, kind):
                what = "a string" if kind is str else "an object"
                raise _fail(self.label, where, f"expected {what}, got {_json_type(value)}")
            readers.append(_Reader(value, where, self.label))
        return readers


def _json_type(value: Any) -> str:
    names = {bool: "true or false", int: "a number", float: "a number", str: "a string"}
    names |= {list: "a list", dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _show(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


# Checking: private material, digest, well-formed values, certificates that hold together.


def _check(bundle: OrgBundle, label: str) -> None:
    _refuse_private(bundle.to_json(), label)
    actual = _digest(bundle)
    if actual != bundle.digest:
        said = bundle.digest if _DIGEST.match(bundle.digest) else _show(bundle.digest)
        raise BundleError(
            f"bundle {label}: digest mismatch: the bundle was changed after export "
            f"(it says {said}, its content hashes to {actual})",
            bundle=label,
            field="digest",
        )
    _check_values(bundle, label)
    _check_certificates(bundle, label)


def _refuse_private(data: Any, label: str) -> None:
    where = _private_field(data, "")
    if where is not None:
        raise BundleError(
            f"bundle {label} contains private key material (field {where})",
            bundle=label,
            field=where,
        )


def _private_field(value: Any, where: str) -> str | None:
    """The path of the first field holding private key material, or None."""
    if isinstance(value, str):
        return where if _holds_private_key(value) else None
    children: list[tuple[str, Any]] = []
    if isinstance(value, list):
        children = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict):
        for key, v in value.items():
            if _holds_private_key(str(key)):
                return f"a field name in {where or 'the top level'}"
            children.append((f"{where}.{key}" if where else str(key), v))
    for path, v in children:
        found = _private_field(v, path)
        if found is not None:
            return found
    return None


def _holds_private_key(text: str) -> bool:
    """A PEM private key header, or PEM or base64 content that parses as a private key."""
    if _PRIVATE_MARKER in text:
        return True
    bodies = [m.group(2) for m in _PEM_BLOCK.finditer(text)]
    if _BASE64.match(text):
        bodies.append(text)
    return any(_is_der_private_key(b) for b in bodies)


def _is_der_private_key(b64: str) -> bool:
    try:
        der = base64.b64decode("".join(b64.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    try:
        serialization.load_der_private_key(der, password=None)
    except TypeError:
        return True  # an encrypted key: still private material
    except (ValueError, UnsupportedAlgorithm):
        return False
    return True


def _check_values(bundle: OrgBundle, label: str) -> None:
    fail = functools.partial(_fail, label)

    if bundle.version != VERSION:
        raise fail("version", f"{bundle.version} is not supported (this fedfabric reads {VERSION})")
    if bundle.kind not in _KINDS:
        raise fail("kind", f"expected 'peer' or 'orderer', got {_show(bundle.kind)}")
    if not _NAME.match(bundle.name):
        raise fail("name", f"{_show(bundle.name)} must be lowercase letters, digits and '-'")
    if not _MSP_ID.match(bundle.msp_id):
        raise fail("msp_id", f"{_show(bundle.msp_id)} may hold only letters, digits, '.' and '-'")
    if not _DNS.match(bundle.domain):
        raise fail("domain", f"{_show(bundle.domain)} is not a DNS name")
    if not _DIGEST.match(bundle.digest):
        raise fail("digest", "expected 'sha256:' and 64 lowercase hex digits")
    for role in _ROLES:
        ou = getattr(bundle.node_ous, role)
        if not _OU.match(ou):
            raise fail(f"node_ous.{role}", f"{_show(ou)} is not an OU name")
    seen: dict[tuple[str, str], str] = {}
    for i, node in enumerate(bundle.nodes):
        where = f"nodes[{i}]"
        if not _NAME.match(node.name):
            raise fail(
                f"{where}.name", f"{_show(node.name)} must be lowercase letters, digits, '-'"
            )
        if not _DNS.match(node.host):
            raise fail(f"{where}.host", f"{_show(node.host)} is not a DNS name")
        problem = address_problem(node.address)
        if problem:
            raise fail(f"{where}.address", f"{_show(node.address)} {problem}")
        ports = {"port": node.port, "admin_port": node.admin_port}
        for key, port in ports.items():
            if port is not None and not 1 <= port <= 65535:
                raise fail(f"{where}.{key}", f"expected a port in [1, 65535], got {port}")
        if (bundle.kind == "orderer") != (node.tls_cert is not None):
            raise fail(f"{where}.tls_cert", "an orderer's node has one, a peer's none")
        for key in ("name", "host"):
            value = getattr(node, key)
            if (key, value) in seen:
                raise fail(f"{where}.{key}", f"{_show(value)} is also {seen[key, value]}")
            seen[key, value] = f"{where}.{key}"


def _check_certificates(bundle: OrgBundle, label: str) -> None:
    fail = functools.partial(_fail, label)

    def cert(field: str, pem: str) -> x509.Certificate:
        if not _ONE_CERT.fullmatch(pem.strip()):
            raise fail(field, "expected one PEM certificate (-----BEGIN CERTIFICATE-----)")
        try:
            return x509.load_pem_x509_certificate(pem.encode())
        except ValueError as exc:
            raise fail(field, f"the certificate does not parse: {exc}") from None

    def self_signed_ca(field: str, pem: str) -> x509.Certificate:
        ca = cert(field, pem)
        try:
            is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise fail(field, "not a CA certificate (its basicConstraints do not say CA)")
        if not _issued_by(ca, ca):
            raise fail(field, "not self-signed: a bundle carries its organisation's root CA")
        return ca

    def issued(field: str, pem: str, issuer: x509.Certificate, by: str) -> x509.Certificate:
        c = cert(field, pem)
        if c.issuer != issuer.subject:
            raise fail(
                field,
                f"not issued by the bundle's {by} but by {c.issuer.rfc4514_string()}: "
                "the bundle is inconsistent",
            )
        if not _issued_by(c, issuer):
            raise fail(
                field,
                f"not issued by the bundle's {by}: its signature does not verify with the "
                f"{by}'s key: the bundle is inconsistent",
            )
        return c

    ca = self_signed_ca("ca_cert", bundle.ca_cert)
    tls_ca = self_signed_ca("tls_ca_cert", bundle.tls_ca_cert)
    if not bundle.admin_certs:
        raise fail("admin_certs", "expected at least one admin certificate")
    for i, pem in enumerate(bundle.admin_certs):
        admin = issued(f"admin_certs[{i}]", pem, ca, "ca_cert")
        ou = bundle.node_ous.admin
        if bundle.node_ous.enable and ou not in _ous(admin):
            raise fail(
                f"admin_certs[{i}]",
                f"its subject has no OU {ou!r} (node_ous.admin), so it is no admin: "
                "the bundle is inconsistent",
            )
    for i, node in enumerate(bundle.nodes):
        if node.tls_cert is None:
            continue
        tls = issued(f"nodes[{i}].tls_cert", node.tls_cert, tls_ca, "tls_ca_cert")
        try:
            sans = tls.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = sans.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        if node.host not in names:
            raise fail(
                f"nodes[{i}].tls_cert",
                f"does not name its host {node.host} (its DNS names: {', '.join(names) or 'none'})",
            )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _ous(cert: x509.Certificate) -> set[str]:
    return {
        str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    }
