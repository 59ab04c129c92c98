"""A real Hyperledger Fabric network: Fabric's own binaries as native processes on this machine
(or, with ``backend="containers"``, the same command lines in podman containers), each node on
its address from the topology (127.0.0.1 by default).

This module only orchestrates Fabric's tools (``configtxgen``, ``orderer``, ``peer``,
``osnadmin``); all Fabric logic stays in Fabric.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from fabric_protos.common import common_pb2

from fedfabric.network import _crypto, _images, _process
from fedfabric.network._backend import (
    Endpoint,
    IdentityFiles,
    NodeStatus,
    Progress,
    ServerSettings,
)
from fedfabric.network._binaries import FabricRelease, install_fabric
from fedfabric.network._config import CCAAS_DIR_ENV, admin_msp, render_all
from fedfabric.network._containers import Containers, missing_images
from fedfabric.network._errors import FabricNotInstalledError, NetworkError, NotRunningError
from fedfabric.network._layout import Layout
from fedfabric.network._process import Processes
from fedfabric.network._topology import Orderer, OrdererOrg, Organization, Peer, Topology
from fedfabric.network.fabric import _chaincode
from fedfabric.network.fabric._anchors import set_anchor_peers
from fedfabric.network.fabric._ceremony import import_received, make_genesis, write_own_bundle
from fedfabric.network.fabric._config_update import updates_dir

BACKENDS = ("native", "containers")


def _quiet(_: str) -> None:
    pass


class FabricNetwork:
    """The `Backend` for real Fabric: ``up``, ``down``, ``status``, ``deploy``, ``clean``."""

    def __init__(
        self,
        topology: Topology,
        state_dir: Path,
        release: FabricRelease,
        *,
        orgs: Sequence[str] | None = None,
        backend: str = "native",
    ) -> None:
        """`orgs` (names or MSP ids; default every organisation): the organisations this host
        runs. Their keys are made here; every other organisation is known only by the public
        bundle it sent (in `Layout.bundles_dir`), and the channel's genesis block comes from
        the founding party (`Layout.channel_block`). `backend`: ``native`` runs the nodes
        as processes, ``containers`` as podman containers of the images ``fedfabric images
        build`` makes (the same command lines, state directory and ports)."""
        if backend not in BACKENDS:
            raise NetworkError(f"backend {backend!r}: choose {' or '.join(BACKENDS)}")
        self.topology = topology
        self.layout = Layout(Path(state_dir))
        self.release = release
        self.nodes: Processes | Containers = (
            Containers(self.layout, release) if backend == "containers" else Processes(self.layout)
        )
        names = orgs or [o.msp_id for o in self._orgs()]
        self.own = tuple(topology.any_org(o).msp_id for o in names)

    @property
    def state_dir(self) -> Path:
        """Everything this network generated: crypto material, ledgers, logs, profiles."""
        return self.layout.root

    async def install(self, progress: Progress | None = None) -> None:
        """Make the Fabric binaries available: build the pinned Fabric on first use (a release
        the user named is only checked). Raises `FabricNotInstalledError`."""
        say = progress or _quiet
        try:
            self.release.check()
        except FabricNotInstalledError:
            if self.release.supplied:
                raise
            say("Hyperledger Fabric is not installed yet: installing it (first run only)")
            await install_fabric(self.release, progress=say)
        if isinstance(self.nodes, Containers):
            await asyncio.to_thread(_images.install_tools, say)
            for kind in missing_images(self.nodes.images):  # default tags: old ones go
                await asyncio.to_thread(_images.build_image, kind, self.release, say=say)

    # ----------------------------------------------------------------- lifecycle
    async def up(self, progress: Progress | None = None) -> bool:
        """Bring the network up (or resume it); False if it was already running."""
        say = progress or _quiet
        t = self.topology
        nodes = self._node_names()
        running = [n for n in nodes if self.nodes.running(n)]
        if len(running) == len(nodes):
            say(f"network {t.name} is already running ({len(nodes)} nodes); nothing to do")
            return False
        say(f"Fabric: {self.release.describe()}")
        ports = [
            p
            for p in t.node_ports()
            if p[0] in nodes and p[0] not in running and "chaincode_server" not in p[1]
        ]
        _process.check_ports_free(ports)
        started = time.monotonic()
        say("crypto material (CAs, MSPs, TLS), each organisation's own, and its public bundle")
        for msp_id in self.own:
            write_own_bundle(t, msp_id, self.layout)
        received = import_received(t, self.layout, self.own)
        render_all(t, self.layout, self.release.config_dir)
        self._write_profiles()
        block = self.layout.channel_block(t.channel)
        if not block.exists():
            if len(self.own) < len(self._orgs()):
                raise NetworkError(
                    f"no genesis block for channel {t.channel} at {block}: the founding party "
                    "makes it with `fedfabric consortium genesis` from every organisation's "
                    "bundle and sends it (fedfabric org up --genesis FILE)"
                )
            say(f"channel block for {t.channel!r} from the {len(received)} public bundles")
            await make_genesis(self.release, t, self.layout, received, self._env())
        try:
            await self._start_nodes(running, say)
            await self._join(say)
            if self.own_orderers:
                await self.wait_leader()
            for org in self.own_orgs:
                if await self._retry(lambda o=org: set_anchor_peers(self, o)):
                    say(f"{org.msp_id}: anchor peer {org.peers[0].host} set (signed by its admin)")
            await _chaincode.restart_servers(self, say)
            await self.wait_synced(timeout=60)
        except BaseException:
            await self.down()
            raise
        say(f"network {t.name} is up in {time.monotonic() - started:.1f}s")
        return True

    async def down(self) -> None:
        """Stop every process this network started (ledgers stay on disk)."""
        await asyncio.gather(*(self.nodes.stop(n) for n in self.nodes.started()))

    async def clean(self) -> None:
        """Stop the network and delete its whole state directory."""
        await self.down()
        shutil.rmtree(self.layout.root, ignore_errors=True)

    async def stop_node(self, host: str) -> None:
        """Stop one node (peer, orderer or chaincode server) gracefully."""
        if not await self.nodes.stop(host):
            raise NotRunningError(f"{host} is not running")

    def kill_node(self, host: str) -> None:
        """kill -9 one node, as a crash would."""
        self.nodes.kill(host)

    async def start_node(self, host: str) -> None:
        """(Re)start one stopped peer or orderer and wait until it is healthy."""
        await self._start_nodes(
            [n for n in self._node_names() if n != host and self.nodes.running(n)],
            _quiet,
            only=host,
        )
        if host in [o.host for o in self.own_orderers]:
            await self.wait_leader()

    async def wait_leader(self, timeout: float = 60.0) -> str:
        """Wait until the running orderers have a Raft leader; return its host."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            leader = await self.leader()
            if leader:
                return leader
            await asyncio.sleep(0.2)
        raise NetworkError(f"the orderers elected no Raft leader within {timeout:.0f}s")

    # ----------------------------------------------------------------- status
    async def status(self) -> list[NodeStatus]:
        """Each node: running or not, and its block height on the channel."""
        checks = [self._orderer_status(o) for o in self.own_orderers]
        checks += [self._peer_status(p) for p in self.own_peers]
        nodes = list(await asyncio.gather(*checks))
        nodes += _chaincode.server_status(self)
        return nodes

    async def height(self, peer: Peer) -> int:
        """The peer's block height on the channel."""
        out = await _process.run_tool(
            [self.release.tool("peer"), "channel", "getinfo", "-c", self.topology.channel],
            self.peer_cli_env(peer),
            what=f"peer channel getinfo on {peer.host}",
            timeout=30,
        )
        return int(_process.json_in(out, "Blockchain info:")["height"])

    async def leader(self) -> str | None:
        """The host of the current Raft leader, from this host's orderers' metrics."""
        for o in self.own_orderers:
            if not self.nodes.running(o.host):
                continue
            try:
                _, body = await _process.http_get(o.bind_host, o.operations_port, "/metrics")
            except OSError:
                continue
            for line in body.decode().splitlines():
                if line.startswith("consensus_etcdraft_is_leader{") and line.endswith(" 1"):
                    return o.host
        return None

    def log_file(self, node: str) -> Path:
        """The log of a node (its host name, e.g. ``peer0.transport.smartcity.example``)."""
        path = self.layout.log_file(node)
        if not path.exists():
            known = ", ".join(sorted(p.stem for p in self.layout.logs_dir.glob("*.log")))
            raise NetworkError(f"no log for {node!r} (known: {known or 'none yet'})")
        return path

    # ----------------------------------------------------------------- chaincode
    async def deploy(
        self,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
        *,
        settings: ServerSettings | None = None,
    ) -> list[str]:
        """Install, approve, commit and serve chaincodes (default: every one in the topology).

        `settings` add to (and override) the topology's chaincode server settings, per
        chaincode and MSP id. Settings this host deployed a chaincode with before stay
        unless the topology or `settings` set them anew (deploying again to approve a new
        policy keeps a running task's validators). Only servers whose package or settings
        changed are restarted; the others keep serving. Returns the
        chaincodes whose definition still waits for other organisations' approvals (on a
        host that runs only some of them; empty when every one is committed). Raises
        `NetworkError` for a chaincode or organisation the topology does not have.
        """
        self._require_running()
        return await _chaincode.deploy(
            self,
            names or [c.name for c in self.topology.chaincodes],
            progress or _quiet,
            settings or {},
        )

    def private_dir(self, org: str) -> Path:
        """`org`'s own private directory (mode 0700, created on first use), inside its MSP
        material: for files only its nodes and chaincode servers read."""
        folder = _crypto.org_dir(self.layout.crypto_dir, self.topology.org(org)) / "private"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder

    async def wait_endorsable(self, chaincode: str, timeout: float = 90.0) -> None:
        """Until every org's gateway can get `chaincode` endorsed by every org: after `up`,
        `deploy`, or a node restart, gossip needs a moment before gateways plan with all orgs.
        Raises `NetworkError` after `timeout` seconds."""
        await _chaincode.wait_endorsable(self, self.topology.chaincode(chaincode), timeout)

    # ----------------------------------------------------------------- identities
    def endpoint(self, org: str) -> Endpoint:
        """`org`'s gateway peer (its first) and the TLS CA certificate that verifies it
        (from the org's MSP: its own material, or the MSP its bundle made here)."""
        o = self.topology.org(org)
        p = o.peers[0]
        msp = _crypto.org_dir(self.layout.crypto_dir, o) / "msp"
        return Endpoint(p.address, p.host, msp / "tlscacerts" / _crypto.tls_ca_file(o.domain))

    def identity(self, org: str, user: str = "User1") -> IdentityFiles:
        o = self.topology.org(org)
        folder = _crypto.org_dir(self.layout.crypto_dir, o) / "users" / _crypto.user_name(o, user)
        if not folder.exists():
            raise NetworkError(
                f"no identity {user!r} in {o.name} (users: Admin, User1..User{o.users})"
            )
        msp = folder / "msp"
        return IdentityFiles(
            o.msp_id,
            next((msp / "signcerts").glob("*.pem")),
            msp / "keystore" / "priv_sk",
            folder / "tls" / "client.crt",
            folder / "tls" / "client.key",
            msp,
        )

    def issue_identity(self, org: str, name: str) -> IdentityFiles:
        """The client identity `name` of `org`, issued by the org's CA if it has none yet
        (only an organisation whose keys are on this host issues)."""
        try:
            return self.identity(org, name)
        except NetworkError:
            o = self.topology.org(org)
            if o.msp_id not in self.own:
                raise NetworkError(
                    f"no identity {name!r} of {o.msp_id} here, and only {o.msp_id}'s own "
                    f"host can issue one (this host has {', '.join(self.own)})"
                ) from None
            _crypto.issue_identity(self.layout.crypto_dir, o, name)
            return self.identity(org, name)

    def profile(self, org: str) -> Path:
        """The connection profile (JSON) of an organisation, for `fedfabric.gateway`."""
        return self.layout.profiles_dir / f"{self.topology.org(org).name}.json"

    # ----------------------------------------------------------------- CLI plumbing
    def peer_cli_env(
        self, peer: Peer, *, admin: bool = True, user: str = "Admin"
    ) -> dict[str, str]:
        """Environment for ``peer`` CLI commands against ``peer`` as its org's admin."""
        org = self.topology.org(peer.org)
        msp = (
            admin_msp(self.layout, self.topology, org.name)
            if admin
            else self.identity(org.name, user).msp_dir
        )
        return self._env(
            FABRIC_CFG_PATH=str(self.layout.node_dir(peer.host)),
            CORE_PEER_LOCALMSPID=org.msp_id,
            CORE_PEER_MSPCONFIGPATH=str(msp),
            CORE_PEER_ADDRESS=peer.address,
            CORE_PEER_TLS_ENABLED="true",
            CORE_PEER_TLS_ROOTCERT_FILE=str(self.endpoint(org.name).tls_root_cert),
        )

    def orderer_args(self) -> list[str]:
        """``-o ... --tls --cafile ...`` (the first running orderer) for peer CLI commands that
        submit transactions."""
        oo = self.topology.orderer_org
        ca = (
            _crypto.org_dir(self.layout.crypto_dir, oo)
            / "msp"
            / "tlscacerts"
            / f"tlsca.{oo.domain}-cert.pem"
        )
        running = [o for o in oo.orderers if self.nodes.running(o.host)] or oo.orderers
        return ["-o", running[0].address, "--tls", "--cafile", str(ca)]

    def _env(self, **extra: str) -> dict[str, str]:
        return _process.fabric_env(**extra)

    @property
    def own_orgs(self) -> tuple[Organization, ...]:
        """The peer organisations this host runs."""
        return tuple(o for o in self.topology.organizations if o.msp_id in self.own)

    @property
    def own_orderers(self) -> tuple[Orderer, ...]:
        """The orderers this host runs (all or none: they are the ordering organisation's)."""
        oo = self.topology.orderer_org
        return oo.orderers if oo.msp_id in self.own else ()

    @property
    def own_peers(self) -> tuple[Peer, ...]:
        """The peers this host runs."""
        return tuple(p for o in self.own_orgs for p in o.peers)

    def _orgs(self) -> list[Organization | OrdererOrg]:
        return [self.topology.orderer_org, *self.topology.organizations]

    def _node_names(self) -> list[str]:
        return [o.host for o in self.own_orderers] + [p.host for p in self.own_peers]

    def _require_running(self) -> None:
        down = [n for n in self._node_names() if not self.nodes.running(n)]
        if len(down) == len(self._node_names()):
            raise NotRunningError(
                f"network {self.topology.name} is not running; run `fedfabric network up` first"
            )

    async def _start_nodes(
        self, running: list[str], say: Progress, only: str | None = None
    ) -> None:
        waits = []
        for o in self.own_orderers:
            if o.host in running or (only and o.host != only):
                continue
            say(f"starting {o.host} on {o.address}")
            self.nodes.start(o.host, *self.node_command(o))
            waits.append(self._healthy(o))
        await asyncio.gather(*waits)
        waits = []
        for p in self.own_peers:
            if p.host in running or (only and p.host != only):
                continue
            say(f"starting {p.host} on {p.address}")
            self.nodes.start(p.host, *self.node_command(p))
            waits.append(self._healthy(p))
        await asyncio.gather(*waits)

    def node_command(self, node: Orderer | Peer) -> tuple[list[str], dict[str, str]]:
        """The command line and environment of an orderer or a peer: Fabric's binary, its
        configuration rendered into the state directory."""
        if isinstance(node, Orderer):
            env = self._env(FABRIC_CFG_PATH=str(self.layout.node_dir(node.host)))
            return [self.release.tool("orderer")], env
        env = self._env(
            FABRIC_CFG_PATH=str(self.layout.node_dir(node.host)),
            **{CCAAS_DIR_ENV: str(self.layout.ccaas_dir(node.host))},
        )
        return [self.release.tool("peer"), "node", "start"], env

    async def _healthy(self, node: Orderer | Peer) -> None:
        alive = lambda: self.nodes.running(node.host)  # noqa: E731
        at = node.bind_host
        await _process.wait_healthy(node.host, at, node.operations_port, timeout=60, alive=alive)
        await _process.wait_listening(node.host, at, node.port, timeout=30, alive=alive)

    async def _join(self, say: Progress) -> None:
        t = self.topology
        block = str(self.layout.channel_block(t.channel))
        for o in self.own_orderers:
            # The admin endpoint may open a moment after the health check answers.
            listed = await self._retry(lambda o=o: self._osnadmin(o, ["list"]))
            if f'"{t.channel}"' not in listed:
                say(f"joining {o.host} to {t.channel}")
                await self._osnadmin(o, ["join", "--channelID", t.channel, "--config-block", block])
        for p in self.own_peers:
            env = self.peer_cli_env(p)
            listed = await _process.run_tool(
                [self.release.tool("peer"), "channel", "list"],
                env,
                what=f"peer channel list on {p.host}",
            )
            if t.channel not in listed.split():
                say(f"joining {p.host} to {t.channel}")
                await self._retry(
                    lambda env=env, host=p.host: _process.run_tool(
                        [self.release.tool("peer"), "channel", "join", "-b", block],
                        env,
                        what=f"peer channel join on {host}",
                    )
                )

    async def wait_synced(self, timeout: float = 60.0) -> None:
        """Wait until every peer has the channel and all report the same height: a block
        committed on one organisation's peer reaches the others a moment later. Raises
        `NetworkError` after `timeout` seconds. (This host's peers: none on an ordering
        organisation's host.)"""
        if not self.own_peers:
            return
        deadline = time.monotonic() + timeout
        heights: list[int] = []
        while time.monotonic() < deadline:
            try:
                heights = list(await asyncio.gather(*(self.height(p) for p in self.own_peers)))
                if len(set(heights)) == 1:
                    return
            except NetworkError:
                pass
            await asyncio.sleep(0.25)
        raise NetworkError(
            f"peers did not converge on one height within {timeout:.0f}s "
            f"(heights: {heights or 'unknown'})"
        )

    async def wait_caught_up(self, timeout: float = 60.0) -> None:
        """Wait until this host's peers hold every block the orderers had on the channel when
        called (a peer that just joined fetches the chain first). Raises `NetworkError` after
        `timeout` seconds."""
        if not self.own_peers:
            return
        peer = self.own_peers[0]
        newest = updates_dir(self) / f"{self.topology.channel}-newest.block"
        await _process.run_tool(
            [self.release.tool("peer"), "channel", "fetch", "newest", str(newest),
             "-c", self.topology.channel, *self.orderer_args()],
            self.peer_cli_env(peer),
            what="fetch the channel's newest block",
        )  # fmt: skip
        height = common_pb2.Block.FromString(newest.read_bytes()).header.number + 1
        deadline = time.monotonic() + timeout
        while True:
            try:
                heights = await asyncio.gather(*(self.height(p) for p in self.own_peers))
            except NetworkError:  # not joined yet
                heights = [0]
            if min(heights) >= height:
                return
            if time.monotonic() > deadline:
                raise NetworkError(
                    f"this host's peers have {min(heights)} of the channel's {height} blocks "
                    f"after {timeout:.0f}s"
                )
            await asyncio.sleep(0.25)

    async def _retry(self, call, attempts: int = 20, delay: float = 0.5):  # noqa: ANN001
        for i in range(attempts):
            try:
                return await call()
            except NetworkError:
                if i == attempts - 1:
                    raise
                await asyncio.sleep(delay)
        return None

    async def _osnadmin(self, o: Orderer, args: list[str], timeout: float = 30) -> str:
        """``osnadmin channel ARGS`` against one orderer's admin endpoint (mutual TLS)."""
        oo = self.topology.orderer_org
        tls = (
            _crypto.org_dir(self.layout.crypto_dir, oo)
            / "users"
            / _crypto.user_name(oo, "Admin")
            / "tls"
        )
        return await _process.run_tool(
            [
                self.release.tool("osnadmin"),
                "channel",
                *args,
                "-o",
                o.address_at(o.admin_port),
                "--ca-file",
                str(tls / "ca.crt"),
                "--client-cert",
                str(tls / "client.crt"),
                "--client-key",
                str(tls / "client.key"),
            ],
            self._env(),
            what=f"osnadmin channel {args[0]} on {o.host}",
            timeout=timeout,
        )

    async def _orderer_status(self, o: Orderer) -> NodeStatus:
        if not self.nodes.running(o.host):
            return NodeStatus(o.host, "orderer", False)
        try:
            out = await self._osnadmin(o, ["list", "--channelID", self.topology.channel], 15)
            info = _process.json_in(out)
            return NodeStatus(
                o.host, "orderer", True, int(info["height"]), info.get("consensusRelation", "")
            )
        except (NetworkError, ValueError, KeyError) as exc:
            return NodeStatus(o.host, "orderer", True, None, str(exc))

    async def _peer_status(self, p: Peer) -> NodeStatus:
        if not self.nodes.running(p.host):
            return NodeStatus(p.host, "peer", False)
        try:
            return NodeStatus(p.host, "peer", True, await self.height(p))
        except (NetworkError, ValueError) as exc:
            return NodeStatus(p.host, "peer", True, None, str(exc))

    def _write_profiles(self) -> None:
        self.layout.profiles_dir.mkdir(parents=True, exist_ok=True)
        for org in self.own_orgs:
            self.profile(org.name).write_text(json.dumps(self._profile(org), indent=2) + "\n")

    def _profile(self, org: Organization) -> dict:
        ep = self.endpoint(org.name)
        users = {}
        for user in ["Admin"] + [f"User{i}" for i in range(1, org.users + 1)]:
            ident = self.identity(org.name, user)
            users[user] = {
                "cert_path": str(ident.cert),
                "key_path": str(ident.key),
                "client_tls_cert_path": str(ident.tls_cert),
                "client_tls_key_path": str(ident.tls_key),
            }
        return {
            "name": org.name,
            "msp_id": org.msp_id,
            "channel": self.topology.channel,
            "peer_endpoint": ep.address,
            "server_name": ep.server_name,
            "tls_root_cert_path": str(ep.tls_root_cert),
            "users": users,
        }
