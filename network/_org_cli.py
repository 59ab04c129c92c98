"""``fedfabric org``: one organisation's identity, made on its own host, and its public bundle.

    fedfabric org init --org transport      # its CAs, nodes, users; bundles/TransportMSP.json
    fedfabric org bundle --org transport    # export its bundle again (--out FILE)
    fedfabric org check EnergyMSP.json ...  # check bundles received from other organisations
    fedfabric org receive --org transport EnergyMSP.json ...  # keep them (checked) for `up`
    fedfabric org up --org transport --genesis smartcity.block   # start and join its nodes
    fedfabric org deploy --org transport fl  # install, approve; commit once a majority has
    fedfabric org status|down --org transport

Private keys stay in the state directory's crypto folder where they were made; only the
bundle (certificates, NodeOU settings, node endpoints, digest) is meant to travel.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path

from fedfabric.network._bundle import export_bundle, read_bundle, write_bundle
from fedfabric.network._compose import org_compose_yaml
from fedfabric.network._crypto import generate_org, org_dir
from fedfabric.network._errors import NetworkError
from fedfabric.network._layout import Layout
from fedfabric.network._topology import load_topology
from fedfabric.network.cli import (
    add_network_options,
    add_state_options,
    open_network,
    say,
    state_dir,
)
from fedfabric.network.fabric import FabricNetwork
from fedfabric.network.fabric._ceremony import import_received


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedfabric org init|bundle|check`` (a ``fedfabric.commands`` entry point)."""
    p = sub.add_parser(
        "org",
        help="one organisation's keys on its own host, and its public bundle",
        description="Make one organisation's CA, TLS CA, node and user identities in its own "
        "state directory, and export or check public bundles (no private keys in them).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    init = actions.add_parser(
        "init",
        help="make the organisation's keys and certificates, write its bundle",
        description="Create (or complete) the organisation's material in STATE_DIR/crypto "
        "and write its public bundle to STATE_DIR/bundles/<MSP id>.json.",
    )
    bundle = actions.add_parser(
        "bundle",
        help="export the organisation's bundle again",
        description="Export the public bundle of an organisation made by `org init`.",
    )
    for q in (init, bundle):
        add_state_options(q)
        q.add_argument("--org", required=True, help="the organisation: its name or MSP id")
    bundle.add_argument(
        "--out", type=Path, help="where to write it (default: STATE_DIR/bundles/<MSP id>.json)"
    )
    init.set_defaults(func=_export, generate=True, out=None)
    bundle.set_defaults(func=_export, generate=False)
    check = actions.add_parser(
        "check",
        help="check bundles: well-formed, no private keys, digest, certificates",
        description="Check each bundle; print its MSP id and digest, or the error. "
        "Exits 1 if any bundle is refused.",
    )
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.set_defaults(func=_check)
    receive = actions.add_parser(
        "receive",
        help="check bundles other organisations sent and keep them for `org up`",
        description="Check each bundle and copy it to STATE_DIR/bundles/<MSP id>.json.",
    )
    add_state_options(receive)
    receive.add_argument("--org", required=True, help="this organisation: its name or MSP id")
    receive.add_argument("files", nargs="+", type=Path, metavar="FILE")
    receive.set_defaults(func=_receive)
    for action, text in (
        ("up", "start this organisation's nodes and join them to the channel"),
        ("deploy", "install and approve chaincodes; commit once a majority approved"),
        ("status", "this organisation's nodes: running, height"),
        ("down", "stop this organisation's nodes (ledgers stay)"),
        ("compose", "write this organisation's compose file (its nodes as containers)"),
    ):
        q = actions.add_parser(action, help=text, description=text + ".")
        add_network_options(q)
        q.add_argument("--org", required=True, help="this organisation: its name or MSP id")
        if action == "up":
            q.add_argument(
                "--genesis",
                type=Path,
                help="the channel's genesis block from the founding party (first `up` only)",
            )
        if action == "deploy":
            q.add_argument("names", nargs="*", help="chaincodes (default: all)")
        if action == "compose":
            q.add_argument(
                "--output", type=Path, help="where (default: STATE_DIR/compose/ORG.yaml)"
            )
        q.set_defaults(func=_node_action)


def _export(args: argparse.Namespace) -> int:
    """``init`` (``args.generate``: make the material first) and ``bundle``."""
    try:
        topology = load_topology(args.topology)
        layout = Layout(state_dir(args, topology))
        if args.generate:
            org = generate_org(topology, args.org, layout.crypto_dir)
            where = org_dir(layout.crypto_dir, org)
            print(f"{org.name} ({org.msp_id}): keys and certificates in {where}")
        bundle = export_bundle(topology, args.org, layout.crypto_dir)
        path = write_bundle(bundle, args.out or layout.bundle_file(bundle.msp_id))
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"bundle {path} {bundle.digest}")
    return 0


def _check(args: argparse.Namespace) -> int:
    refused = 0
    for path in args.files:
        try:
            bundle = read_bundle(path)
        except NetworkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            refused += 1
            continue
        print(f"{path}: {bundle.msp_id} {bundle.digest}")
    return 1 if refused else 0


def _receive(args: argparse.Namespace) -> int:
    try:
        topology = load_topology(args.topology)
        layout = Layout(state_dir(args, topology))
        own = topology.any_org(args.org).msp_id
        for path in args.files:
            bundle = read_bundle(path)
            if bundle.msp_id == own:
                raise NetworkError(f"{path} is {own}'s own bundle; `org init` makes that one")
            topology.any_org(bundle.msp_id)  # an organisation of this consortium
            kept = write_bundle(bundle, layout.bundle_file(bundle.msp_id))
            print(f"{bundle.msp_id}: {bundle.digest} kept in {kept}")
        import_received(topology, layout, [own])  # their public MSPs, for Fabric's tools
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def _node_action(args: argparse.Namespace) -> int:
    try:
        net = open_network(args)
        if args.action == "compose":
            path = args.output or net.layout.root / "compose" / f"{args.org}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(org_compose_yaml(net))
            print(f"{args.org}: {path}")
            return 0
        return asyncio.run(_on_nodes(net, args))
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _on_nodes(net: FabricNetwork, args: argparse.Namespace) -> int:
    if args.action == "up":
        block = net.layout.channel_block(net.topology.channel)
        if args.genesis is not None and args.genesis.resolve() != block.resolve():
            block.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.genesis, block)
        await net.install(say)
        await net.up(say)
    elif args.action == "deploy":
        await net.deploy(args.names or None, say)
    elif args.action == "down":
        await net.down()
        print(f"{args.org}: nodes stopped (ledgers kept in {net.layout.root})")
    else:
        for n in await net.status():
            state = "running" if n.running else "stopped"
            height = "" if n.height is None else str(n.height)
            print(f"{n.name:44} {n.kind:9} {state:8} {height} {n.detail}".rstrip())
    return 0
