"""Changing the consortium of a running channel: adding an organisation.

The change is a channel config update (`_config_update`) that adds the organisation's group to
the channel's Application group. That group's ``mod_policy`` is ``Admins``, ``MAJORITY
Admins`` of the member organisations, so the update needs the signatures of a majority of
their admins. Each admin signs on their own host and the update travels as a file:

- `propose_add`: a member's admin computes the update from the channel's current config and
  the new organisation's public bundle, signs it, and writes it to a file;
- `sign`: another member's admin adds their signature to the file;
- `submit`: once a majority has signed (checked here first, so a missing signature is named
  before the orderer refuses), any member submits it.

The new organisation's group is what ``configtxgen`` writes for the founding organisations
(a channel definition made from every bundle, in a scratch folder), so all groups have one
shape. Once the update is committed the new organisation starts its peers with the genesis
block (``fedfabric org up --genesis``: they fetch the later blocks from the orderers), and each
member's ``fedfabric org deploy`` approves the chaincode definitions with the topology's new
endorsement policy (k' of n+1): the definition's sequence goes up once a majority approves.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fabric_protos.common import configtx_pb2

from fedfabric.network._bundle import read_bundle
from fedfabric.network._errors import NetworkError
from fedfabric.network._layout import Layout
from fedfabric.network._process import fabric_env
from fedfabric.network._topology import Organization
from fedfabric.network.fabric._ceremony import make_genesis
from fedfabric.network.fabric._config_update import (
    APPLICATION,
    application_update,
    channel_config,
    fetch_config,
    read_update,
    sign_update,
    submit_file,
    updates_dir,
)

if TYPE_CHECKING:
    from fedfabric.network.fabric._network import FabricNetwork


@dataclass(frozen=True)
class Signatures:
    """Who signed an update that adds `adding`, among the channel's `members`."""

    adding: str
    members: tuple[str, ...]
    signed: tuple[str, ...]  # member MSP ids that signed, in signing order

    @property
    def needed(self) -> int:
        """Signatures the Application group's ``MAJORITY Admins`` policy needs."""
        return len(self.members) // 2 + 1

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m not in self.signed)

    @property
    def enough(self) -> bool:
        return len(self.signed) >= self.needed

    def describe(self) -> str:
        done = ", ".join(self.signed) or "nobody"
        text = (
            f"adding {self.adding}: signed by {done} ({len(self.signed)} of the "
            f"{self.needed} of {len(self.members)} member admins it needs)"
        )
        if not self.enough:
            text += f"; waiting for {self.needed - len(self.signed)} of {', '.join(self.missing)}"
        return text


def update_file(net: FabricNetwork, msp_id: str) -> Path:
    """Where `propose_add` writes the update adding `msp_id`."""
    return updates_dir(net) / f"add-{msp_id}.tx"


async def propose_add(
    net: FabricNetwork, admin_of: Organization, new: str
) -> tuple[Path, Signatures] | None:
    """Write the update adding organisation `new` (its bundle already received) to the
    channel, signed by `admin_of`'s admin; return the file and who signed it, or None when
    `new` is a member already."""
    msp_id = net.topology.any_org(new).msp_id
    computed = await _addition(net, admin_of, msp_id)
    if computed is None:
        return None
    envelope, members = computed
    path = update_file(net, msp_id)
    path.write_bytes(envelope)
    await sign_update(net, admin_of, path)
    return path, Signatures(msp_id, members, (admin_of.msp_id,))


async def signatures(net: FabricNetwork, admin_of: Organization, path: Path) -> Signatures:
    """Who signed the update in `path`, against the channel's current members, once it is
    checked to be exactly the update this host computes itself: from the channel's current
    config and the bundle of the organisation it adds, as received here. So an admin never
    signs or submits more than that addition (another organisation's MSP or a policy changed
    on the way). Raises `NetworkError` when it is anything else."""
    update, signers = read_update(_read(path))
    channel = net.topology.channel
    if update.channel_id != channel:
        raise NetworkError(f"{path} updates channel {update.channel_id!r}, not {channel!r}")
    written = update.write_set.groups[APPLICATION].groups
    added = [m for m in written if m not in update.read_set.groups[APPLICATION].groups]
    if len(added) != 1:
        raise NetworkError(f"{path} does not add one organisation (it adds {sorted(added)})")
    computed = await _addition(net, admin_of, added[0])
    if computed is None:
        raise NetworkError(f"{added[0]} is a member of channel {channel} already")
    envelope, members = computed
    if read_update(envelope)[0] != update:
        raise NetworkError(
            f"{path} is not the update {admin_of.msp_id} computes for adding {added[0]} (from "
            f"the channel's current config and {added[0]}'s bundle received here): it may "
            "change more than that, or the config changed since; have it proposed again"
        )
    return Signatures(added[0], members, _member_signers(signers, members))


async def sign(net: FabricNetwork, admin_of: Organization, path: Path) -> Signatures:
    """Add `admin_of`'s admin signature to the update in `path`, once it is checked
    (`signatures`; a second call leaves the file as it is); return who has signed."""
    before = await signatures(net, admin_of, path)
    if admin_of.msp_id not in before.members:
        raise NetworkError(f"{admin_of.msp_id} is not a member of the channel; it cannot sign")
    if admin_of.msp_id in before.signed:
        return before
    await sign_update(net, admin_of, path)
    signed = _member_signers(read_update(_read(path))[1], before.members)
    return replace(before, signed=signed)


async def submit(net: FabricNetwork, admin_of: Organization, path: Path) -> Signatures:
    """Submit the update in `path`, once it is checked (`signatures`) and a majority of
    member admins signed it (else raise `NetworkError` naming who is missing); `admin_of`'s
    admin submits it."""
    signed = await signatures(net, admin_of, path)
    with_submitter = set(signed.signed) | {admin_of.msp_id}
    if len(with_submitter & set(signed.members)) < signed.needed:
        raise NetworkError(f"too few signatures: {signed.describe()}")
    await submit_file(net, admin_of, path)
    return signed


async def _addition(
    net: FabricNetwork, admin_of: Organization, msp_id: str
) -> tuple[bytes, tuple[str, ...]] | None:
    """The unsigned update adding `msp_id`, computed here from the channel's current config
    and `msp_id`'s received bundle, and the channel's members; None when it is one."""
    received = net.layout.bundle_file(msp_id)
    if not received.exists():
        raise NetworkError(
            f"no bundle of {msp_id} in {received.parent}: receive it first "
            f"(fedfabric org receive --org {admin_of.name} {msp_id}.json)"
        )
    bundle = read_bundle(received)  # checked again: the file may have changed since
    if bundle.kind != "peer":
        raise NetworkError(f"{msp_id} is an ordering organisation; only peer ones can be added")
    config = await fetch_config(net, admin_of)
    app = config.channel_group.groups[APPLICATION]
    if msp_id in app.groups:
        return None
    group = await _org_group(net, msp_id)

    def change(read: configtx_pb2.ConfigGroup, write: configtx_pb2.ConfigGroup) -> None:
        write.version = app.version + 1
        write.mod_policy = app.mod_policy
        write.groups[msp_id].CopyFrom(group)

    envelope = application_update(config, net.topology.channel, change)
    return envelope, tuple(sorted(app.groups))


def _member_signers(signers: list[str], members: tuple[str, ...]) -> tuple[str, ...]:
    """The members among `signers` (MSP ids), each once, in signing order."""
    return tuple(dict.fromkeys(s for s in signers if s in members))


async def _org_group(net: FabricNetwork, msp_id: str) -> configtx_pb2.ConfigGroup:
    """`msp_id`'s group as configtxgen writes it: a channel definition from every bundle this
    host holds, made in a scratch folder, and its group taken from it."""
    bundles = sorted(net.layout.bundles_dir.glob("*.json"))
    with tempfile.TemporaryDirectory(prefix="fedfabric-org-group-") as scratch:
        layout = Layout(Path(scratch))
        block = await make_genesis(net.release, net.topology, layout, bundles, fabric_env())
        config = channel_config(block.read_bytes())
    return config.channel_group.groups[APPLICATION].groups[msp_id]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NetworkError(f"cannot read the update {path}: {exc.strerror}") from exc
