"""``fedfabric audit --task T``: replay the ledger, recompute every round, name contributors."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fedfabric.network.cli import add_network_options

    p = sub.add_parser(
        "audit",
        help="recompute every global model of a task from the ledger",
        description="Replay a task from the ledger: recompute each round's "
        "global model from its committed updates, compare it with "
        "the committed one, and list who contributed.",
    )
    add_network_options(p)
    p.add_argument("--task", required=True, help="the task id (see the run's report)")
    p.add_argument(
        "--model",
        type=Path,
        help="also check this model file (e.g. a report's final_model.bin) against the ledger",
    )
    p.add_argument("--org", default=None, help="audit as this organisation (default: first)")
    p.set_defaults(func=main)


async def _audit(args: argparse.Namespace) -> int:
    from fedfabric.fl_worker.audit import audit_task, verify_model
    from fedfabric.fl_worker.clients import Clients
    from fedfabric.network.cli import open_network

    network = open_network(args)
    org = args.org or network.topology.organizations[0].name
    async with Clients(network) as clients:
        ledger = clients.ledger(org, network.identity(org, "User1"))
        report = await audit_task(ledger, args.task)
        print(f"task {args.task}: initial model {report.initial_model_digest[:16]}…")
        for r in report.rounds:
            mark = "ok  " if r.match else "FAIL"
            contributors = ", ".join(f"{msp} {len(ws)}" for msp, ws in r.contributors.items())
            print(
                f"  round {r.round:3d} {mark} committed {(r.committed_digest or '-')[:16]}… "
                f"recomputed {(r.recomputed_digest or '-')[:16]}…  updates by {contributors}; "
                f"used {len(r.used)}, excluded {len(r.excluded)}"
            )
            for worker, reason in r.excluded:
                print(f"        excluded {worker}: {reason}")
        for problem in report.problems:
            print(f"  problem: {problem}")
        ok = report.ok
        if args.model:
            check = await verify_model(ledger, args.task, args.model)
            print(
                f"  model file {args.model}: "
                + ("matches" if check.matches else "DOES NOT MATCH")
                + f" the ledger's round {check.round} model ({check.reason})"
            )
            ok = ok and check.matches
    print("audit passed" if ok else "audit FAILED")
    return 0 if ok else 1


def main(args: argparse.Namespace) -> int:
    from fedfabric.gateway import GatewayError
    from fedfabric.network import NetworkError

    try:
        return asyncio.run(_audit(args))
    except (GatewayError, NetworkError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
