"""Anchor peers, set by each organisation itself: a channel config update that changes only
its own group, signed by its own admin (the group's ``Admins`` policy: that organisation's
admins alone). Another organisation's admin cannot set them: the orderer refuses the update.

The update is computed from the channel's current config (`_config_update`): the write set
carries the organisation's group with the ``AnchorPeers`` value (and, when the value is new,
the group's version one higher with every other member at its current version).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fabric_protos.common import configtx_pb2
from fabric_protos.peer import configuration_pb2

from fedfabric.network._topology import Organization, Peer
from fedfabric.network.fabric._config_update import (
    APPLICATION,
    application_update,
    fetch_config,
    pinned,
    submit_update,
)

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


def anchor_update(
    config: configtx_pb2.Config, channel: str, msp_id: str, value: bytes
) -> bytes | None:
    """The ``CONFIG_UPDATE`` envelope (unsigned) that sets `msp_id`'s anchor peers to
    `value`, or None when they already are that."""
    group = config.channel_group.groups[APPLICATION].groups[msp_id]
    current = group.values.get(ANCHOR_PEERS)
    if current is not None and current.value == value:
        return None

    def change(read: configtx_pb2.ConfigGroup, write: configtx_pb2.ConfigGroup) -> None:
        read.groups[msp_id].CopyFrom(pinned(group))
        mine = write.groups[msp_id]
        mine.CopyFrom(pinned(group))
        mine.mod_policy = group.mod_policy
        anchors = mine.values[ANCHOR_PEERS]
        anchors.value = value
        if current is None:  # a new member of the group: the group itself changes
            anchors.mod_policy = "Admins"
            mine.version = group.version + 1
        else:
            anchors.version = current.version + 1
            anchors.mod_policy = current.mod_policy

    return application_update(config, channel, change)


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
