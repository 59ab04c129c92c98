"""``fedfabric consortium``: the steps of the ceremony that join organisations' public bundles,
and the changes of a running consortium.

    fedfabric consortium genesis --bundle OrderingMSP.json --bundle TransportMSP.json ...
    fedfabric consortium propose-add --org transport water     # → add-WaterMSP.tx, signed
    fedfabric consortium sign --org energy add-WaterMSP.tx     # on Energy's host
    fedfabric consortium submit --org energy add-WaterMSP.tx   # once a majority signed

``genesis`` is what the founding party runs: from the bundles alone (each checked:
``fedfabric org check``) and the topology's channel settings, it writes the channel's genesis
block to ``STATE_DIR/configtx/<channel>.block``; that block is public and goes to every
organisation, which joins its own nodes with it.

``propose-add``, ``sign`` and ``submit`` add an organisation to the running channel (see
`fedfabric.network.fabric._consortium`): each runs as the admin of ``--org``, an organisation
whose keys are in this state directory, and the update file is what travels between them.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
from pathlib import Path

from fedfabric.network._binaries import fabric_release
from fedfabric.network._errors import NetworkError
from fedfabric.network._layout import Layout
from fedfabric.network._process import fabric_env
from fedfabric.network._topology import Organization, load_topology
from fedfabric.network.cli import add_network_options, state_dir
from fedfabric.network.fabric import _consortium
from fedfabric.network.fabric._ceremony import make_genesis
from fedfabric.network.fabric._network import FabricNetwork


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedfabric consortium genesis|propose-add|sign|submit`` (a ``fedfabric.commands``
    entry point)."""
    p = sub.add_parser(
        "consortium",
        help="the consortium's shared steps: its genesis block, adding an organisation",
        description="Steps of the consortium ceremony that combine organisations' bundles, "
        "and changes to a running consortium signed by its members' admins.",
    )
    actions = p.add_subparsers(dest="action", required=True)
    genesis = actions.add_parser(
        "genesis",
        help="write the channel's genesis block from every organisation's public bundle",
        description="Check every bundle, then write STATE_DIR/configtx/<channel>.block with "
        "configtxgen. Needs exactly one bundle per organisation of the topology.",
    )
    add_network_options(genesis)
    genesis.add_argument(
        "--bundle",
        dest="bundles",
        action="append",
        type=Path,
        required=True,
        metavar="FILE",
        help="an organisation's bundle (give one --bundle per organisation)",
    )
    genesis.set_defaults(func=_genesis)
    propose = actions.add_parser(
        "propose-add",
        help="write the config update that adds an organisation, signed by --org's admin",
        description="Compute, from the channel's current config and the new organisation's "
        "bundle (received first: fedfabric org receive), the config update that adds it; sign "
        "it as --org's admin and write STATE_DIR/configtx/updates/add-<MSP>.tx. Send that file "
        "to the other members' admins to sign.",
    )
    propose.add_argument("new_org", metavar="ORG", help="the organisation to add (name or MSP id)")
    changes = [propose]
    for action, text in (
        ("sign", "add --org's admin signature to a config update file"),
        ("submit", "submit a config update file once a majority of member admins signed it"),
    ):
        q = actions.add_parser(action, help=text, description=text + ".")
        q.add_argument("file", type=Path, help="the update file (add-<MSP>.tx)")
        changes.append(q)
    for q in changes:
        add_network_options(q)
        q.add_argument("--org", required=True, help="this organisation: its name or MSP id")
        q.set_defaults(func=_change)


def _genesis(args: argparse.Namespace) -> int:
    try:
        topology = load_topology(args.topology)
        layout = Layout(state_dir(args, topology))
        release = fabric_release(args.fabric_home)
        release.check()
        block = asyncio.run(make_genesis(release, topology, layout, args.bundles, fabric_env()))
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    digest = hashlib.sha256(block.read_bytes()).hexdigest()
    print(f"genesis block of channel {topology.channel}: {block} sha256:{digest}")
    return 0


def _change(args: argparse.Namespace) -> int:
    try:
        topology = load_topology(args.topology)
        net = FabricNetwork(
            topology, state_dir(args, topology), fabric_release(args.fabric_home), orgs=[args.org]
        )
        if not net.own_orgs:
            raise NetworkError(f"{args.org} is the ordering organisation; a member org signs")
        return asyncio.run(_on_update(net, net.own_orgs[0], args))
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _on_update(net: FabricNetwork, admin_of: Organization, args: argparse.Namespace) -> int:
    if args.action == "propose-add":
        proposed = await _consortium.propose_add(net, admin_of, args.new_org)
        if proposed is None:
            print(f"{args.new_org} is a member of channel {net.topology.channel} already")
            return 0
        path, signed = proposed
        print(f"update {path}")
        print(signed.describe())
    elif args.action == "sign":
        print((await _consortium.sign(net, admin_of, args.file)).describe())
    else:
        signed = await _consortium.submit(net, admin_of, args.file)
        print(
            f"{signed.adding} added to channel {net.topology.channel} (submitted by "
            f"{admin_of.msp_id})"
        )
    return 0
