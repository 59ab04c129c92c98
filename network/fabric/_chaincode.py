"""Chaincode as a service on real Fabric: install, approve, commit, serve.

One package per chaincode (`fedfabric.network._ccaas`) serves every peer, and fedfabric's
external builder takes each peer's own ``connection.json``
(server address, TLS root, the peer's TLS client pair) from ``nodes/<peer>/ccaas/<label>.json``.
Each peer gets its own chaincode server process, listening on the peer's address, port
``peer.chaincode_server_port + chaincode.slot``, with mutual TLS (its certificate names that
address).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fedfabric.gateway import GatewayError, connect_org
from fedfabric.network import _crypto, _process
from fedfabric.network._backend import NodeStatus, Progress, ServerSettings
from fedfabric.network._ccaas import (
    CONNECTION,
    package_bytes,
    package_id,
    server_address,
    server_args,
    server_name,
    server_tls_paths,
)
from fedfabric.network._errors import NetworkError
from fedfabric.network._policy import from_application_policy, parse_policy
from fedfabric.network._topology import Chaincode, Organization, Peer

if TYPE_CHECKING:
    from fedfabric.network.fabric._network import FabricNetwork


async def deploy(
    net: FabricNetwork, names: Sequence[str], say: Progress, settings: ServerSettings
) -> list[str]:
    t = net.topology
    unknown = sorted(set(settings) - set(names))
    if unknown:
        raise NetworkError(f"settings for {unknown[0]!r}, which is not being deployed")
    peers = net.own_peers
    waiting: list[str] = []  # chaincodes whose definition awaits other organisations
    caught_up = False
    for name in names:
        started = time.monotonic()
        recorded = _deployed(net).get(name, {})
        cc = _server_settings(net, t.chaincode(name), recorded, settings.get(name, {}))
        pkg = net.layout.chaincode_dir / f"{cc.label}.tar.gz"
        pkg.parent.mkdir(parents=True, exist_ok=True)
        pkg.write_bytes(package_bytes(cc))
        pid = package_id(cc)
        servers = [server_name(cc, p) for p in peers]
        # Every organisation of this host must have approved it: a peer endorses only then.
        mine = {o.msp_id for o in net.own_orgs}
        if mine <= _approved_here(recorded, cc) and all(net.nodes.running(n) for n in servers):
            say(f"{cc.name}: {cc.label} already deployed and served")
            await wait_endorsable(net, cc)
            continue
        if not caught_up:  # a peer that just joined reads the definitions committed so far
            await net.wait_caught_up()
            caught_up = True
        for peer in peers:
            _write_ccaas_config(net, peer, cc)
        say(f"{cc.name}: installing {pid[: len(cc.label) + 13]}... on {len(peers)} peers")
        await asyncio.gather(*(_install(net, peer, pkg, pid) for peer in peers))
        say(f"{cc.name}: starting {len(peers)} chaincode servers")
        await asyncio.gather(*(_start_server(net, cc, peer, pid) for peer in peers))
        sequence, current = await _next_sequence(net, cc)
        if current:
            say(f"{cc.name}: definition {cc.version} (sequence {sequence}) already committed")
            for org in net.own_orgs:  # an organisation may approve a committed definition
                if not await _approved_by(net, cc, sequence, org):
                    say(f"{cc.name}: approving for {org.msp_id} (sequence {sequence})")
                    await _approve(net, cc, org.peers[0], pid, sequence)
        else:
            approved = await _approvals(net, cc, sequence)
            for org in net.own_orgs:
                if not approved.get(org.msp_id):
                    say(f"{cc.name}: approving for {org.msp_id} (sequence {sequence})")
                    await _approve(net, cc, org.peers[0], pid, sequence)
            approved = await _approvals(net, cc, sequence)
            ready = [o for o in t.organizations if approved.get(o.msp_id)]
            if 2 * len(ready) <= len(t.organizations):  # LifecycleEndorsement: a majority
                waiting.append(cc.name)
                for org in t.organizations:
                    if org not in ready:
                        say(
                            f"{cc.name}: waiting for {org.msp_id} to approve {cc.name} "
                            f"{cc.version} sequence {sequence}"
                        )
                continue
            say(f"{cc.name}: committing with policy {cc.endorsement_policy}")
            await _commit(net, cc, sequence, ready)
        _record_deployed(net, cc)
        await wait_endorsable(net, cc)
        say(f"{cc.name}: deployed in {time.monotonic() - started:.1f}s")
    return waiting


async def restart_servers(net: FabricNetwork, say: Progress) -> None:
    """After `up`: restart the chaincode servers of every chaincode deployed before (only
    where it was deployed: a peer that joined later, say of an organisation added to the
    channel sharing this state directory, gets it from its own `deploy`)."""
    pairs = served(net)
    waits = []
    for cc, peer in pairs:
        if not net.nodes.running(server_name(cc, peer)):
            say(f"{cc.name}: restarting chaincode server for {peer.host}")
            waits.append(_start_server(net, cc, peer, package_id(cc)))
    await asyncio.gather(*waits)
    for cc in {cc.name: cc for cc, _ in pairs}.values():
        await wait_endorsable(net, cc)


def _server_settings(
    net: FabricNetwork,
    cc: Chaincode,
    recorded: Mapping[str, str],
    extra: Mapping[str, Mapping[str, str]],
) -> Chaincode:
    """`cc` (the topology's) with its servers' settings: those this host last deployed it
    with (`recorded`: a run's private validator, say), the topology's over them, `extra`
    over both. So an admin who deploys again (to approve a new policy while a task runs)
    keeps the settings the servers run with."""
    known = {o.msp_id for o in net.topology.organizations}
    kept = {m: v for m, v in json.loads(recorded.get("settings", "{}")).items() if m in known}
    base = with_settings(net, dataclasses.replace(cc, settings=kept), cc.settings)
    return with_settings(net, base, extra)


def with_settings(
    net: FabricNetwork, cc: Chaincode, extra: Mapping[str, Mapping[str, str]]
) -> Chaincode:
    """`cc` with `extra` server settings (MSP id → key → value) over the topology's."""
    settings = {msp: dict(values) for msp, values in cc.settings.items()}
    known = [o.msp_id for o in net.topology.organizations]
    for msp, values in extra.items():
        if msp not in known:
            raise NetworkError(
                f"{cc.name} settings: unknown MSP id {msp!r} (known: {', '.join(known)})"
            )
        settings[msp] = {**settings.get(msp, {}), **{str(k): str(v) for k, v in values.items()}}
    return dataclasses.replace(cc, settings=settings)


def server_status(net: FabricNetwork) -> list[NodeStatus]:
    out = []
    for name in _deployed(net):
        try:
            cc = net.topology.chaincode(name)
        except NetworkError:
            continue
        for peer in net.own_peers:
            n = server_name(cc, peer)
            out.append(
                NodeStatus(
                    n,
                    "chaincode",
                    net.nodes.running(n),
                    detail=server_address(cc, peer),
                )
            )
    return out


def _write_ccaas_config(net: FabricNetwork, peer: Peer, cc: Chaincode) -> None:
    org = net.topology.org(peer.org)
    tls = _crypto.org_dir(net.layout.crypto_dir, org) / "peers" / peer.host / "tls"
    connection = {
        **CONNECTION,
        "address": server_address(cc, peer),
        "root_cert": (tls / "ca.crt").read_text(),
        "client_cert": (tls / "server.crt").read_text(),
        "client_key": (tls / "server.key").read_text(),
    }
    path = _ccaas_config(net, peer, cc)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(connection, indent=2))


def _ccaas_config(net: FabricNetwork, peer: Peer, cc: Chaincode) -> Path:
    """Where `deploy` writes `peer`'s connection to `cc`'s server (so: deployed there)."""
    return net.layout.ccaas_dir(peer.host) / f"{cc.label}.json"


async def _install(net: FabricNetwork, peer: Peer, pkg: Path, pid: str) -> None:
    env = net.peer_cli_env(peer)
    peer_bin = net.release.tool("peer")
    installed = await _process.run_tool(
        [peer_bin, "lifecycle", "chaincode", "queryinstalled"],
        env,
        what=f"queryinstalled on {peer.host}",
    )
    if pid in installed:
        return
    await _process.run_tool(
        [peer_bin, "lifecycle", "chaincode", "install", str(pkg)],
        env,
        what=f"install on {peer.host}",
        timeout=300,
    )


async def _start_server(net: FabricNetwork, cc: Chaincode, peer: Peer, pid: str) -> None:
    """Start `cc`'s server next to `peer`; one that runs already with the same package and
    settings is kept (a running FL task's endorsements go on through it)."""
    name = server_name(cc, peer)
    argv, env, cwd = server_command(net, cc, peer, pid)
    if net.nodes.runs_as(name, argv):
        return
    await net.nodes.stop(name)
    port = peer.chaincode_server_port + cc.slot
    _process.check_ports_free([(name, "chaincode_server_port", peer.bind_host, port)])
    org = net.topology.org(peer.org)
    cert = server_tls_paths(net.layout, org, peer, cc)[0]
    tlsca = _crypto.org_dir(net.layout.crypto_dir, org) / "tlsca"
    _crypto.server_tls(cert.parent, tlsca, peer.bind_host)
    net.nodes.start(name, argv, env, cwd=cwd)
    try:
        await _process.wait_listening(
            name, peer.bind_host, port, alive=lambda: net.nodes.running(name)
        )
    except NetworkError as exc:
        log = net.layout.log_file(name).read_text(errors="replace").strip().splitlines()
        raise NetworkError(f"chaincode server {name}: {exc}: {' | '.join(log[-3:])}") from exc


def server_command(
    net: FabricNetwork, cc: Chaincode, peer: Peer, pid: str
) -> tuple[list[str], dict[str, str], Path | None]:
    """The command line, environment and working folder of `cc`'s server next to `peer`
    (package id `pid`): a Python contract's ``python -m fedfabric.chaincode serve ...``, or
    the Node shim's. Raises `NetworkError` when Node chaincode cannot run here."""
    args = server_args(net.layout, net.topology.org(peer.org), peer, cc)
    env = net._env(CHAINCODE_ID=pid, CHAINCODE_SERVER_ADDRESS=server_address(cc, peer))
    if cc.server == "python":
        return [sys.executable, "-m", "fedfabric.chaincode", *args], env, None
    assert cc.path is not None
    cli = cc.path / "node_modules" / "fabric-shim" / "cli.js"
    node = shutil.which("node")
    if node is None or not cli.exists():
        raise NetworkError(
            f"{cc.name}: Node chaincode needs `node` and `npm install` in "
            f"{cc.path} (missing {cli if node else 'node'})"
        )
    return [node, str(cli), *args], env, cc.path


def served(net: FabricNetwork) -> list[tuple[Chaincode, Peer]]:
    """Each chaincode this host deployed (with the settings it deployed it with) and each
    of this host's peers it serves."""
    found = []
    for name, record in _deployed(net).items():
        try:
            cc = net.topology.chaincode(name)
        except NetworkError:
            continue
        cc = dataclasses.replace(cc, settings=json.loads(record.get("settings", "{}")))
        found += [(cc, p) for p in net.own_peers if _ccaas_config(net, p, cc).exists()]
    return found


async def _next_sequence(net: FabricNetwork, cc: Chaincode) -> tuple[int, bool]:
    """(sequence to use, whether the same definition is already committed)."""
    peer = net.own_peers[0]
    try:
        out = await _process.run_tool(
            [
                net.release.tool("peer"),
                "lifecycle",
                "chaincode",
                "querycommitted",
                "-C",
                net.topology.channel,
                "-n",
                cc.name,
                "-O",
                "json",
            ],
            net.peer_cli_env(peer),
            what="querycommitted",
        )
    except NetworkError as exc:
        if "404" in str(exc) or "not found" in str(exc):
            return 1, False
        raise
    info = _process.json_in(out)
    seq = int(info.get("sequence", 0))
    committed = from_application_policy(base64.b64decode(info.get("validation_parameter", "")))
    if info.get("version") == cc.version and committed == parse_policy(cc.endorsement_policy):
        return seq, True
    return seq + 1, False  # a new version or policy (a consortium that grew: k' of n+1)


async def _approve(net: FabricNetwork, cc: Chaincode, peer: Peer, pid: str, seq: int) -> None:
    await _process.run_tool(
        [
            net.release.tool("peer"),
            "lifecycle",
            "chaincode",
            "approveformyorg",
            *net.orderer_args(),
            *_definition(net, cc, seq),
            "--package-id",
            pid,
            "--waitForEventTimeout",
            "60s",
        ],
        net.peer_cli_env(peer),
        what=f"approve {cc.name} for {peer.org}",
        timeout=120,
    )


def _definition(net: FabricNetwork, cc: Chaincode, seq: int) -> list[str]:
    """The peer lifecycle CLI's arguments naming `cc`'s definition at sequence `seq`."""
    return [
        "--channelID",
        net.topology.channel,
        "--name",
        cc.name,
        "--version",
        cc.version,
        "--sequence",
        str(seq),
        "--signature-policy",
        cc.endorsement_policy,
    ]


async def _approved_by(net: FabricNetwork, cc: Chaincode, seq: int, org: Organization) -> bool:
    """Whether `org` approved `cc`'s definition at sequence `seq` (committed or not)."""
    try:
        await _process.run_tool(
            [
                net.release.tool("peer"),
                "lifecycle",
                "chaincode",
                "queryapproved",
                "--channelID",
                net.topology.channel,
                "--name",
                cc.name,
                "--sequence",
                str(seq),
            ],
            net.peer_cli_env(org.peers[0]),
            what=f"queryapproved {cc.name} for {org.msp_id}",
        )
    except NetworkError:
        return False
    return True


async def _approvals(net: FabricNetwork, cc: Chaincode, seq: int) -> dict[str, bool]:
    """Which organisations approved `cc`'s definition at sequence `seq` (MSP id → bool)."""
    out = await _process.run_tool(
        [
            net.release.tool("peer"),
            "lifecycle",
            "chaincode",
            "checkcommitreadiness",
            *_definition(net, cc, seq),
            "--output",
            "json",
        ],
        net.peer_cli_env(net.own_peers[0]),
        what=f"checkcommitreadiness {cc.name}",
    )
    return {str(k): bool(v) for k, v in _process.json_in(out)["approvals"].items()}


async def _commit(
    net: FabricNetwork, cc: Chaincode, seq: int, endorsers: Sequence[Organization]
) -> None:
    """Commit `cc`'s definition, endorsed by the peers of `endorsers` (organisations that
    approved it: a majority, as the channel's LifecycleEndorsement policy needs)."""
    cmd = [
        net.release.tool("peer"),
        "lifecycle",
        "chaincode",
        "commit",
        *net.orderer_args(),
        *_definition(net, cc, seq),
        "--waitForEventTimeout",
        "60s",
    ]
    for org in endorsers:
        cmd += [
            "--peerAddresses",
            org.peers[0].address,
            "--tlsRootCertFiles",
            str(net.endpoint(org.name).tls_root_cert),
        ]
    await _process.run_tool(
        cmd, net.peer_cli_env(net.own_peers[0]), what=f"commit {cc.name}", timeout=120
    )


async def wait_endorsable(net: FabricNetwork, cc: Chaincode, timeout: float = 90) -> None:
    """Until each gateway of this host's organisations can get ``cc`` endorsed by all of
    them (every org on a single-machine network; other hosts' orgs deploy on their own).

    A committed definition is not enough: each peer must have built and dialled its chaincode
    server, and each gateway must have learnt of the other orgs' peers and of the chaincode
    through gossip (discovery), or it silently plans without them. So this endorses (and never
    submits) a GetMetadata proposal through each org's gateway, with all orgs as endorsers.
    """
    deadline = time.monotonic() + timeout
    everyone = [o.msp_id for o in net.own_orgs]
    for org in net.own_orgs:
        async with connect_org(net.layout.profiles_dir, org.name, "Admin") as gateway:
            contract = gateway.get_network(net.topology.channel).get_contract(cc.name)
            while True:
                try:
                    await contract.new_proposal(
                        "org.hyperledger.fabric:GetMetadata", endorsing_orgs=everyone
                    ).endorse(timeout=10)
                    break
                except GatewayError as exc:
                    if time.monotonic() > deadline:
                        raise NetworkError(
                            f"{cc.name} cannot be endorsed through the gateway of "
                            f"{org.name} after {timeout:.0f}s: {exc}"
                        ) from exc
                    await asyncio.sleep(0.5)


def _state_file(net: FabricNetwork) -> Path:
    return net.layout.chaincode_dir / "deployed.json"


def _deployed(net: FabricNetwork) -> dict[str, dict[str, str]]:
    path = _state_file(net)
    return json.loads(path.read_text()) if path.exists() else {}


def _record(cc: Chaincode) -> dict[str, str]:
    return {
        "version": cc.version,
        "policy": cc.endorsement_policy,
        "package_id": package_id(cc),
        "settings": json.dumps(cc.settings, sort_keys=True),
    }


def _approved_here(recorded: dict[str, str], cc: Chaincode) -> set[str]:
    """The organisations of this state directory that approved `cc`'s definition, by its
    record (none when the record is of another definition)."""
    if {k: v for k, v in recorded.items() if k != "approved"} != _record(cc):
        return set()
    return {m for m in recorded.get("approved", "").split(",") if m}


def _record_deployed(net: FabricNetwork, cc: Chaincode) -> None:
    state = _deployed(net)
    approved = _approved_here(state.get(cc.name, {}), cc) | {o.msp_id for o in net.own_orgs}
    state[cc.name] = {**_record(cc), "approved": ",".join(sorted(approved))}
    tmp = _state_file(net).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_file(net))
