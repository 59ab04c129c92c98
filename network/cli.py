"""The ``fedfabric`` command: ``fedfabric network ...`` here, and the commands other packages add.

Packages add subcommands through the ``fedfabric.commands`` entry points (``fl_worker`` adds
``run`` and ``audit``, ``network/_org_cli.py`` adds ``org``), each a function
``add_parser(subparsers)``, so this module never imports them. A command whose package
cannot be imported (the ``worker`` extra is not installed, say) is still listed and says what
to install. Environment variables are read here, at the entry point, and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from fedfabric.network._binaries import PINNED_FABRIC, fabric_release
from fedfabric.network._compose import compose_yaml
from fedfabric.network._errors import NetworkError
from fedfabric.network._layout import default_state_root
from fedfabric.network._topology import DEFAULT_TOPOLOGY, Topology, load_topology
from fedfabric.network.fabric import FabricNetwork
from fedfabric.network.fabric._network import BACKENDS

ACTIONS = ("up", "down", "status", "logs", "deploy", "clean", "compose")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "network",
        help="bring the consortium's Fabric network up, down, ...",
        description="Manage the consortium network described by a topology file.",
    )
    add_network_options(p)
    p.add_argument("action", choices=ACTIONS)
    p.add_argument("names", nargs="*", help="logs: the node; deploy: chaincodes (default all)")
    p.add_argument("--lines", type=int, default=40, help="logs: how many lines (default 40)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("docker-compose.yaml"),
        help="compose: where to write the compose file (default ./docker-compose.yaml)",
    )
    p.set_defaults(func=_network)


def add_network_options(p: argparse.ArgumentParser) -> None:
    """The options that name a network: topology, state directory and Fabric release."""
    add_state_options(p)
    p.add_argument(
        "--fabric-home",
        type=Path,
        default=os.environ.get("FEDFABRIC_FABRIC_HOME"),
        help="a Fabric release folder with bin/ and config/, used as it is (default: "
        f"the {PINNED_FABRIC} that scripts/install-fabric builds; env "
        "FEDFABRIC_FABRIC_HOME)",
    )
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=os.environ.get("FEDFABRIC_BACKEND") or "native",
        help="run the nodes as native processes (default) or as podman containers of the "
        "images `fedfabric images build` makes, built on first use (env FEDFABRIC_BACKEND)",
    )


def add_state_options(p: argparse.ArgumentParser) -> None:
    """The options that name a topology and its state directory."""
    p.add_argument(
        "--topology",
        type=Path,
        default=os.environ.get("FEDFABRIC_TOPOLOGY") or DEFAULT_TOPOLOGY,
        help="topology file (default: network/topology.yaml; env FEDFABRIC_TOPOLOGY)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=os.environ.get("FEDFABRIC_STATE_DIR"),
        help="generated state (default: ~/.local/share/fedfabric/<name>; env FEDFABRIC_STATE_DIR)",
    )


def state_dir(args: argparse.Namespace, topology: Topology) -> Path:
    """The state directory the CLI options name (default: one per topology name)."""
    return Path(args.state_dir or default_state_root() / topology.name)


def open_network(args: argparse.Namespace, topology: Topology | None = None) -> FabricNetwork:
    """The network the CLI options name (only organisation ``--org``'s nodes, if given)."""
    topology = topology or load_topology(args.topology)
    org = getattr(args, "org", None)
    return FabricNetwork(
        topology,
        state_dir(args, topology),
        fabric_release(args.fabric_home),
        orgs=[org] if org else None,
        backend=getattr(args, "backend", "native"),
    )


def _network(args: argparse.Namespace) -> int:
    try:
        net = open_network(args)
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return asyncio.run(_run(net, args))


def say(message: str, _start: list[float] = []) -> None:  # noqa: B006 (start time holder)
    """Print a progress line with the seconds since the first one."""
    if not _start:
        _start.append(time.monotonic())
    print(f"[{time.monotonic() - _start[0]:6.1f}s] {message}", flush=True)


async def _run(net: FabricNetwork, args: argparse.Namespace) -> int:
    try:
        if args.action == "up":
            await net.up(say)
        elif args.action == "down":
            await net.down()
            print(f"network {net.topology.name} stopped (ledgers kept in {net.layout.root})")
        elif args.action == "clean":
            await net.clean()
            print(f"network {net.topology.name} stopped and {net.layout.root} deleted")
        elif args.action == "deploy":
            await net.deploy(args.names or None, say)
        elif args.action == "compose":
            args.output.write_text(compose_yaml(net.topology))
            print(f"wrote {args.output} for network {net.topology.name}")
        elif args.action == "logs":
            if len(args.names) != 1:
                print("usage: fedfabric network logs NODE", file=sys.stderr)
                return 2
            lines = net.log_file(args.names[0]).read_text(errors="replace").splitlines()
            print("\n".join(lines[-args.lines :]))
        else:
            print(f"{'node':44} {'kind':9} {'state':8} height")
            for n in await net.status():
                state = "running" if n.running else "stopped"
                height = "" if n.height is None else str(n.height)
                print(f"{n.name:44} {n.kind:9} {state:8} {height} {n.detail}".rstrip())
    except NetworkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


COMMANDS = "fedfabric.commands"
WORKER_EXTRA = {"torch", "sklearn", "matplotlib", "rich"}  # what `fedfabric[worker]` adds


def parser() -> argparse.ArgumentParser:
    """The ``fedfabric`` argument parser: ``network`` and every registered command."""
    p = argparse.ArgumentParser(
        prog="fedfabric", description="Federated learning on a Hyperledger Fabric ledger."
    )
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    for command in sorted(entry_points(group=COMMANDS), key=lambda e: e.name):
        try:
            add = command.load()
        except ModuleNotFoundError as exc:
            if (exc.name or "").partition(".")[0] not in WORKER_EXTRA:
                raise  # a real bug, not a missing extra
            _unavailable(sub, command.name, exc)
            continue
        add(sub)
    return p


def needs_worker_extra(name: str, exc: ModuleNotFoundError) -> int:
    """Say that command `name` needs the worker extra (`exc`: the module it lacks) and return
    the exit status 2; re-raise `exc` when the missing module is not the extra's (a bug)."""
    if (exc.name or "").partition(".")[0] not in WORKER_EXTRA:
        raise exc
    print(
        f"error: `fedfabric {name}` needs the worker extra ({exc}); install it with "
        "pip install 'fedfabric[worker]'",
        file=sys.stderr,
    )
    return 2


def _unavailable(sub: argparse._SubParsersAction, name: str, exc: ModuleNotFoundError) -> None:
    def refuse(args: argparse.Namespace) -> int:
        return needs_worker_extra(name, exc)

    p = sub.add_parser(name, help=f"(unavailable: {exc})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=refuse)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fedfabric`` command with `argv` (default: the process arguments)."""
    args = parser().parse_args(argv)
    return int(args.func(args))


def run_main() -> None:
    """The console script."""
    sys.exit(main())
