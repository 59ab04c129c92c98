"""``fedfabric consortium``: the steps of the ceremony that join organisations' public bundles.

    fedfabric consortium genesis --bundle OrderingMSP.json --bundle TransportMSP.json ...

``genesis`` is what the founding party runs: from the bundles alone (each checked:
``fedfabric org check``) and the topology's channel settings, it writes the channel's genesis
block to ``STATE_DIR/configtx/<channel>.block``; that block is public and goes to every
organisation, which joins its own nodes with it.
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
from fedfabric.network._topology import load_topology
from fedfabric.network.cli import add_network_options, state_dir
from fedfabric.network.fabric._ceremony import make_genesis


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedfabric consortium genesis`` (a ``fedfabric.commands`` entry point)."""
    p = sub.add_parser(
        "consortium",
        help="the consortium ceremony's shared steps (genesis block from public bundles)",
        description="Steps of the consortium ceremony that combine organisations' bundles.",
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
