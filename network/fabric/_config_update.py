"""Channel config updates: the channel's current config, an update computed against it, its
signatures, and its submission.

An update is a ``CONFIG_UPDATE`` envelope, as Fabric's ``configtxlator compute_update`` writes
it: the read set pins the versions of what the change was made against, the write set holds the
changed elements one version higher. A group whose members change is written whole: every
member it keeps is listed at its current version (in the read set too, so the orderer sees it
unchanged), a new member in full at version 0. The orderer checks each changed element against
its ``mod_policy``, and the signatures in the envelope must satisfy it. Fabric's peer CLI signs
(``peer channel signconfigtx``) and submits (``peer channel update``, which adds the
submitter's signature); the envelope travels between organisations as a file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fabric_protos.common import common_pb2, configtx_pb2
from fabric_protos.msp import identities_pb2

from fedfabric.network import _process
from fedfabric.network._errors import NetworkError
from fedfabric.network._topology import Organization

if TYPE_CHECKING:
    from fedfabric.network.fabric._network import FabricNetwork

APPLICATION = "Application"


def channel_config(block: bytes) -> configtx_pb2.Config:
    """The channel config in a config block."""
    envelope = common_pb2.Envelope.FromString(common_pb2.Block.FromString(block).data.data[0])
    payload = common_pb2.Payload.FromString(envelope.payload)
    return configtx_pb2.ConfigEnvelope.FromString(payload.data).config


def pinned(group: configtx_pb2.ConfigGroup) -> configtx_pb2.ConfigGroup:
    """`group` at its version with each member at its own: what an update that keeps them
    unchanged lists of it."""
    same = configtx_pb2.ConfigGroup(version=group.version)
    for key, v in group.values.items():
        same.values[key].version = v.version
    for key, p in group.policies.items():
        same.policies[key].version = p.version
    for key, g in group.groups.items():
        same.groups[key].version = g.version
    return same


def application_update(
    config: configtx_pb2.Config,
    channel: str,
    change: Callable[[configtx_pb2.ConfigGroup, configtx_pb2.ConfigGroup], None],
) -> bytes:
    """The unsigned ``CONFIG_UPDATE`` envelope of a change inside the Application group:
    `change(read, write)` edits the pinned Application group of the read and the write set."""
    app = config.channel_group.groups[APPLICATION]
    sets = []
    for _ in ("read", "write"):
        top = configtx_pb2.ConfigGroup(version=config.channel_group.version)
        top.groups[APPLICATION].CopyFrom(pinned(app))
        sets.append(top)
    read, write = sets
    change(read.groups[APPLICATION], write.groups[APPLICATION])
    update = configtx_pb2.ConfigUpdate(channel_id=channel, read_set=read, write_set=write)
    header = common_pb2.ChannelHeader(type=common_pb2.CONFIG_UPDATE, channel_id=channel)
    payload = common_pb2.Payload(
        header=common_pb2.Header(channel_header=header.SerializeToString()),
        data=configtx_pb2.ConfigUpdateEnvelope(
            config_update=update.SerializeToString()
        ).SerializeToString(),
    )
    return common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()


def read_update(envelope: bytes) -> tuple[configtx_pb2.ConfigUpdate, list[str]]:
    """A ``CONFIG_UPDATE`` envelope's update and the MSP ids of its signers, in order.
    Raises `NetworkError` when the bytes are not one."""
    try:
        payload = common_pb2.Payload.FromString(common_pb2.Envelope.FromString(envelope).payload)
        header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
        if header.type != common_pb2.CONFIG_UPDATE:
            raise ValueError(f"its type is {header.type}, not CONFIG_UPDATE")
        wrapped = configtx_pb2.ConfigUpdateEnvelope.FromString(payload.data)
        update = configtx_pb2.ConfigUpdate.FromString(wrapped.config_update)
        signers = []
        for s in wrapped.signatures:
            creator = common_pb2.SignatureHeader.FromString(s.signature_header).creator
            signers.append(identities_pb2.SerializedIdentity.FromString(creator).mspid)
    except Exception as exc:  # protobuf raises DecodeError, and a wrong type ValueError
        raise NetworkError(f"not a channel config update: {exc}") from exc
    return update, signers


async def fetch_config(net: FabricNetwork, admin_of: Organization) -> configtx_pb2.Config:
    """The channel's current config, fetched from the orderers as `admin_of`'s admin."""
    channel = net.topology.channel
    block = updates_dir(net) / f"{channel}-config.block"
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


async def sign_update(net: FabricNetwork, admin_of: Organization, path: Path) -> None:
    """Add `admin_of`'s admin signature to the update in file `path` (in place)."""
    await _process.run_tool(
        [net.release.tool("peer"), "channel", "signconfigtx", "-f", str(path)],
        net.peer_cli_env(admin_of.peers[0]),
        what=f"sign {path.name} as {admin_of.msp_id}'s admin",
    )


async def submit_file(net: FabricNetwork, admin_of: Organization, path: Path) -> None:
    """Submit the update in file `path`, adding `admin_of`'s admin signature (``peer channel
    update``). Raises `NetworkError` with the orderer's reason when it is refused."""
    await _process.run_tool(
        [
            net.release.tool("peer"),
            "channel",
            "update",
            "-f",
            str(path),
            "-c",
            net.topology.channel,
            *net.orderer_args(),
        ],
        net.peer_cli_env(admin_of.peers[0]),
        what=f"config update {path.stem} submitted by {admin_of.msp_id}",
    )


async def submit_update(
    net: FabricNetwork, admin_of: Organization, envelope: bytes, name: str
) -> None:
    """Sign the config update `envelope` as `admin_of`'s admin and submit it."""
    update = updates_dir(net) / f"{name}.tx"
    update.write_bytes(envelope)
    await submit_file(net, admin_of, update)


def updates_dir(net: FabricNetwork) -> Path:
    """Where this host keeps the config blocks it fetched and the updates it made."""
    folder = net.layout.configtx_dir / "updates"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
