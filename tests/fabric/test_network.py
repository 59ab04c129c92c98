"""The consortium network on real Fabric binaries: up, down, deploy, failures, addresses.

Transactions go through `fedfabric.gateway`, each endorsed by exactly the organisations a
test names; the peer CLI is used only by the network code under test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from fabric_protos.common import ledger_pb2

from fedfabric.gateway import CommitError, EvaluateError, Timeouts, connect_org
from fedfabric.network import FabricNetwork, PortInUseError, parse_topology
from tests.conftest import PORT_SHIFT, kv_topology, release, topology_data, with_addresses

TIMEOUTS = Timeouts(evaluate=15, endorse=15, submit=15, commit_status=30)


async def invoke(net: FabricNetwork, *args: str, orgs: tuple[int, ...] = (0, 1)) -> int:
    """Submit ``kv`` through the first org's gateway, endorsed by exactly the orgs ``orgs``;
    return the block it was committed in (on that org's peer)."""
    chosen = [net.topology.organizations[i] for i in orgs]
    async with connect_org(
        net.layout.profiles_dir, chosen[0].name, "User1", timeouts=TIMEOUTS
    ) as gateway:
        contract = gateway.get_network(net.topology.channel).get_contract("kv")
        proposal = contract.new_proposal(
            args[0], list(args[1:]), endorsing_orgs=[o.msp_id for o in chosen]
        )
        status = await (await (await proposal.endorse()).submit()).status()
        if not status.successful:
            raise CommitError(status.transaction_id, status.code)
        return status.block_number


async def query(net: FabricNetwork, *args: str, org: int = 2, after: int = -1) -> str:
    """Evaluate ``kv`` on the peer of org number ``org``, once that peer has committed block
    `after` (another org's peer may commit a block a moment later than the submitter's)."""
    o = net.topology.organizations[org]
    async with connect_org(net.layout.profiles_dir, o.name, "User1", timeouts=TIMEOUTS) as gw:
        network = gw.get_network(net.topology.channel)

        async def has_block() -> bool:
            raw = await network.get_contract("qscc").evaluate("GetChainInfo", [network.name])
            return ledger_pb2.BlockchainInfo.FromString(raw).height > after

        await wait_for(has_block, timeout=30, what=f"{o.name}'s peer to commit block {after}")
        contract = network.get_contract("kv")
        return (
            await contract.evaluate(args[0], list(args[1:]), endorsing_orgs=[o.msp_id])
        ).decode()


async def heights(net: FabricNetwork) -> list[int | None]:
    return [n.height for n in await net.status() if n.kind == "peer"]


async def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.25)


async def test_up_gives_every_node_the_channel_at_one_height(network: FabricNetwork) -> None:
    nodes = await network.status()

    assert {n.kind for n in nodes} == {"orderer", "peer", "chaincode"}
    assert all(n.running for n in nodes)
    peer_heights = {n.height for n in nodes if n.kind == "peer"}
    orderer_heights = {n.height for n in nodes if n.kind == "orderer"}
    assert len(peer_heights) == 1 and None not in peer_heights
    assert peer_heights == orderer_heights
    assert all(n.detail == "consenter" for n in nodes if n.kind == "orderer")


async def test_second_up_on_a_running_network_does_nothing(network: FabricNetwork) -> None:
    before = await heights(network)

    assert await network.up() is False
    assert await heights(network) == before


async def test_invoke_endorsed_by_two_of_three_orgs_commits(network: FabricNetwork) -> None:
    block = await invoke(network, "Put", "two-orgs", "committed")

    assert await query(network, "Get", "two-orgs", org=2, after=block) == "committed"


async def test_invoke_endorsed_by_one_org_is_invalidated_by_the_policy(
    network: FabricNetwork,
) -> None:
    with pytest.raises(CommitError) as info:
        await invoke(network, "Put", "one-org", "x", orgs=(0,))

    assert info.value.code_name == "ENDORSEMENT_POLICY_FAILURE"
    with pytest.raises(EvaluateError, match="does not exist"):
        await query(network, "Get", "one-org")


async def test_stopped_peer_catches_up_after_restart(network: FabricNetwork) -> None:
    health = network.topology.peers[2]
    await network.stop_node(health.host)
    try:
        await invoke(network, "Put", "while-down", "1", orgs=(0, 1))
        await invoke(network, "Put", "while-down", "2", orgs=(0, 1))
    finally:
        await network.start_node(health.host)

    async def caught_up() -> bool:
        hs = await heights(network)
        return len(set(hs)) == 1 and None not in hs

    await wait_for(caught_up, what="the restarted peer to reach the others' height")
    assert await query(network, "Get", "while-down", org=2) == "2"


async def test_two_orgs_down_cannot_meet_the_policy(network: FabricNetwork) -> None:
    energy, health = network.topology.peers[1], network.topology.peers[2]
    await network.stop_node(energy.host)
    await network.stop_node(health.host)
    try:
        with pytest.raises(CommitError) as info:
            await invoke(network, "Put", "alone", "x", orgs=(0,))
        assert info.value.code_name == "ENDORSEMENT_POLICY_FAILURE"
    finally:
        await network.start_node(energy.host)
        await network.start_node(health.host)


async def test_raft_elects_a_new_leader_after_kill_9(network: FabricNetwork) -> None:
    old = await wait_for(network.leader, what="a Raft leader")
    network.kill_node(old)
    try:
        new = await wait_for(network.leader, timeout=60, what="a new Raft leader")
        assert new != old
        block = await invoke(network, "Put", "after-leader-crash", "ok")
        assert await query(network, "Get", "after-leader-crash", after=block) == "ok"
    finally:
        await network.start_node(old)


async def test_down_and_up_keep_height_and_state(network: FabricNetwork) -> None:
    # More than one Raft batch (PreferredMaxBytes, 512 KB) of blocks: restarted orderers then
    # replay their log in several batches, which deadlocked Fabric before fabric#4199 unless a
    # Raft snapshot was taken (network/_config.py).
    for i in range(3):
        await invoke(network, "Put", f"bulk{i}", "x" * 300_000)
    await invoke(network, "Put", "durable", "kept")
    before = await heights(network)

    await network.down()
    assert not [n for n in await network.status() if n.running]
    assert await network.up() is True

    assert await heights(network) == before
    assert await query(network, "Get", "durable") == "kept"


async def test_busy_port_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    topology = kv_topology(port_shift=PORT_SHIFT + 1000)
    net = FabricNetwork(topology, tmp_path / "state", release())
    busy = topology.peers[1]
    with socket.socket() as s:
        s.bind((busy.bind_host, busy.port))
        s.listen()

        with pytest.raises(PortInUseError) as info:
            await net.up()

    assert info.value.port == busy.port and info.value.node == busy.host
    assert str(busy.port) in str(info.value) and busy.host in str(info.value)
    assert not [n for n in await net.status() if n.running]


async def test_nodes_on_their_own_addresses_are_reached_there_over_tls(tmp_path: Path) -> None:
    # Energy on 127.0.0.2 with the very port numbers of transport (on 127.0.0.1), the orderers
    # on 127.0.0.3 but orderer2 on 127.0.0.4: Linux routes all of 127.0.0.0/8 to loopback. Each
    # connection checks the TLS certificate against the address it dials: the peer CLI and
    # osnadmin, gossip, Raft between the orderers, the peers' deliveries, the peer's dial of its
    # chaincode server; the gateway clients check the host name.
    data = with_addresses(
        topology_data(PORT_SHIFT - 1500), energy="127.0.0.2", ordering="127.0.0.3"
    )
    transport, energy = (o["peers"][0] for o in data["organizations"][:2])
    energy.update(transport)
    data["orderer_org"]["orderers"][2]["address"] = "127.0.0.4"
    data["chaincodes"] = [
        {"name": "pykv", "server": "python", "contract": "tests.fixtures.pykv:KeyValue"}
    ]
    net = FabricNetwork(parse_topology(data), tmp_path / "state", release())
    try:
        await net.up()
        await net.deploy(["pykv"])
        profiles = {o: json.loads(net.profile(o).read_text()) for o in ("transport", "energy")}
        async with connect_org(net.layout.profiles_dir, "energy", "User1", timeouts=TIMEOUTS) as gw:
            contract = gw.get_network(net.topology.channel).get_contract("pykv")
            put = await contract.submit(
                "Put",
                ["where", "127.0.0.2"],
                endorsing_orgs=["EnergyMSP", "HealthMSP"],
                sync_orgs=["TransportMSP"],
            )
        async with connect_org(
            net.layout.profiles_dir, "transport", "User1", timeouts=TIMEOUTS
        ) as gw:
            contract = gw.get_network(net.topology.channel).get_contract("pykv")
            got = await contract.evaluate("Get", ["where"], endorsing_orgs=["TransportMSP"])
        nodes = await net.status()
    finally:
        await net.clean()

    assert put == got == b"127.0.0.2"
    assert profiles["energy"]["peer_endpoint"] == f"127.0.0.2:{transport['port']}"
    assert profiles["transport"]["peer_endpoint"] == f"127.0.0.1:{transport['port']}"
    assert all(n.running for n in nodes)
    served = {n.detail for n in nodes if n.kind == "chaincode"}
    assert f"127.0.0.2:{transport['chaincode_server_port']}" in served
