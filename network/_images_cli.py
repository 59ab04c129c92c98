"""``fedfabric images build [KIND ...]``: the consortium's container images, built here with
podman from the installed Fabric build and this fedfabric (`fedfabric.network._images`).

    fedfabric images build                      # peer, orderer and chaincode
    fedfabric images build peer --base hyperledger/fabric-peer:3.1.5   # with a registry
    fedfabric images build chaincode --extras '[validation]'           # with torch
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from fedfabric.network import _images
from fedfabric.network._binaries import fabric_release, install_fabric
from fedfabric.network._errors import NetworkError
from fedfabric.network.cli import say


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``fedfabric images build`` (a ``fedfabric.commands`` entry point)."""
    p = sub.add_parser(
        "images",
        help="build the peer, orderer and chaincode server images here (podman)",
        description="Build the consortium's container images from local files: no registry "
        "is needed. Installs podman, runc, mmdebstrap and busybox-static with apt-get when "
        "they are missing (as root).",
    )
    actions = p.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="build images (default: all three)")
    build.add_argument("kinds", nargs="*", metavar="KIND",
                       help=f"which ({', '.join(_images.KINDS)}; default: all)")  # fmt: skip
    build.add_argument("--tag", help="the image tag (one KIND only; default fedfabric-KIND:...)")
    build.add_argument("--base", help="build FROM this official image instead of scratch")
    build.add_argument("--extras", default="", help="the chaincode image's fedfabric extras")
    build.add_argument("--fabric-home", default=None, help="a Fabric release folder to use")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    kinds = args.kinds or list(_images.KINDS)
    try:
        if args.tag and len(kinds) != 1:
            raise NetworkError("--tag names one image: give one KIND with it")
        if args.base and len(kinds) != 1:
            raise NetworkError("--base is one official image: give one KIND with it")
        release = fabric_release(args.fabric_home)
        if not args.fabric_home and {"peer", "orderer"} & set(kinds):
            asyncio.run(install_fabric(release, say))
        _images.install_tools(say)
        for kind in kinds:
            _images.build_image(
                kind, release, tag=args.tag, base=args.base, extras=args.extras, say=say
            )
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
