"""The consortium topology: one YAML file, parsed and checked into frozen dataclasses.

Every other part of `fedfabric.network` (crypto material, Fabric configuration, processes,
chaincode deployment) is derived from a `Topology`. An invalid file raises `TopologyError`
naming the offending field before anything is generated or started.

Each node is at one address (an IP address or DNS name: its ``address``, else its
organisation's, else 127.0.0.1), where it binds all its ports and where the others reach it;
nodes at different addresses may share port numbers.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedfabric.network._errors import NetworkError
from fedfabric.network._policy import PolicyError, majority_policy, parse_policy, principals

DEFAULT_TOPOLOGY = Path(__file__).with_name("topology.yaml")
DEFAULT_ADDRESS = "127.0.0.1"
_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
_MSP_ID = re.compile(r"^[A-Za-z0-9.-]+$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_SIZE = re.compile(r"^\s*(\d+)\s*(KB|MB)\s*$")
_DURATION = re.compile(r"^\d+(ms|s)$")


class TopologyError(NetworkError, ValueError):
    """The topology file is invalid; the message names the field (``organizations[1].peers``)."""


def address_problem(value: str) -> str | None:
    """Why ``value`` cannot be a node's address, or None if it can: an IPv4 or IPv6 address or
    a DNS name, and not an unspecified address (``0.0.0.0``, ``::``), because a node advertises
    the address it binds to."""
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        # A name's last label is never all digits (RFC 3696), so 10.77.0.256 is no name.
        if _DNS.match(value) and not value.rsplit(".", 1)[-1].isdigit():
            return None
        return "is no IP address or DNS name"
    if ip.is_unspecified:
        return "binds every interface and reaches none; give the node's own address"
    return None


def url_host(address: str) -> str:
    """``address`` as the host part of ``HOST:PORT`` (an IPv6 address in brackets)."""
    return f"[{address}]" if ":" in address else address


class _Node:
    """A process of the network, named ``<name>.<org domain>`` (the name its TLS certificate
    carries), bound to ``bind_host`` on each of its ports, which is also where every other node
    and client reaches it: the topology's ``address`` of the node, else of its organisation,
    else 127.0.0.1."""

    name: str
    port: int
    org_domain: str
    bind_host: str

    @property
    def host(self) -> str:
        return f"{self.name}.{self.org_domain}"

    @property
    def address(self) -> str:
        """``HOST:PORT`` of the node's main port (peer or orderer service)."""
        return self.address_at(self.port)

    def address_at(self, port: int) -> str:
        """``HOST:PORT`` of another of the node's ports (operations, admin, ...)."""
        return f"{url_host(self.bind_host)}:{port}"


@dataclass(frozen=True)
class Orderer(_Node):
    name: str
    port: int
    admin_port: int
    operations_port: int
    org_domain: str
    bind_host: str


@dataclass(frozen=True)
class Peer(_Node):
    name: str
    org: str
    port: int
    chaincode_port: int
    operations_port: int
    chaincode_server_port: int
    org_domain: str
    bind_host: str


@dataclass(frozen=True)
class Organization:
    """A peer organisation; ``address`` is its nodes' address unless a node has its own."""

    name: str
    msp_id: str
    domain: str
    users: int
    peers: tuple[Peer, ...]
    address: str = DEFAULT_ADDRESS


@dataclass(frozen=True)
class OrdererOrg:
    """The ordering organisation; ``address`` as for `Organization`."""

    name: str
    msp_id: str
    domain: str
    orderers: tuple[Orderer, ...]
    address: str = DEFAULT_ADDRESS


@dataclass(frozen=True)
class Consensus:
    """The orderers' batch settings (why these defaults: network/topology.yaml)."""

    type: str = "etcdraft"
    batch_timeout: str = "5ms"
    max_message_count: int = 100
    absolute_max_bytes: str = "99 MB"
    preferred_max_bytes: str = "512 KB"


@dataclass(frozen=True)
class Chaincode:
    """A chaincode served as a service: ``server`` is ``python`` (contract) or ``node`` (path)."""

    name: str
    version: str
    server: str
    contract: str | None
    path: Path | None
    endorsement_policy: str
    slot: int
    settings: dict[str, dict[str, str]] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.name}_{self.version}"


@dataclass(frozen=True)
class Topology:
    name: str
    channel: str
    consensus: Consensus
    orderer_org: OrdererOrg
    organizations: tuple[Organization, ...]
    endorsement_policy: str
    chaincodes: tuple[Chaincode, ...]
    source: Path | None = None

    @property
    def peers(self) -> tuple[Peer, ...]:
        return tuple(p for org in self.organizations for p in org.peers)

    def org(self, name: str) -> Organization:
        """The organisation named ``name`` (its name or MSP id)."""
        for org in self.organizations:
            if name in (org.name, org.msp_id):
                return org
        known = ", ".join(o.name for o in self.organizations)
        raise TopologyError(f"unknown organization {name!r} (known: {known})")

    def any_org(self, name: str) -> Organization | OrdererOrg:
        """The peer organisation or the ordering organisation named ``name`` (name or MSP id)."""
        oo = self.orderer_org
        if name in (oo.name, oo.msp_id):
            return oo
        for org in self.organizations:
            if name in (org.name, org.msp_id):
                return org
        known = ", ".join([o.name for o in self.organizations] + [oo.name])
        raise TopologyError(f"unknown organization {name!r} (known: {known})")

    def chaincode(self, name: str) -> Chaincode:
        for cc in self.chaincodes:
            if cc.name == name:
                return cc
        known = ", ".join(c.name for c in self.chaincodes) or "none"
        raise TopologyError(f"unknown chaincode {name!r} (known: {known})")

    def node_ports(self) -> list[tuple[str, str, str, int]]:
        """Every port the network listens on: (node, purpose, its bind_host, port)."""
        ports = []
        for o in self.orderer_org.orderers:
            ports += [
                (o.host, "port", o.bind_host, o.port),
                (o.host, "admin_port", o.bind_host, o.admin_port),
                (o.host, "operations_port", o.bind_host, o.operations_port),
            ]
        for p in self.peers:
            ports += [
                (p.host, "port", p.bind_host, p.port),
                (p.host, "chaincode_port", p.bind_host, p.chaincode_port),
                (p.host, "operations_port", p.bind_host, p.operations_port),
            ]
            ports += [
                (
                    p.host,
                    f"chaincode_server_port+{cc.slot} ({cc.name})",
                    p.bind_host,
                    p.chaincode_server_port + cc.slot,
                )
                for cc in self.chaincodes
            ]
        return ports


def load_topology(path: str | Path | None = None) -> Topology:
    """Read and check a topology file (default: the packaged ``topology.yaml``)."""
    path = Path(path) if path else DEFAULT_TOPOLOGY
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise TopologyError(f"cannot read topology file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise TopologyError(f"topology file {path} is not valid YAML: {exc}") from exc
    return parse_topology(data, source=path)


def parse_topology(data: Any, *, source: Path | None = None) -> Topology:
    """Build a `Topology` from already-loaded YAML data, checking every field."""
    r = _Reader(data, "topology")
    name = r.name("name")
    channel = r.name("channel")
    consensus = _consensus(r.optional_sub("consensus"))
    oo = r.sub("orderer_org")
    oo_name = oo.name("name")
    oo_domain = f"{oo_name}.{name}.example"
    oo_address = oo.address("address", DEFAULT_ADDRESS)
    orderers = tuple(
        Orderer(
            o.name("name"),
            o.port("port"),
            o.port("admin_port"),
            o.port("operations_port"),
            oo_domain,
            o.address("address", oo_address),
        )
        for o in oo.items("orderers", min_len=1)
    )
    orderer_org = OrdererOrg(oo_name, oo.msp_id("msp_id"), oo_domain, orderers, oo_address)
    orgs = []
    for o in r.items("organizations", min_len=1):
        org_name = o.name("name")
        domain = f"{org_name}.{name}.example"
        org_address = o.address("address", DEFAULT_ADDRESS)
        peers = tuple(
            Peer(
                p.name("name"),
                org_name,
                p.port("port"),
                p.port("chaincode_port"),
                p.port("operations_port"),
                p.port("chaincode_server_port"),
                domain,
                p.address("address", org_address),
            )
            for p in o.items("peers", min_len=1)
        )
        users = o.integer("users", 1, 1000)
        orgs.append(Organization(org_name, o.msp_id("msp_id"), domain, users, peers, org_address))
    msp_ids = [o.msp_id for o in orgs]
    policy = r.string("endorsement_policy", default=majority_policy(msp_ids))
    chaincodes = []
    for slot, c in enumerate(r.items("chaincodes", min_len=0)):
        chaincodes.append(_chaincode(c, slot, policy, msp_ids, source))
    topo = Topology(
        name, channel, consensus, orderer_org, tuple(orgs), policy, tuple(chaincodes), source
    )
    _check_unique(topo)
    _check_policy(policy, "endorsement_policy", msp_ids)
    for i, cc in enumerate(chaincodes):
        _check_policy(
            cc.endorsement_policy, f"topology.chaincodes[{i}].endorsement_policy", msp_ids
        )
    return topo


def _consensus(r: _Reader | None) -> Consensus:
    if r is None:
        return Consensus()
    kind = r.string("type", default="etcdraft")
    if kind != "etcdraft":
        raise TopologyError(f"{r.where}.type: only 'etcdraft' is supported, got {kind!r}")
    d = Consensus()
    timeout = r.string("batch_timeout", default=d.batch_timeout)
    if not _DURATION.match(timeout):
        raise TopologyError(f"{r.where}.batch_timeout: expected a duration like 10ms or 2s")
    sizes = [
        r.string(k, default=getattr(d, k)) for k in ("absolute_max_bytes", "preferred_max_bytes")
    ]
    for key, value in zip(("absolute_max_bytes", "preferred_max_bytes"), sizes, strict=True):
        if not _SIZE.match(value):
            raise TopologyError(f"{r.where}.{key}: expected a size like '99 MB' or '16 KB'")
    count = r.integer("max_message_count", 1, 100000, default=d.max_message_count)
    return Consensus(kind, timeout, count, *sizes)


def _chaincode(
    r: _Reader, slot: int, default_policy: str, msp_ids: list[str], source: Path | None
) -> Chaincode:
    server = r.string("server")
    contract = path = None
    if server == "python":
        contract = r.string("contract")
        if ":" not in contract:
            raise TopologyError(f"{r.where}.contract: expected 'module:Class', got {contract!r}")
    elif server == "node":
        raw = Path(r.string("path"))
        path = raw if raw.is_absolute() or source is None else source.parent / raw
    else:
        raise TopologyError(f"{r.where}.server: expected 'python' or 'node', got {server!r}")
    policy = r.string("endorsement_policy", default=default_policy)
    settings_r = r.optional_sub("settings")
    settings = {}
    if settings_r is not None:
        for org, values in settings_r.data.items():
            if org not in msp_ids:
                raise TopologyError(f"{settings_r.where}.{org}: unknown organization")
            if not isinstance(values, dict):
                raise TopologyError(f"{settings_r.where}.{org}: expected a mapping of settings")
            settings[org] = {str(k): str(v) for k, v in values.items()}
    return Chaincode(
        r.name("name"),
        r.string("version", default="1.0"),
        server,
        contract,
        path,
        policy,
        slot,
        settings,
    )


def _check_policy(policy: str, where: str, msp_ids: list[str]) -> None:
    try:
        rule = parse_policy(policy)
    except PolicyError as exc:
        raise TopologyError(f"{where}: {exc}") from exc
    for p in principals(rule):
        if p.msp_id not in msp_ids:
            raise TopologyError(
                f"{where}: unknown organization {p.msp_id!r} in policy "
                f"(known MSP ids: {', '.join(msp_ids)})"
            )


def _check_unique(topo: Topology) -> None:
    def dupes(values: list[str], what: str) -> None:
        seen: set[str] = set()
        for v in values:
            if v in seen:
                raise TopologyError(f"{what}: duplicate name {v!r}")
            seen.add(v)

    dupes([o.name for o in topo.organizations] + [topo.orderer_org.name], "organizations")
    dupes([o.msp_id for o in topo.organizations] + [topo.orderer_org.msp_id], "msp_id")
    dupes([o.name for o in topo.orderer_org.orderers], "orderer_org.orderers")
    for i, org in enumerate(topo.organizations):
        dupes([p.name for p in org.peers], f"organizations[{i}].peers")
    dupes([c.name for c in topo.chaincodes], "chaincodes")
    # Nodes on different addresses may share a port number (each organisation on its host).
    used: dict[tuple[str, int], str] = {}
    for node, purpose, host, port in topo.node_ports():
        if (host, port) in used:
            raise TopologyError(
                f"port clash: {node} {purpose} = {port} is also {used[host, port]} on {host}"
            )
        used[host, port] = f"{node} {purpose}"


class _Reader:
    """Typed access to one mapping of the YAML document, with error paths."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise TopologyError(f"{where}: expected a mapping")
        self.data, self.where = data, where

    def _get(self, key: str, default: Any = None) -> Any:
        if key not in self.data:
            if default is None:
                raise TopologyError(f"{self.where}.{key}: missing")
            return default
        return self.data[key]

    def string(self, key: str, default: str | None = None) -> str:
        value = self._get(key, default)
        if not isinstance(value, str | int | float) or isinstance(value, bool) or value == "":
            raise TopologyError(f"{self.where}.{key}: expected a non-empty string")
        return str(value)

    def name(self, key: str) -> str:
        value = self.string(key)
        if not _NAME.match(value):
            raise TopologyError(
                f"{self.where}.{key}: {value!r} must be lowercase letters, digits "
                "and '-', starting with a letter"
            )
        return value

    def msp_id(self, key: str) -> str:
        value = self.string(key)
        if not _MSP_ID.match(value):
            raise TopologyError(
                f"{self.where}.{key}: {value!r} may hold only letters, digits, '.' and '-'"
            )
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self._get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise TopologyError(
                f"{self.where}.{key}: expected an integer in [{low}, {high}], got {value!r}"
            )
        return value

    def address(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):  # YAML reads some IPv6 addresses as numbers
            raise TopologyError(
                f"{self.where}.{key}: expected an IP address or DNS name as a string "
                f"(quote it), got {value!r}"
            )
        problem = address_problem(value)
        if problem:
            raise TopologyError(f"{self.where}.{key}: {value!r} {problem}")
        return value

    def port(self, key: str) -> int:
        return self.integer(key, 1024, 65535)

    def sub(self, key: str) -> _Reader:
        return _Reader(self._get(key), f"{self.where}.{key}")

    def optional_sub(self, key: str) -> _Reader | None:
        return self.sub(key) if key in self.data else None

    def items(self, key: str, min_len: int) -> list[_Reader]:
        value = self.data.get(key, [] if min_len == 0 else None)
        if not isinstance(value, list) or len(value) < min_len:
            raise TopologyError(f"{self.where}.{key}: expected a list of at least {min_len}")
        return [_Reader(v, f"{self.where}.{key}[{i}]") for i, v in enumerate(value)]
