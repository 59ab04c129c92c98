"""Fabric configuration rendered from the topology, the CCaaS package, and docker-compose.yaml."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from fabric_protos.peer.configuration_pb2 import AnchorPeers

from fedfabric.network import (
    FabricNetwork,
    NetworkError,
    Peer,
    Topology,
    fabric_release,
    load_topology,
    parse_topology,
)
from fedfabric.network._bundle import BundleError, read_bundle
from fedfabric.network._ccaas import (
    package_bytes,
    package_id,
    server_address,
    server_args,
    server_name,
)
from fedfabric.network._compose import STATE, compose_document, compose_yaml
from fedfabric.network._config import configtx_yaml, consortium_bundles, core_yaml, orderer_yaml
from fedfabric.network._layout import Layout
from fedfabric.network.fabric._anchors import anchor_value
from fedfabric.network.fabric._ceremony import write_own_bundle
from fedfabric.network.fabric._chaincode import _server_settings, with_settings
from tests.conftest import ROOT, topology_data, with_addresses

TOPOLOGY = load_topology()
ORGS = [TOPOLOGY.orderer_org, *TOPOLOGY.organizations]


@pytest.fixture(scope="module")
def bundle_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every organisation's public bundle, each made as `fedfabric org init` makes it."""
    layout = Layout(tmp_path_factory.mktemp("orgs"))
    return [write_own_bundle(TOPOLOGY, o.msp_id, layout) for o in ORGS]


def channel_of(topology: Topology, tmp_path: Path) -> dict:
    """configtx.yaml of `topology`, from bundles its organisations make in `tmp_path`."""
    layout = Layout(tmp_path / "orgs")
    orgs = [topology.orderer_org, *topology.organizations]
    files = [write_own_bundle(topology, o.msp_id, layout) for o in orgs]
    bundles = consortium_bundles(topology, [read_bundle(f) for f in files])
    return configtx_yaml(topology, Layout(tmp_path), bundles)


def channel_profile(tmp_path: Path, bundle_files: list[Path]) -> dict:
    bundles = consortium_bundles(TOPOLOGY, [read_bundle(f) for f in bundle_files])
    return configtx_yaml(TOPOLOGY, Layout(tmp_path), bundles)["Profiles"]["Channel"]


RELEASE_LIKE = {"peer": {"gateway": {"enabled": True}}, "chaincode": {"externalBuilders": []}}
_ADDRESS_KEY = re.compile(r"(address|endpoints?|bootstrap|host)$", re.IGNORECASE)
_HOST_PORT = re.compile(r"^\[?(?P<host>.*?)\]?(:\d+)?$")


def addressed_topology() -> Topology:
    """Energy's peer on 10.77.0.3, the orderers on 10.77.0.10 but orderer2 on a DNS name."""
    data = with_addresses(topology_data(), energy="10.77.0.3", ordering="10.77.0.10")
    data["orderer_org"]["orderers"][2]["address"] = "orderer2.example.org"
    return parse_topology(data)


def hosts(doc: Any, path: str = "") -> dict[str, str]:
    """The host of every address in a rendered document (under keys like listenAddress,
    externalEndpoint, Host, OrdererEndpoints) by its dotted path; empty values left out."""
    if isinstance(doc, list):
        return {k: v for i, item in enumerate(doc) for k, v in hosts(item, f"{path}[{i}]").items()}
    if not isinstance(doc, dict):
        return {}
    found: dict[str, str] = {}
    for key, value in doc.items():
        where = f"{path}.{key}".lstrip(".")
        if not _ADDRESS_KEY.search(key):
            found |= hosts(value, where)
        elif isinstance(value, list):
            found |= {f"{where}[{i}]": _host(v) for i, v in enumerate(value)}
        elif value:
            found[where] = _host(value)
    return found


def anchor_hosts(peer: Peer) -> list[tuple[str, int]]:
    """(host, port) of the anchor peer value an organisation's own update sets for `peer`."""
    value = AnchorPeers.FromString(anchor_value((peer,)))
    return [(a.host, a.port) for a in value.anchor_peers]


def _host(address: str) -> str:
    match = _HOST_PORT.fullmatch(address)
    assert match is not None
    return match["host"]


def rendered(topology: Topology, layout: Layout) -> dict[str, dict[str, str]]:
    """Every node's core.yaml / orderer.yaml and the configtx.yaml, as `hosts`, by node."""
    docs = {
        o.host: hosts(orderer_yaml({}, topology, layout, o)) for o in topology.orderer_org.orderers
    }
    docs |= {p.host: hosts(core_yaml({}, topology, layout, p)) for p in topology.peers}
    return docs | {"configtx": hosts(channel_of(topology, layout.root)["Profiles"]["Channel"])}


def test_core_yaml_carries_the_peer_identity_ports_and_tls(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    peer = TOPOLOGY.peers[1]

    core = core_yaml(json.loads(json.dumps(RELEASE_LIKE)), TOPOLOGY, layout, peer)

    assert core["peer"]["gateway"] == {"enabled": True}  # release defaults are kept
    assert core["peer"]["listenAddress"] == f"127.0.0.1:{peer.port}"
    assert core["peer"]["localMspId"] == "EnergyMSP"
    assert core["peer"]["tls"]["enabled"] is True
    assert core["peer"]["tls"]["cert"]["file"].endswith(f"peers/{peer.host}/tls/server.crt")
    assert core["operations"]["listenAddress"] == f"127.0.0.1:{peer.operations_port}"
    [builder] = core["chaincode"]["externalBuilders"]
    assert builder["path"] == str(layout.ccaas_builder_dir)


def test_orderer_yaml_uses_channel_participation_and_admin_mtls(tmp_path: Path) -> None:
    o = TOPOLOGY.orderer_org.orderers[2]

    doc = orderer_yaml({}, TOPOLOGY, Layout(tmp_path), o)

    assert doc["General"]["ListenPort"] == o.port and doc["General"]["BootstrapMethod"] == "none"
    assert doc["ChannelParticipation"]["Enabled"] is True
    assert doc["Admin"]["ListenAddress"] == f"127.0.0.1:{o.admin_port}"
    assert doc["Admin"]["TLS"]["ClientAuthRequired"] is True


def test_configtx_has_every_org_and_the_raft_consenters_but_no_anchor_peers(
    tmp_path: Path, bundle_files: list[Path]
) -> None:
    profile = channel_profile(tmp_path, bundle_files)

    consenters = profile["Orderer"]["EtcdRaft"]["Consenters"]
    assert [c["Port"] for c in consenters] == [o.port for o in TOPOLOGY.orderer_org.orderers]
    orgs = profile["Application"]["Organizations"]
    assert [o["ID"] for o in orgs] == [o.msp_id for o in TOPOLOGY.organizations]
    assert not [o for o in orgs if "AnchorPeers" in o]  # each org sets its own, later
    assert profile["Orderer"]["BatchTimeout"] == "5ms"


def test_the_channel_config_is_made_from_public_bundles_alone(
    tmp_path: Path, bundle_files: list[Path]
) -> None:
    profile = channel_profile(tmp_path, bundle_files)

    folders = [Path(o["MSPDir"]) for o in profile["Application"]["Organizations"]]
    folders.append(Path(profile["Orderer"]["Organizations"][0]["MSPDir"]))
    consenter = profile["Orderer"]["EtcdRaft"]["Consenters"][0]
    ordering = read_bundle(bundle_files[0])
    assert Path(consenter["ServerTLSCert"]).read_text() == ordering.nodes[0].tls_cert
    for folder in folders:
        assert folder.is_relative_to(tmp_path)  # written from the bundles, not the keys' folder
        written = [p.read_text() for p in folder.rglob("*") if p.is_file()]
        assert written and not [t for t in written if "PRIVATE KEY" in t]


def test_a_missing_extra_or_duplicate_bundle_is_named(bundle_files: list[Path]) -> None:
    bundles = [read_bundle(f) for f in bundle_files]
    health = bundles[-1]

    with pytest.raises(BundleError, match=f"no bundle for {health.msp_id}"):
        consortium_bundles(TOPOLOGY, bundles[:-1])
    with pytest.raises(BundleError, match=f"two bundles for {health.msp_id}"):
        consortium_bundles(TOPOLOGY, [*bundles, health])
    other = dataclasses.replace(health, msp_id="OtherMSP")
    with pytest.raises(BundleError, match="organisations the topology does not have: OtherMSP"):
        consortium_bundles(TOPOLOGY, [*bundles, other])


def test_the_default_topology_renders_127_0_0_1_everywhere(tmp_path: Path) -> None:
    docs = rendered(TOPOLOGY, Layout(tmp_path))

    peer, orderer = TOPOLOGY.peers[0].host, TOPOLOGY.orderer_org.orderers[0].host
    assert set(docs[peer]) == {
        f"peer.{key}"
        for key in (
            "listenAddress",
            "address",
            "chaincodeListenAddress",
            "chaincodeAddress",
            "gossip.bootstrap",
            "gossip.endpoint",
            "gossip.externalEndpoint",
        )
    } | {"operations.listenAddress"}
    assert set(docs[orderer]) == {
        "General.ListenAddress",
        "Operations.ListenAddress",
        "Admin.ListenAddress",
    }
    assert len(docs["configtx"]) == 3 + 3  # orderer endpoints, consenters (no anchor peers)
    assert {h for doc in docs.values() for h in doc.values()} == {"127.0.0.1"}
    assert {server_address(cc, p) for cc in TOPOLOGY.chaincodes for p in TOPOLOGY.peers} == {
        f"127.0.0.1:{p.chaincode_server_port}" for p in TOPOLOGY.peers
    }


def test_each_node_binds_to_and_advertises_its_own_address(tmp_path: Path) -> None:
    topology = addressed_topology()
    layout = Layout(tmp_path)
    energy = topology.org("energy").peers[0]
    o0, _, o2 = topology.orderer_org.orderers

    docs = rendered(topology, layout)
    core = core_yaml({}, topology, layout, energy)
    profile = channel_of(topology, tmp_path)["Profiles"]["Channel"]

    assert set(docs[energy.host].values()) == {"10.77.0.3"}
    assert set(docs[topology.org("transport").peers[0].host].values()) == {"127.0.0.1"}
    assert set(docs[o0.host].values()) == {"10.77.0.10"}
    assert set(docs[o2.host].values()) == {"orderer2.example.org"}
    assert core["peer"]["gossip"]["externalEndpoint"] == f"10.77.0.3:{energy.port}"
    assert core["operations"]["listenAddress"] == f"10.77.0.3:{energy.operations_port}"
    assert [(c["Host"], c["Port"]) for c in profile["Orderer"]["EtcdRaft"]["Consenters"]] == [
        ("10.77.0.10", 7050),
        ("10.77.0.10", 7060),
        ("orderer2.example.org", 7070),
    ]
    [orderer_org] = profile["Orderer"]["Organizations"]
    assert orderer_org["OrdererEndpoints"] == [o.address for o in topology.orderer_org.orderers]
    assert anchor_hosts(energy) == [("10.77.0.3", energy.port)]
    health = topology.org("health").peers[0]
    assert anchor_hosts(health) == [("127.0.0.1", health.port)]
    cc = topology.chaincode("fl")
    address = f"10.77.0.3:{energy.chaincode_server_port}"
    assert server_address(cc, energy) == address
    assert address in server_args(layout, topology.org("energy"), energy, cc)
    assert address in compose_document(topology)["services"][server_name(cc, energy)]["command"]


def test_an_ipv6_address_is_bracketed_wherever_fabric_joins_host_and_port(tmp_path: Path) -> None:
    topology = parse_topology(with_addresses(topology_data(), energy="fd00:77::3", ordering="::1"))
    layout = Layout(tmp_path)
    energy, o0 = topology.org("energy").peers[0], topology.orderer_org.orderers[0]

    core = core_yaml({}, topology, layout, energy)
    doc = orderer_yaml({}, topology, layout, o0)
    profile = channel_of(topology, tmp_path)["Profiles"]["Channel"]

    assert core["peer"]["listenAddress"] == f"[fd00:77::3]:{energy.port}"
    assert doc["General"]["ListenAddress"] == "[::1]"  # Fabric appends ":port"
    assert doc["Admin"]["ListenAddress"] == f"[::1]:{o0.admin_port}"
    assert profile["Orderer"]["EtcdRaft"]["Consenters"][0]["Host"] == "[::1]"
    assert anchor_hosts(energy) == [("[fd00:77::3]", energy.port)]


def test_raft_snapshots_come_within_one_raft_batch(
    tmp_path: Path, bundle_files: list[Path]
) -> None:
    # An orderer restarted before its first snapshot replays its log in batches of
    # PreferredMaxBytes; with the snapshot interval no larger, that replay is a single batch
    # (see network/_config.py and fabric#4199).
    orderer = channel_profile(tmp_path, bundle_files)["Orderer"]

    interval = orderer["EtcdRaft"]["Options"]["SnapshotIntervalSize"]
    assert interval == orderer["BatchSize"]["PreferredMaxBytes"] == "512 KB"


def test_ccaas_package_is_reproducible_and_its_id_is_label_and_sha256() -> None:
    cc = TOPOLOGY.chaincode("fl")

    first, second = package_bytes(cc), package_bytes(cc)

    assert first == second
    assert package_id(cc) == f"fl_1.0:{hashlib.sha256(first).hexdigest()}"
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert sorted(tar.getnames()) == ["code.tar.gz", "metadata.json"]
        assert json.load(tar.extractfile("metadata.json")) == {"type": "ccaas", "label": "fl_1.0"}


def run(builder: str, *args: Path, env: dict[str, str] | None = None):
    script = ROOT / "network" / "fabric" / "ccaas_builder" / "bin" / builder
    return subprocess.run(
        [str(script), *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )


def test_external_builder_detect_build_release(tmp_path: Path) -> None:
    src, meta, out, rel, conns = (tmp_path / d for d in ("src", "meta", "out", "rel", "conns"))
    for d in (src, meta, conns):
        d.mkdir()
    (meta / "metadata.json").write_text('{"type": "CCaaS", "label": "fl_1.0"}')
    (src / "connection.json").write_text('{"dial_timeout": "10s"}')
    (conns / "fl_1.0.json").write_text('{"address": "127.0.0.1:7160"}')

    assert run("detect", src, meta).returncode == 0
    missing = run("build", src, meta, out, env={"FEDFABRIC_CCAAS_DIR": str(tmp_path)})
    assert missing.returncode != 0 and "no connection for 'fl_1.0'" in missing.stderr
    assert run("build", src, meta, out, env={"FEDFABRIC_CCAAS_DIR": str(conns)}).returncode == 0
    assert run("release", out, rel).returncode == 0
    assert json.loads((rel / "chaincode" / "server" / "connection.json").read_text()) == {
        "address": "127.0.0.1:7160"
    }
    (meta / "metadata.json").write_text('{"type": "golang", "label": "x"}')
    assert run("detect", src, meta).returncode == 1


def test_committed_compose_file_is_generated_from_the_default_topology() -> None:
    assert (ROOT / "docker-compose.yaml").read_text() == compose_yaml(TOPOLOGY)


def test_compose_runs_every_node_with_the_native_configuration() -> None:
    services = compose_document(TOPOLOGY)["services"]
    layout = Layout(Path(STATE))
    expected = {o.host for o in TOPOLOGY.orderer_org.orderers} | {p.host for p in TOPOLOGY.peers}
    expected |= {server_name(cc, p) for cc in TOPOLOGY.chaincodes for p in TOPOLOGY.peers}

    assert set(services) == expected
    for host in {o.host for o in TOPOLOGY.orderer_org.orderers} | {p.host for p in TOPOLOGY.peers}:
        service = services[host]
        assert service["image"].endswith(":3.1.5") and service["network_mode"] == "host"
        assert service["environment"]["FABRIC_CFG_PATH"] == str(layout.node_dir(host))
        mount = service["volumes"][0].split(":", 1)[0], service["volumes"][0].rsplit(":", 1)[1]
        assert mount[0].startswith(STATE[:-1]) and mount[1] == STATE
    for p in TOPOLOGY.peers:
        for cc in TOPOLOGY.chaincodes:
            command = services[server_name(cc, p)]["command"]
            assert f"127.0.0.1:{p.chaincode_server_port + cc.slot}" in command
            assert package_id(cc) in command and "--tls-client-ca" in command
            assert all(a.startswith(STATE) for a in command if a.endswith((".crt", ".key", ".pem")))


@pytest.mark.parametrize("name", ["docker-compose.yaml"])
def test_compose_file_is_valid_yaml_without_aliases(name: str) -> None:
    text = (ROOT / name).read_text()
    assert "&id" not in text
    assert yaml.safe_load(text)["name"] == "fedfabric-smartcity"


def test_deploy_settings_add_to_an_orgs_server_settings_and_name_an_unknown_org(
    tmp_path: Path,
) -> None:
    net = FabricNetwork(TOPOLOGY, tmp_path, fabric_release(None))
    cc = dataclasses.replace(TOPOLOGY.chaincode("fl"), settings={"EnergyMSP": {"a": "1", "b": "2"}})
    extra = {"EnergyMSP": {"b": "3", "validator": "m:f"}, "HealthMSP": {"validator": "m:g"}}

    served = with_settings(net, cc, extra)

    assert served.settings == {
        "EnergyMSP": {"a": "1", "b": "3", "validator": "m:f"},
        "HealthMSP": {"validator": "m:g"},
    }
    org = TOPOLOGY.org("health")
    args = server_args(Layout(tmp_path), org, org.peers[0], served)
    assert args[-4:] == ["--setting", "msp_id=HealthMSP", "--setting", "validator=m:g"]
    with pytest.raises(NetworkError, match="unknown MSP id 'WaterMSP' \\(known: Transport"):
        with_settings(net, cc, {"WaterMSP": {"validator": "m:f"}})


def test_deploying_again_keeps_the_settings_the_servers_run_with(tmp_path: Path) -> None:
    net = FabricNetwork(TOPOLOGY, tmp_path, fabric_release(None))
    cc = dataclasses.replace(TOPOLOGY.chaincode("fl"), settings={"EnergyMSP": {"a": "1"}})
    recorded = {"settings": json.dumps({  # what a run deployed with, before
        "EnergyMSP": {"a": "0", "validator": "m:f"}, "HealthMSP": {"validator": "m:g"},
        "GoneMSP": {"validator": "m:h"}})}  # fmt: skip

    again = _server_settings(net, cc, recorded, {})
    anew = _server_settings(net, cc, recorded, {"HealthMSP": {"validator": "m:k"}})

    assert again.settings == {  # the topology's over the kept ones; a gone org dropped
        "EnergyMSP": {"a": "1", "validator": "m:f"},
        "HealthMSP": {"validator": "m:g"},
    }
    assert anew.settings["HealthMSP"] == {"validator": "m:k"}
    assert _server_settings(net, cc, {}, {}).settings == {"EnergyMSP": {"a": "1"}}
