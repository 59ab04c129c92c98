"""``fedfabric org``: one organisation's identity, made on its own host, and its public bundle.

    fedfabric org init --org transport      # its CAs, nodes, users; bundles/TransportMSP.json
    fedfabric org bundle --org transport    # export its bundle again (--out FILE)
    fedfabric org check EnergyMSP.json ...  # check bundles received from other organisations

Private keys stay in the state directory's crypto folder where they were made; only the
bundle (certificates, NodeOU settings, node endpoints, digest) is meant to travel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedfabric.network._bundle import export_bundle, read_bundle, write_bundle
from fedfabric.network._crypto import generate_org, org_dir
from fedfabric.network._errors import NetworkError
from fedfabric.network._layout import Layout
from fedfabric.network._topology import load_topology
from fedfabric.network.cli import add_state_options, state_dir


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
