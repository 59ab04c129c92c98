"""Fabric configuration files rendered from the topology.

``core.yaml`` and ``orderer.yaml`` start from the installed release's own ``config/`` files
(so every key keeps the release's default) and get the topology's values set on top;
``configtx.yaml`` is written whole from the topology. Every node binds each of its ports to its
own address (`Peer.bind_host`, `Orderer.bind_host`) and advertises that address: the peers'
gossip endpoints and anchor peers, the orderers' endpoints and Raft consenters.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from fedfabric.network._bundle import BundleError, OrgBundle, write_msp
from fedfabric.network._crypto import org_dir, user_name
from fedfabric.network._layout import Layout
from fedfabric.network._topology import (
    Orderer,
    OrdererOrg,
    Organization,
    Peer,
    Topology,
    url_host,
)

CCAAS_BUILDER = Path(__file__).parent / "fabric" / "ccaas_builder"
CCAAS_DIR_ENV = "FEDFABRIC_CCAAS_DIR"
_GOSSIP_TIMINGS = {
    "aliveTimeInterval": "1s",
    "aliveExpirationTimeout": "5s",
    "reconnectInterval": "1s",
    "publishStateInfoInterval": "1s",
    "requestStateInfoInterval": "1s",
    "pullInterval": "1s",
    "membershipTrackerInterval": "1s",
}


def render_all(topology: Topology, layout: Layout, release_config: Path) -> None:
    """Write every node's configuration (`write_configtx` writes the channel's)."""
    # The builder is copied into the state directory so a container that mounts only the
    # state directory (docker-compose.yaml) finds it at the same path.
    shutil.copytree(CCAAS_BUILDER, layout.ccaas_builder_dir, dirs_exist_ok=True)
    core = _load(release_config / "core.yaml")
    orderer = _load(release_config / "orderer.yaml")
    for o in topology.orderer_org.orderers:
        doc = orderer_yaml(copy.deepcopy(orderer), topology, layout, o)
        _dump(layout.node_dir(o.host) / "orderer.yaml", doc)
    for p in topology.peers:
        _dump(
            layout.node_dir(p.host) / "core.yaml",
            core_yaml(copy.deepcopy(core), topology, layout, p),
        )


def write_configtx(topology: Topology, layout: Layout, bundles: Mapping[str, OrgBundle]) -> Path:
    """Write the channel's configtx.yaml (`configtx_yaml`); return its folder."""
    _dump(layout.configtx_dir / "configtx.yaml", configtx_yaml(topology, layout, bundles))
    return layout.configtx_dir


def core_yaml(base: dict[str, Any], topology: Topology, layout: Layout, p: Peer) -> dict[str, Any]:
    """A peer's core.yaml: the release defaults with this peer's identity, ports and paths."""
    org = topology.org(p.org)
    node = org_dir(layout.crypto_dir, org) / "peers" / p.host
    data = layout.node_dir(p.host)
    _set(base, "peer.id", p.host)
    _set(base, "peer.networkId", topology.name)
    _set(base, "peer.listenAddress", p.address)
    _set(base, "peer.address", p.address)
    _set(base, "peer.chaincodeListenAddress", p.address_at(p.chaincode_port))
    _set(base, "peer.chaincodeAddress", p.address_at(p.chaincode_port))
    _set(base, "peer.gossip.bootstrap", org.peers[0].address)
    _set(base, "peer.gossip.endpoint", p.address)
    _set(base, "peer.gossip.externalEndpoint", p.address)
    # Gossip spreads membership and installed chaincodes, which the gateway's endorsement
    # planning (discovery) relies on; the release's WAN-minded intervals (reconnect 25s,
    # state info 4s) make a fresh local network take half a minute to be fully plannable.
    for key, value in _GOSSIP_TIMINGS.items():
        _set(base, f"peer.gossip.{key}", value)
    _set(base, "peer.localMspId", org.msp_id)
    _set(base, "peer.mspConfigPath", str(node / "msp"))
    _set(base, "peer.tls.enabled", True)
    _set(base, "peer.tls.cert.file", str(node / "tls" / "server.crt"))
    _set(base, "peer.tls.key.file", str(node / "tls" / "server.key"))
    _set(base, "peer.tls.rootcert.file", str(node / "tls" / "ca.crt"))
    _set(base, "peer.fileSystemPath", str(data / "data"))
    _set(base, "ledger.snapshots.rootDir", str(data / "data" / "snapshots"))
    _set(base, "operations.listenAddress", p.address_at(p.operations_port))
    _set(base, "metrics.provider", "prometheus")
    _set(base, "vm.endpoint", "")
    _set(
        base,
        "chaincode.externalBuilders",
        [
            {
                "name": "fedfabric-ccaas",
                "path": str(layout.ccaas_builder_dir),
                "propagateEnvironment": [CCAAS_DIR_ENV],
            }
        ],
    )
    return base


def orderer_yaml(
    base: dict[str, Any], topology: Topology, layout: Layout, o: Orderer
) -> dict[str, Any]:
    """An orderer's orderer.yaml: release defaults, channel participation, TLS, Raft paths."""
    oo = topology.orderer_org
    node = org_dir(layout.crypto_dir, oo) / "orderers" / o.host
    tls = node / "tls"
    data = layout.node_dir(o.host) / "data"
    # Fabric joins ListenAddress and ListenPort (and a consenter's Host and Port) with "%s:%d".
    _set(base, "General.ListenAddress", url_host(o.bind_host))
    _set(base, "General.ListenPort", o.port)
    _set(base, "General.TLS.Enabled", True)
    _set(base, "General.TLS.PrivateKey", str(tls / "server.key"))
    _set(base, "General.TLS.Certificate", str(tls / "server.crt"))
    _set(base, "General.TLS.RootCAs", [str(tls / "ca.crt")])
    _set(base, "General.Cluster.ClientCertificate", str(tls / "server.crt"))
    _set(base, "General.Cluster.ClientPrivateKey", str(tls / "server.key"))
    _set(base, "General.BootstrapMethod", "none")
    _set(base, "General.LocalMSPDir", str(node / "msp"))
    _set(base, "General.LocalMSPID", oo.msp_id)
    _set(base, "FileLedger.Location", str(data / "ledger"))
    _set(base, "Consensus.WALDir", str(data / "etcdraft" / "wal"))
    _set(base, "Consensus.SnapDir", str(data / "etcdraft" / "snapshot"))
    _set(base, "Operations.ListenAddress", o.address_at(o.operations_port))
    _set(base, "Metrics.Provider", "prometheus")
    _set(base, "Admin.ListenAddress", o.address_at(o.admin_port))
    _set(base, "Admin.TLS.Enabled", True)
    _set(base, "Admin.TLS.Certificate", str(tls / "server.crt"))
    _set(base, "Admin.TLS.PrivateKey", str(tls / "server.key"))
    _set(base, "Admin.TLS.ClientAuthRequired", True)
    _set(base, "Admin.TLS.ClientRootCAs", [str(tls / "ca.crt")])
    _set(base, "ChannelParticipation.Enabled", True)
    return base


def consortium_bundles(topology: Topology, bundles: Sequence[OrgBundle]) -> dict[str, OrgBundle]:
    """The bundles of the topology's organisations by MSP id: exactly one for each (the
    ordering organisation included), each of the kind, domain and nodes the topology gives
    it. Raises `BundleError` naming the organisation otherwise."""
    found: dict[str, OrgBundle] = {}
    for one in bundles:
        if one.msp_id in found:
            raise BundleError(f"two bundles for {one.msp_id}", bundle=one.msp_id)
        found[one.msp_id] = one
    orgs: list[Organization | OrdererOrg] = [topology.orderer_org, *topology.organizations]
    expected = {o.msp_id for o in orgs}
    if extra := sorted(set(found) - expected):
        raise BundleError(
            f"bundles of organisations the topology does not have: {', '.join(extra)}",
            bundle=extra[0],
        )
    for org in orgs:
        b = found.get(org.msp_id)
        if b is None:
            raise BundleError(
                f"no bundle for {org.msp_id} ({org.name}): it runs `fedfabric org init` and "
                "sends its bundle",
                bundle=org.msp_id,
            )
        kind = "orderer" if isinstance(org, OrdererOrg) else "peer"
        nodes = org.orderers if isinstance(org, OrdererOrg) else org.peers
        if b.kind != kind or b.domain != org.domain:
            raise BundleError(
                f"bundle of {org.msp_id} is a {b.kind} organisation of {b.domain}; the "
                f"topology has a {kind} organisation of {org.domain}",
                bundle=org.msp_id,
            )
        if sorted(n.host for n in b.nodes) != sorted(n.host for n in nodes):
            raise BundleError(
                f"bundle of {org.msp_id} names nodes {sorted(n.host for n in b.nodes)}; the "
                f"topology has {sorted(n.host for n in nodes)}",
                bundle=org.msp_id,
            )
    return found


def configtx_yaml(
    topology: Topology, layout: Layout, bundles: Mapping[str, OrgBundle]
) -> dict[str, Any]:
    """The channel definition for ``configtxgen -profile Channel``, from the organisations'
    public bundles alone (`consortium_bundles`): each organisation's MSP (written from its
    bundle under ``configtx/msps/``), endpoints and the orderers' TLS certificates; the
    topology gives the channel's own settings. No anchor peers: each organisation sets its
    own, by a config update only its admin signs (`_anchors`)."""
    oo = topology.orderer_org
    msps = layout.configtx_dir / "msps"
    ordering = bundles[oo.msp_id]
    orderer_org = {
        "Name": oo.msp_id,
        "ID": oo.msp_id,
        "MSPDir": str(write_msp(ordering, msps / oo.msp_id)),
        "Policies": _org_policies(oo.msp_id, orderer=True),
        "OrdererEndpoints": [f"{url_host(n.address)}:{n.port}" for n in ordering.nodes],
    }
    orgs = []
    for org in topology.organizations:
        b = bundles[org.msp_id]
        orgs.append(
            {
                "Name": org.msp_id,
                "ID": org.msp_id,
                "MSPDir": str(write_msp(b, msps / org.msp_id)),
                "Policies": _org_policies(org.msp_id, orderer=False),
            }
        )
    consenters = []
    for n in ordering.nodes:
        assert n.tls_cert is not None  # an ordering organisation's bundle names them
        cert = msps / oo.msp_id / "consenters" / f"{n.host}.crt"
        cert.parent.mkdir(parents=True, exist_ok=True)
        cert.write_text(n.tls_cert)
        consenters.append(
            {
                "Host": url_host(n.address),
                "Port": n.port,
                "ClientTLSCert": str(cert),
                "ServerTLSCert": str(cert),
            }
        )
    meta = {"Type": "ImplicitMeta"}
    c = topology.consensus
    # SnapshotIntervalSize is at most one Raft batch (PreferredMaxBytes). An orderer that starts
    # without a Raft snapshot replays the channel's bootstrap configuration changes from its WAL;
    # when that replay spans more than one batch, Fabric builds before the fix of fabric#4199
    # (the pinned 3.0 snapshot among them) deadlock and the orderer never votes again. With an
    # early snapshot those changes are inside it and never replayed.
    profile = {
        "Policies": {
            "Readers": {**meta, "Rule": "ANY Readers"},
            "Writers": {**meta, "Rule": "ANY Writers"},
            "Admins": {**meta, "Rule": "MAJORITY Admins"},
        },
        "Capabilities": {"V2_0": True},
        "Orderer": {
            "OrdererType": c.type,
            "BatchTimeout": c.batch_timeout,
            "BatchSize": {
                "MaxMessageCount": c.max_message_count,
                "AbsoluteMaxBytes": c.absolute_max_bytes,
                "PreferredMaxBytes": c.preferred_max_bytes,
            },
            "EtcdRaft": {
                "Consenters": consenters,
                "Options": {
                    "TickInterval": "500ms",
                    "ElectionTick": 10,
                    "HeartbeatTick": 1,
                    "MaxInflightBlocks": 5,
                    "SnapshotIntervalSize": c.preferred_max_bytes,
                },
            },
            "Organizations": [orderer_org],
            "Policies": {
                "Readers": {**meta, "Rule": "ANY Readers"},
                "Writers": {**meta, "Rule": "ANY Writers"},
                "Admins": {**meta, "Rule": "MAJORITY Admins"},
                "BlockValidation": {**meta, "Rule": "ANY Writers"},
            },
            "Capabilities": {"V2_0": True},
        },
        "Application": {
            "Organizations": orgs,
            "Policies": {
                "Readers": {**meta, "Rule": "ANY Readers"},
                "Writers": {**meta, "Rule": "ANY Writers"},
                "Admins": {**meta, "Rule": "MAJORITY Admins"},
                "LifecycleEndorsement": {**meta, "Rule": "MAJORITY Endorsement"},
                "Endorsement": {**meta, "Rule": "MAJORITY Endorsement"},
            },
            "Capabilities": {"V2_5": True},
        },
    }
    return {"Profiles": {"Channel": profile}}


def admin_msp(layout: Layout, topology: Topology, org_name: str) -> Path:
    """The MSP folder of an organisation's admin (orderer org included)."""
    oo = topology.orderer_org
    org = oo if org_name in (oo.name, oo.msp_id) else topology.org(org_name)
    return org_dir(layout.crypto_dir, org) / "users" / user_name(org, "Admin") / "msp"


def _org_policies(msp_id: str, *, orderer: bool) -> dict[str, Any]:
    sig = "Signature"
    readers = (
        f"OR('{msp_id}.member')"
        if orderer
        else f"OR('{msp_id}.admin', '{msp_id}.peer', '{msp_id}.client')"
    )
    writers = f"OR('{msp_id}.member')" if orderer else f"OR('{msp_id}.admin', '{msp_id}.client')"
    policies = {
        "Readers": {"Type": sig, "Rule": readers},
        "Writers": {"Type": sig, "Rule": writers},
        "Admins": {"Type": sig, "Rule": f"OR('{msp_id}.admin')"},
    }
    if not orderer:
        policies["Endorsement"] = {"Type": sig, "Rule": f"OR('{msp_id}.peer')"}
    return policies


def _set(doc: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[last] = value


def _load(path: Path) -> dict[str, Any]:
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise FileNotFoundError(
            f"Fabric release config {path} is missing; run scripts/install-fabric"
        ) from exc


def _dump(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
