"""``fedfabric serve`` and ``fedfabric token``: an organisation's HTTPS service, and the
tokens its admin issues for it.

- ``fedfabric serve --org ORG [--host H] [--port P] [--validation FILE]``: ORG's service
  (REST API, live events, dashboard) until interrupted; prints the dashboard's address with
  a reader token for this host's operator.
- ``fedfabric token issue --org ORG --name NAME [--role reader|admin] [--hours H]``: a token
  ORG's admin signs with its own key (on ORG's host); ``fedfabric token revoke --org ORG
  TOKEN_OR_ID``: ORG's service refuses it from then on.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

DEFAULT_PORT = 8480  # of `fedfabric serve` and `fedfabric run --serve`


def add_serve_parser(sub: argparse._SubParsersAction) -> None:
    from fedfabric.network.cli import add_network_options

    p = sub.add_parser(
        "serve",
        help="an organisation's HTTPS service: REST API, live events, dashboard",
        description="Serve ORG's view of the FL tasks over HTTPS: a REST API (OpenAPI at "
        "/api/v1/openapi.json), live events (WebSocket /api/v1/events) and a dashboard (/). "
        "Callers present a client certificate of a consortium organisation or a token "
        "(`fedfabric token issue`).",
    )
    add_network_options(p)
    p.add_argument("--org", required=True, help="this organisation: its name or MSP id")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument(
        "--validation",
        type=Path,
        help="validation data for each round's metrics (.npz, or a folder of <task>.npz; "
        "default: what ORG's fl chaincode server was deployed with)",
    )
    p.set_defaults(func=serve_main)


def add_token_parser(sub: argparse._SubParsersAction) -> None:
    from fedfabric.network.cli import add_network_options

    p = sub.add_parser("token", help="issue or revoke a token for an organisation's service")
    commands = p.add_subparsers(dest="token_command", required=True)
    issue = commands.add_parser("issue", help="a token ORG's admin signs (prints it)")
    revoke = commands.add_parser("revoke", help="make ORG's service refuse a token")
    for q in (issue, revoke):
        add_network_options(q)
        q.add_argument("--org", required=True, help="this organisation: its name or MSP id")
    issue.add_argument("--name", required=True, help="who the token is for")
    issue.add_argument(
        "--role",
        choices=("reader", "admin"),
        default="reader",
        help="reader: the read routes; admin: the write routes too (default reader)",
    )
    issue.add_argument("--hours", type=float, default=24.0, help="valid for (default 24)")
    revoke.add_argument("token", help="the token, or its id (jti)")
    p.set_defaults(func=token_main)


def _needs_serve_extra(exc: ModuleNotFoundError) -> int:
    if exc.name != "aiohttp":
        raise exc
    print("error: the service needs the serve extra (aiohttp); install it with "
          "pip install 'fedfabric[serve]'", file=sys.stderr)  # fmt: skip
    return 2


async def _serve(args: argparse.Namespace) -> int:
    from fedfabric.fl_worker.service._network import operator_token, org_service
    from fedfabric.network.cli import open_network

    network = open_network(args)
    org = network.topology.org(args.org).name
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    async with org_service(
        network, org, host=args.host, port=args.port, validation=args.validation
    ) as service:
        token = operator_token(network, org, role="reader")
        print(f"{service.msp_id}'s service: https://{args.host}:{service.port}/#token={token}")
        print(f"API: https://{args.host}:{service.port}/api/v1/openapi.json", flush=True)
        await stop.wait()
    return 0


def serve_main(args: argparse.Namespace) -> int:
    from fedfabric.gateway import GatewayError
    from fedfabric.network import NetworkError

    try:
        return asyncio.run(_serve(args))
    except ModuleNotFoundError as exc:
        return _needs_serve_extra(exc)
    except (GatewayError, NetworkError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def token_main(args: argparse.Namespace) -> int:
    from fedfabric.network import NetworkError
    from fedfabric.network.cli import open_network

    try:
        from fedfabric.fl_worker.service import revoke
        from fedfabric.fl_worker.service._network import operator_token, service_dir
    except ModuleNotFoundError as exc:
        return _needs_serve_extra(exc)
    try:
        network = open_network(args)
        org = network.topology.org(args.org).name
        if args.token_command == "issue":
            print(operator_token(network, org, role=args.role, name=args.name,
                                 ttl_seconds=args.hours * 3600))  # fmt: skip
        else:
            jti = revoke(service_dir(network, org) / "revoked", args.token)
            print(f"token {jti} revoked for {network.topology.org(org).msp_id}'s service")
    except (NetworkError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
