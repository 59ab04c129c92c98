"""The ``fedfabric`` command line (the entry point; environment variables are read here)."""

from __future__ import annotations

import argparse
import sys

from fedfabric.fl_worker import _audit_cli as audit_cli
from fedfabric.fl_worker import run
from fedfabric.network import _cli as network_cli


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedfabric", description="Federated learning on a Hyperledger Fabric ledger."
    )
    sub = p.add_subparsers(dest="command", required=True)
    network_cli.add_parser(sub)
    run.add_parser(sub)
    audit_cli.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
