"""``python -m fedfabric.chaincode serve``: run contracts as a chaincode-as-a-service server.

Environment fallbacks (read only here): ``CHAINCODE_ID`` for ``--chaincode-id`` and
``CHAINCODE_SERVER_ADDRESS`` for ``--address``. Bad arguments exit with status 2.

Example::

    python -m fedfabric.chaincode serve --contract mypkg.assets:Assets \\
        --address 0.0.0.0:9999 --chaincode-id basic_1.0:abc... \\
        --tls-cert server.crt --tls-key server.key --tls-client-ca peer-ca.crt
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from fedfabric.chaincode._contract import Contract
from fedfabric.chaincode._server import ChaincodeServer, ServerTLS

log = logging.getLogger("fedfabric.chaincode")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, serve until SIGTERM/SIGINT, return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    chaincode_id = args.chaincode_id or os.environ.get("CHAINCODE_ID", "")
    address = args.address or os.environ.get("CHAINCODE_SERVER_ADDRESS", "")
    if not chaincode_id:
        parser.error("no chaincode id: give --chaincode-id or set CHAINCODE_ID")
    if not address or ":" not in address:
        parser.error(
            f"address {address!r} is not HOST:PORT (give --address or set CHAINCODE_SERVER_ADDRESS)"
        )
    settings = dict(_setting(parser, item) for item in args.setting)
    try:
        contracts = [_load_contract(spec)(settings) for spec in args.contract]
        tls = _load_tls(args)
        server = ChaincodeServer(contracts, chaincode_id=chaincode_id, address=address, tls=tls)
    except (ValueError, TypeError, OSError, ImportError) as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(server, _describe_tls(tls)))
    except OSError as exc:
        print(f"fedfabric.chaincode: {exc}", file=sys.stderr)
        return 1
    return 0


async def _serve(server: ChaincodeServer, mode: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    log.info("serving chaincode %s on %s (%s)", server.chaincode_id, server.address, mode)
    await stop.wait()
    log.info("stopping")
    await server.stop(grace=5.0)


def _describe_tls(tls: ServerTLS | None) -> str:
    if tls is None:
        return "no TLS"
    return "mutual TLS" if tls.client_ca else "TLS"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fedfabric.chaincode")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve contracts to peers (chaincode-as-a-service)")
    serve.add_argument(
        "--contract",
        action="append",
        required=True,
        metavar="MODULE:CLASS",
        help="contract class to serve; repeat for more (the first is default)",
    )
    serve.add_argument("--address", help="HOST:PORT to listen on [CHAINCODE_SERVER_ADDRESS]")
    serve.add_argument("--chaincode-id", help="installed package id, label:hash [CHAINCODE_ID]")
    serve.add_argument("--tls-cert", help="server certificate (PEM file)")
    serve.add_argument("--tls-key", help="server private key (PEM file)")
    serve.add_argument("--tls-client-ca", help="CA of client certificates; requires them")
    serve.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="contract setting; repeat for more",
    )
    return parser


def _setting(parser: argparse.ArgumentParser, item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        parser.error(f"--setting {item!r} is not KEY=VALUE")
    return key, value


def _load_contract(spec: str) -> type[Contract]:
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"--contract {spec!r} is not MODULE:CLASS")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import contract module {module_name!r}: {exc}") from exc
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Contract)):
        raise TypeError(f"{spec} is not a fedfabric.chaincode.Contract subclass")
    return cls


def _load_tls(args: argparse.Namespace) -> ServerTLS | None:
    if not args.tls_cert and not args.tls_key:
        if args.tls_client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
        return None
    if not (args.tls_cert and args.tls_key):
        raise ValueError("--tls-cert and --tls-key go together")
    return ServerTLS(
        cert=_read(args.tls_cert, "--tls-cert"),
        key=_read(args.tls_key, "--tls-key"),
        client_ca=_read(args.tls_client_ca, "--tls-client-ca") if args.tls_client_ca else None,
    )


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise OSError(f"{option}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN" not in data:
        raise ValueError(f"{option}: {path} is not a PEM file")
    return data


if __name__ == "__main__":
    sys.exit(main())
