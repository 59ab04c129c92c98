"""Anchor peers, set by each organisation itself: a channel config update that changes only
its own group, signed by its own admin (the group's ``Admins`` policy: that organisation's
admins alone). Another organisation's admin cannot set them: the orderer refuses the update.

The update is computed here from the channel's current config block, as Fabric's
``configtxlator compute_update`` would for this one change: the read set pins the versions
the change was made against, the write set carries the organisation's group with the
``AnchorPeers`` value (and, when the value is new, the group's version one higher with every
other member at its current version). The peer CLI signs and submits it
(``peer channel update``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fabric_protos.common import common_pb2, configtx_pb2
from fabric_protos.peer import configuration_pb2

from fedfabric.network import _process
from fedfabric.network._topology import Organization, Peer

if TYPE_CHECKING:
    from fedfabric.network.fabric._network import FabricNetwork

ANCHOR_PEERS = "AnchorPeers"


def anchor_value(peers: tuple[Peer, ...]) -> bytes:
    """The ``AnchorPeers`` config value naming `peers` at their addresses."""
    anchors = configuration_pb2.AnchorPeers()
    for p in peers:
        host, _, port = p.address.rpartition(":")  # an IPv6 host keeps its brackets:
        anchors.anchor_peers.add(host=host, port=int(port))  # gossip joins "host:port"
    return anchors.SerializeToString()


def channel_config(block: bytes) -> configtx_pb2.Config:
    """The channel config in a config block."""
    envelope = common_pb2.Envelope.FromString(common_pb2.Block.FromString(block).data.data[0])
    payload = common_pb2.Payload.FromString(envelope.payload)
    return configtx_pb2.ConfigEnvelope.FromString(payload.data).config


def anchor_update(
    config: configtx_pb2.Config, channel: str, msp_id: str, value: bytes
) -> bytes | None:
    """The ``CONFIG_UPDATE`` envelope (unsigned) that sets `msp_id`'s anchor peers to
    `value`, or None when they already are that."""
    app = config.channel_group.groups["Application"]
    group = app.groups[msp_id]
    current = group.values.get(ANCHOR_PEERS)
    if current is not None and current.value == value:
        return None
    same = configtx_pb2.ConfigGroup(version=group.version)
    for key, v in group.values.items():
        if key != ANCHOR_PEERS:
            same.values[key].version = v.version
    for key, p in group.policies.items():
        same.policies[key].version = p.version
    for key, g in group.groups.items():
        same.groups[key].version = g.version
    written = configtx_pb2.ConfigGroup()
    written.CopyFrom(same)
    written.mod_policy = group.mod_policy
    anchors = written.values[ANCHOR_PEERS]
    anchors.mod_policy = "Admins"
    anchors.value = value
    if current is None:  # a new member of the group: the group itself changes
        written.version = group.version + 1
    else:
        anchors.version = current.version + 1
        anchors.mod_policy = current.mod_policy
        same.values[ANCHOR_PEERS].version = current.version  # read at that version

    def wrap(org_group: configtx_pb2.ConfigGroup) -> configtx_pb2.ConfigGroup:
        top = configtx_pb2.ConfigGroup(version=config.channel_group.version)
        top.groups["Application"].version = app.version
        top.groups["Application"].groups[msp_id].CopyFrom(org_group)
        return top

    update = configtx_pb2.ConfigUpdate(
        channel_id=channel, read_set=wrap(same), write_set=wrap(written)
    )
    header = common_pb2.ChannelHeader(type=common_pb2.CONFIG_UPDATE, channel_id=channel)
    payload = common_pb2.Payload(
        header=common_pb2.Header(channel_header=header.SerializeToString()),
        data=configtx_pb2.ConfigUpdateEnvelope(
            config_update=update.SerializeToString()
        ).SerializeToString(),
    )
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


async def fetch_config(net: FabricNetwork, admin_of: Organization) -> configtx_pb2.Config:
    """The channel's current config, fetched from the orderers as `admin_of`'s admin."""
    channel = net.topology.channel
    block = _updates(net) / f"{channel}-config.block"
    await _process.run_tool(
        [
            net.release.tool("peer"),
            "channel",
            "fetch",
            "config",
            str(block),
            "-c",
            channel,
            *net.orderer_args(),
        ],
        net.peer_cli_env(admin_of.peers[0]),
        what=f"fetch the config of {channel}",
    )
    return channel_config(block.read_bytes())


async def submit_update(
    net: FabricNetwork, admin_of: Organization, envelope: bytes, name: str
) -> None:
    """Sign the config update `envelope` as `admin_of`'s admin and submit it (``peer channel
    update``). Raises `NetworkError` with the orderer's reason when it is refused."""
    update = _updates(net) / f"{name}.tx"
    update.write_bytes(envelope)
    await _process.run_tool(
        [
            net.release.tool("peer"),
            "channel",
            "update",
            "-f",
            str(update),
            "-c",
            net.topology.channel,
            *net.orderer_args(),
        ],
        net.peer_cli_env(admin_of.peers[0]),
        what=f"config update {name} signed by {admin_of.msp_id}",
    )


async def set_anchor_peers(net: FabricNetwork, org: Organization) -> bool:
    """Set `org`'s anchor peers to its first peer, by a config update its own admin signs.
    Returns False when they were set already."""
    config = await fetch_config(net, org)
    channel = net.topology.channel
    envelope = anchor_update(config, channel, org.msp_id, anchor_value(org.peers[:1]))
    if envelope is None:
        return False
    await submit_update(net, org, envelope, f"{org.msp_id}-anchors")
    return True


def _updates(net: FabricNetwork) -> Path:
    folder = net.layout.configtx_dir / "updates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
