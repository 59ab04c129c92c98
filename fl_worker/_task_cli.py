"""``fedfabric task``: an FL task's organisations, as one organisation's admin sees them.

- ``fedfabric task admit --task T --org ORG MSP_ID``: ORG's admin (ORG drives task T)
  admits organisation MSP_ID, one the consortium added to the channel while T runs
  (``AdmitOrganisation``). Its workers may submit from the round after the open one; its
  admin registers them (``fedfabric run --org NAME --join --task T`` on its own host does).
- ``fedfabric task orgs --task T [--org ORG]``: the founding and the admitted organisations.
"""

from __future__ import annotations

import argparse
import asyncio
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fedfabric.network.cli import add_network_options

    p = sub.add_parser("task", help="admit an organisation to a running task, list its orgs")
    commands = p.add_subparsers(dest="task_command", required=True)
    admit = commands.add_parser(
        "admit",
        help="admit an organisation that joined the channel to a running task",
        description="As the admin of ORG, an organisation that drives the task, admit "
        "MSP_ID (an organisation added to the channel while the task runs). Its workers "
        "may submit from the round after the open one.",
    )
    orgs = commands.add_parser("orgs", help="a task's founding and admitted organisations")
    for q in (admit, orgs):
        add_network_options(q)
        q.add_argument("--task", required=True, help="the task id")
    admit.add_argument("--org", required=True, help="your organisation (one that drives it)")
    admit.add_argument("msp_id", help="the organisation to admit, by MSP id (e.g. WaterMSP)")
    orgs.add_argument("--org", default=None, help="read as this organisation (default: first)")
    p.set_defaults(func=main)


async def _task(args: argparse.Namespace) -> int:
    from fedfabric.fl_worker.clients import Clients
    from fedfabric.network.cli import open_network

    network = open_network(args)
    org = network.topology.org(args.org or network.topology.organizations[0].name).name
    async with Clients(network) as clients:
        if args.task_command == "admit":
            admin = await clients.admin_ledger(org)
            if await admin.task(args.task) is None:
                print(f"error: no task {args.task!r} on the ledger", file=sys.stderr)
                return 1
            record = await admin.admit_organisation(args.task, args.msp_id)
            print(
                f"task {args.task}: {args.msp_id} admitted by {admin.msp_id}; its workers "
                f"submit from round {record['from_round']} on"
            )
            return 0
        ledger = clients.ledger(org, network.identity(org, "User1"))
        found = await ledger.organisations(args.task)
        print(f"task {args.task}: founding {', '.join(found['founding'])}")
        for record in found["admitted"]:
            print(f"  admitted {record['msp_id']} from round {record['from_round']}")
    return 0


def main(args: argparse.Namespace) -> int:
    from fedfabric.fl_worker.ledger import refusal
    from fedfabric.gateway import EndorseError, EvaluateError, GatewayError
    from fedfabric.network import NetworkError

    try:
        return asyncio.run(_task(args))
    except (EndorseError, EvaluateError) as exc:
        found = refusal(exc)
        print(f"error: refused ({found.check}): {found.message}", file=sys.stderr)
        return 1
    except (GatewayError, NetworkError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
