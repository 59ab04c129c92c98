"""``fedfabric run``'s arguments (`add_parser`, a ``fedfabric.commands`` entry point).

Kept apart from `fedfabric.fl_worker.run`, which imports torch: building the ``fedfabric``
parser for any command (``fedfabric org``, ``network``, ...) must not load the ML stack.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    from fedfabric.fl_worker._serve_cli import DEFAULT_PORT
    from fedfabric.network.cli import add_network_options

    p = sub.add_parser(
        "run",
        help="run federated learning on the ledger and write a report",
        description="Run federated learning on the consortium's Fabric network: create (or "
        "resume) a task, train every organisation's workers round by round on the ledger, and "
        "write a report.",
    )
    add_network_options(p)
    p.add_argument("--config", type=Path, help="YAML file with any RunConfig settings")
    p.add_argument("--dataset", help="digits | breast_cancer | path to .npz / .csv")
    p.add_argument("--rounds", type=int)
    p.add_argument("--orgs", type=int)
    p.add_argument("--workers-per-org", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--alpha", type=float, help="Dirichlet(alpha) non-IID split (default 0.5)")
    p.add_argument(
        "--strategy",
        help="centered-clip (default) | fedavg | fedprox | median | trimmed-mean | krum | "
        "multi-krum",
    )
    p.add_argument(
        "--strategy-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a parameter of the strategy, e.g. f=2 (repeatable)",
    )
    p.add_argument(
        "--weighting",
        choices=["org", "samples", "equal"],
        help="rows of the rule: one per organisation (default) or one per update",
    )
    p.add_argument(
        "--attack",
        help="gaussian (default) | none | sign_flip | scaling | label_flip | alie | ipm | "
        "adaptive | nan",
    )
    p.add_argument(
        "--malicious", type=float, help="fraction of attacking workers (0..1; default 2/9)"
    )
    p.add_argument(
        "--malicious-org", type=int, metavar="K", help="every worker of the K-th org attacks"
    )
    p.add_argument(
        "--mode",
        choices=["sync", "async"],
        help="sync: rounds (default); async: buffered asynchronous aggregation (FedBuff), "
        "--rounds model versions",
    )
    p.add_argument(
        "--buffer-size",
        type=int,
        metavar="K",
        help="async: updates per version (default: half the workers, at least one more than "
        "an organisation has)",
    )
    p.add_argument(
        "--max-staleness", type=int, metavar="S", help="async: versions an update may lag (3)"
    )
    p.add_argument(
        "--staleness-exponent",
        type=float,
        help="async: weight (1 + staleness) ** -exponent (0.5; 0: every update weighs 1)",
    )
    p.add_argument(
        "--async-order",
        choices=["free", "fixed"],
        help="async: free (default, concurrent workers) or fixed (round-robin, reproducible)",
    )
    p.add_argument("--quantization", choices=["float32", "fp16", "int8"])
    p.add_argument("--compression", choices=["none", "zlib"])
    p.add_argument(
        "--devices",
        type=int,
        metavar="N",
        help="device mode: N simulated devices per org, each its own identity; each org's "
        "gateway submits its devices' signed updates in batches",
    )
    p.add_argument("--task", help="task id on the ledger (default: from the settings)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same settings from the ledger",
    )
    p.add_argument(
        "--no-baseline", action="store_true", help="skip the comparison run without the ledger"
    )
    p.add_argument(
        "--no-up", action="store_true", help="use the running network; fail if it is not running"
    )
    p.add_argument("--report", type=Path, help="report folder (default fedfabric-report/TASK)")
    p.add_argument(
        "--org",
        metavar="NAME",
        help="run only this organisation's part, on its own host with its own keys (its nodes "
        "up: fedfabric org up): its workers, and it coordinates the task; the other "
        "organisations take part with --join. Every party gives the same settings",
    )
    p.add_argument(
        "--join",
        action="store_true",
        help="with --org: take part in the task another organisation coordinates (the one "
        "of these settings, or --task): register this organisation's workers and follow "
        "its rounds",
    )
    p.add_argument(
        "--serve",
        nargs="?",
        type=int,
        const=DEFAULT_PORT,
        metavar="PORT",
        help="also run the organisation's service (REST API, live events, dashboard; see "
        f"`fedfabric serve`) on PORT (default {DEFAULT_PORT}) and print its address; it "
        "runs on after the job until Ctrl-C",
    )
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from fedfabric.network.cli import needs_worker_extra

    try:
        from fedfabric.fl_worker.run import main
    except ModuleNotFoundError as exc:
        return needs_worker_extra("run", exc)
    return main(args)
