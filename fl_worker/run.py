"""``fedfabric run``: the main job. A consortium trains one model on the ledger, then a report.

With no flags: bring up the default consortium on real Fabric (installing the pinned
binaries first if they are missing), deploy the FL contract with each organisation's private
validator, and train an MLP on scikit-learn's digits with 3 organisations × 3 workers
(Dirichlet(0.5) label skew) for 10 rounds, FedAvg, while 2 of the 9 workers add Gaussian noise
to their updates. Every update is a transaction endorsed by a majority of the organisations,
each of which first scores it on its own validation split; the global model is aggregated by
the contract from committed updates only. At the end a report folder holds a table per round,
ledger figures, refusals and contributions per organisation, an accuracy plot and, next to the
ledger run, the same run in memory with plain FedAvg and no validation.

Each organisation's validation split is written to a file in that organisation's private
directory (`Backend.private_dir`), which only its chaincode servers are given (settings
``validator`` and ``validation_data``); it is never sent to the ledger.

``--resume`` continues an interrupted run from the ledger (not from local files).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfabric.chaincode import fl
from fedfabric.fl_worker.config import ConfigError, RunConfig
from fedfabric.network import Backend

Say = Callable[[str], None]
ASYNC_SETTINGS = ("mode", "buffer_size", "max_staleness", "staleness_exponent", "async_order")


class RunError(Exception):
    """The run cannot start or continue; the message says why and what to do."""


@dataclass(frozen=True)
class RunOptions:
    """How and where to run (the config says what to train)."""

    task: str | None = None
    resume: bool = False
    devices_per_org: int | None = None
    baseline: bool = True
    bring_up: bool = True
    report_dir: Path | None = None
    org: str | None = None  # run only this organisation's part, on its own host
    join: bool = False  # with `org`: take part in a task another organisation coordinates
    serve: int | None = None  # serve the organisation's service on this port during the job
    served: Callable[[Any], Awaitable[None]] | None = None  # with `serve`: then, until it returns


def task_id(config: RunConfig) -> str:
    """The default task id: dataset and a digest of every setting (so --resume finds it)."""
    settings = config.to_dict()
    if config.mode == "sync":  # ids of sync runs stay what they were before async mode
        for key in ASYNC_SETTINGS:
            settings.pop(key)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    return f"{Path(str(config.dataset)).stem}-{digest.hexdigest()[:10]}"


async def run_job(
    config: RunConfig,
    options: RunOptions,
    network: Backend,
    *,
    say: Say,
    on_round: Callable[[Any], None] | None = None,
) -> Any:
    """Run (or resume) the job on ``network`` (any network `Backend`); return the `Report`.

    Raises `RunError` for anything a user must fix, before any transaction when possible.
    """
    from fedfabric.fl_worker.federation import prepare

    if config.orgs > len(network.topology.organizations):
        raise RunError(
            f"config field 'orgs': {config.orgs} organisations, but the topology has "
            f"{len(network.topology.organizations)}"
        )
    own = _own_org(config, options, network)
    say(f"preparing data and model ({config.dataset}, {config.num_workers} workers)")
    fed = await asyncio.to_thread(prepare, _with_late_org(config, own, network))
    await _network_ready(network, options, say, fed)
    if options.serve is None:
        return await _job(config, options, network, fed, own, say, on_round)
    from fedfabric.fl_worker.service._network import operator_token, org_service

    org = own or network.topology.organizations[0].name
    async with org_service(network, org, port=options.serve) as service:
        token = operator_token(network, org, role="reader")
        say(f"{service.msp_id}'s service: https://127.0.0.1:{service.port}/#token={token}")
        report = await _job(config, options, network, fed, own, say, on_round)
        if options.served is not None:
            await options.served(report)
    return report


async def _job(
    config: RunConfig,
    options: RunOptions,
    network: Backend,
    fed: Any,
    own: str | None,
    say: Say,
    on_round: Callable[[Any], None] | None,
) -> Any:
    """The job once the network is ready (`run_job`)."""
    from fedfabric.fl_worker.async_rounds import coordinator_for
    from fedfabric.fl_worker.clients import Clients
    from fedfabric.fl_worker.coordinator import CoordinatorError
    from fedfabric.fl_worker.inmemory import run_in_memory
    from fedfabric.fl_worker.report import Report, write_report
    from fedfabric.fl_worker.worker import WorkerResources
    from fedfabric.network import NetworkError

    started = time.perf_counter()
    async with Clients(network) as clients:
        orgs = clients.org_names(config.orgs)
        admin = await clients.admin_ledger(own or orgs[0])
        if options.join:
            task = options.task or task_id(config)
        else:
            task = options.task or await _default_task(admin, task_id(config), options.resume)
        if config.validation_threshold is not None:
            say("each organisation's validation split → its private directory, for its servers")
            await asyncio.to_thread(write_validation_splits, network, fed, task, own)
        if options.join:
            return await _take_part(clients, fed, admin, task, say, own)
        # Devices wait in their org's batch: each may hold a submission slot meanwhile.
        slots = config.orgs * options.devices_per_org if options.devices_per_org else 64
        resources = WorkerResources(train_concurrency=2, submit_concurrency=max(64, slots))
        coordinator = coordinator_for(
            fed,
            admin,
            task=task,
            allowed_orgs=clients.msp_ids(config.orgs),
            resources=resources,
            registrars=[await clients.admin_ledger(org) for org in ([own] if own else orgs)],
            max_workers_per_org=options.devices_per_org or None,
            expect_registered=own is not None,
            # Across hosts, one organisation's silent workers must not stop everyone's task:
            # a round then closes after the event timeout with the updates that arrived.
            wait_for_all=own is None,
        )
        exists = await admin.task(task) is not None
        if exists and not options.resume:
            raise RunError(
                f"task {task!r} already exists on the ledger; continue it with "
                "--resume, or start another with --task NAME"
            )
        if options.resume and not exists:
            raise RunError(f"nothing to resume: task {task!r} is not on the ledger")
        info = await coordinator.create_or_load_task()
        point = await coordinator.resume_point()
        if info.created:
            say(f"task {task}: created")
        elif point.done:
            say(f"task {task}: all {point.aggregated} rounds are on the ledger; reporting")
        elif config.mode == "async":
            say(
                f"task {task}: resuming at version {point.aggregated} "
                f"({len(point.updates)} updates pending)"
            )
        else:
            say(f"task {task}: resuming at round {point.round} ({point.phase})")
        h0 = await admin.height()
        if options.devices_per_org:
            workers = await clients.device_workers(
                fed, options.devices_per_org, resources=resources, say=say
            )
        elif own:
            workers = await clients.org_workers(fed, own, resources=resources)
            await coordinator.register(workers)
            await _registered(admin, task, clients.msp_ids(config.orgs), say)
        else:
            workers = await clients.federation_workers(fed, resources=resources)
        outcomes = {}

        def remember(outcome: Any) -> None:
            outcomes[outcome.round] = outcome
            if on_round:
                on_round(outcome)

        try:
            await coordinator.run(workers, on_round=remember, start=point)
        except NetworkError as exc:
            raise RunError(str(exc)) from exc
        except CoordinatorError as exc:
            hint = ""
            if "min-updates" in str(exc):
                hint = (
                    f" (the strategy {config.strategy} needs {fed.strategy.min_updates} "
                    "updates a round; refused updates do not count: choose smaller "
                    "strategy parameters or fewer attackers)"
                )
            raise RunError(
                f"{exc}{hint}; the round stays open on the ledger: fix the cause "
                "and run again with --resume"
            ) from exc
        wall = time.perf_counter() - started
        rounds = await _rows(coordinator, admin, task, outcomes)
        figures = await _ledger_figures(admin, h0, rounds, fed)
        contributions = (await admin.contributions(task))["orgs"]
        final = await admin.global_model(task, config.rounds)
        baseline = options.baseline and not options.devices_per_org and not own
        if baseline:  # signed as the same identities (every organisation's: one host's run)
            same_admin, same_workers = await clients.creators(config)
    base = base_seconds = None
    if baseline:
        say("the same run in memory with plain FedAvg and no validation (same seed and attackers)")
        t = time.perf_counter()
        base = await run_in_memory(baseline_config(config), admin=same_admin, workers=same_workers)
        base_seconds = time.perf_counter() - t
        rounds = [
            _with_baseline(r, base.rounds[r.round - 1], base_seconds / config.rounds)
            for r in rounds
        ]
    initial_loss, initial_accuracy = await coordinator.evaluate(coordinator.initial_model())
    report = Report(
        task=task,
        config=config.to_dict(),
        initial_accuracy=initial_accuracy,
        rounds=rounds,
        ledger=figures,
        contributions=contributions,
        final_model=final,
        final_model_digest=fl.read_header(final)["content_digest"],
        baseline_final_accuracy=base.final_accuracy if base else None,
        wall_seconds=wall,
        baseline_seconds=base_seconds,
        malicious=tuple(fed.worker_name(i) for i in sorted(fed.malicious))
        if not options.devices_per_org
        else (),
    )
    folder = options.report_dir or Path("fedfabric-report") / task
    path = write_report(report, folder)
    say(f"report: {path}")
    return report


async def _default_task(admin: Any, base: str, resume: bool) -> str:
    """The task a run of these settings uses when no --task is given: the next free one
    (``base``, ``base-2``, ...) for a new run; for --resume the latest one this organisation
    drives (a task id another organisation took is skipped, never adopted)."""
    latest, n = None, 1
    while True:
        candidate = base if n == 1 else f"{base}-{n}"
        record = await admin.task(candidate)
        if record is None:
            return (latest or candidate) if resume else candidate
        if admin.msp_id in fl.task_drivers(record):
            latest = candidate
        n += 1


def baseline_config(config: RunConfig) -> RunConfig:
    """The run the ledger run is compared with: the same data, workers and attackers, in
    memory, aggregated by plain FedAvg (each update weighted by its samples, as Flower does)
    without org-private validation."""
    return config.replace(
        strategy="fedavg",
        strategy_params={},
        weighting="samples",
        min_updates=None,
        validation_threshold=None,
    )


VALIDATION_FOLDER = "fl-validation"


def validation_settings(
    network: Backend, orgs: int, only: str | None = None
) -> dict[str, dict[str, str]]:
    """The ``fl`` chaincode server settings (MSP id → settings) of the first `orgs`
    organisations (of organisation `only`, when given): `fl.numpy_loss` on the ``<task>.npz``
    files of a folder in the org's private directory (the same for every task, so a new task
    restarts no server)."""
    from fedfabric.fl_worker.federation import VALIDATOR

    settings = {}
    for org in network.topology.organizations[:orgs]:
        if only is not None and only not in (org.name, org.msp_id):
            continue
        folder = network.private_dir(org.name) / VALIDATION_FOLDER
        folder.mkdir(mode=0o700, exist_ok=True)
        settings[org.msp_id] = {"validator": VALIDATOR, "validation_data": str(folder)}
    return settings


def write_validation_splits(network: Backend, fed: Any, task: str, only: str | None = None) -> None:
    """Write each organisation's validation split for `task` (only organisation `only`'s,
    when given) where only its servers read it."""
    from fedfabric.fl_worker.federation import write_validation_split

    for k, org in enumerate(network.topology.organizations[: fed.config.orgs]):
        if only is None or org.name == only:
            folder = network.private_dir(org.name) / VALIDATION_FOLDER
            write_validation_split(fed, k, folder / f"{task}.npz")


def _own_org(config: RunConfig, options: RunOptions, network: Backend) -> str | None:
    """The organisation whose part this host runs (`RunOptions.org`), checked; None: all."""
    if options.org is None:
        if options.join:
            raise RunError("--join takes part for one organisation: name it with --org")
        return None
    orgs = network.topology.organizations[: config.orgs]
    if options.join:  # also an organisation that joined the channel while the task runs
        orgs = network.topology.organizations
    found = [o.name for o in orgs if options.org in (o.name, o.msp_id)]
    if not found:
        names = ", ".join(o.name for o in orgs)
        raise RunError(f"--org {options.org}: not one of the run's organisations ({names})")
    if config.mode != "sync" or options.devices_per_org:
        raise RunError("--org runs synchronous rounds of workers (no --mode async, no --devices)")
    return found[0]


def _with_late_org(config: RunConfig, own: str | None, network: Backend) -> RunConfig:
    """The config whose data split holds `own`'s part: `config` itself, or for an
    organisation past the run's first ``orgs`` (one that joined later, `_own_org`) the
    split of a federation that had it from the start, so it trains on a part of its own."""
    names = [o.name for o in network.topology.organizations]
    if own is None or names.index(own) < config.orgs:
        return config
    return config.replace(orgs=names.index(own) + 1)


async def _registered(admin: Any, task: str, msp_ids: list[str], say: Say) -> None:
    """Until every organisation of the task has registered its workers (each runs its own)."""
    from fedfabric.fl_worker.participant import wait_until

    def done(registry: dict[str, Any]) -> bool:
        return all(registry["orgs"].get(m, {}).get("registered") for m in msp_ids)

    registry = await admin.workers(task)
    if not done(registry):
        missing = [m for m in msp_ids if not registry["orgs"].get(m, {}).get("registered")]
        say(f"waiting for {', '.join(missing)} to register their workers "
            f"(fedfabric run --org NAME --join --task {task})")  # fmt: skip
        if await wait_until(lambda: admin.workers(task), done, 0.5, 3600) is None:
            raise RunError(f"{', '.join(missing)} did not register workers for {task} in 1 h")


async def _take_part(
    clients: Any, fed: Any, admin: Any, task: str, say: Say, org: str | None
) -> None:
    """`org`'s workers in `task`, which another organisation coordinates."""
    from fedfabric.fl_worker.participant import ParticipantError, take_part

    assert org is not None  # `_own_org` requires --org with --join
    workers = await clients.org_workers(fed, org)
    say(f"task {task}: {len(workers)} workers of {admin.msp_id} take part")
    try:
        results = await take_part(admin, task, workers, say=say, timeout=3600)
    except ParticipantError as exc:
        raise RunError(str(exc)) from exc
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    say(f"task {task}: done, " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


async def _network_ready(network: Backend, options: RunOptions, say: Say, fed: Any) -> None:
    from fedfabric.network import NetworkError

    await network.install(say)
    running = [n for n in await network.status() if n.running and n.kind != "chaincode"]
    if not options.bring_up or options.org:
        if not running:
            start = f"fedfabric org up --org {options.org}" if options.org else (
                "`fedfabric network up` or drop --no-up"
            )  # fmt: skip
            raise RunError(
                f"network {network.topology.name} is not running (state "
                f"{network.layout.root}); start it with {start}"
            )
    else:
        await network.up(say)
    settings = None
    if fed.config.validation_threshold is not None:
        settings = {"fl": validation_settings(network, fed.config.orgs, options.org)}
    progress = say
    try:
        # On an organisation's own host the definition may wait for the others' approvals
        # (each approves with its own `fedfabric run --org` or `fedfabric org deploy`).
        while await network.deploy(["fl"], progress, settings=settings):
            progress = _quiet
            await asyncio.sleep(3)
    except NetworkError as exc:
        raise RunError(f"deploying the FL contract failed: {exc}") from exc


def _quiet(_: str) -> None:
    pass


async def _rows(coordinator: Any, admin: Any, task: str, outcomes: dict[int, Any]) -> list[Any]:
    """One row per round, from the ledger; what only this process saw (refusals, timings) is
    added for the rounds it ran."""
    from fedfabric.fl_worker.report import RoundRow

    audit = await admin.audit(task)
    rows = []
    for entry in sorted(audit["rounds"], key=lambda e: e["round"]):
        r = entry["round"]
        outcome = outcomes.get(r)
        if outcome is not None and outcome.accuracy is not None:
            loss, accuracy = outcome.loss, outcome.accuracy
        else:
            loss, accuracy = await coordinator.evaluate(await admin.global_model(task, r))
        aggregate = entry.get("aggregate") or {}
        refusals: dict[str, dict[str, int]] = {}
        refused = 0
        submitted = len(entry["updates"])
        if outcome is not None:
            for _, _, refusal in outcome.refused:
                refused += 1
                for org in refusal.orgs or ("?",):
                    checks = refusals.setdefault(org, {})
                    checks[refusal.check] = checks.get(refusal.check, 0) + 1
            submitted = sum(s.submitted for s in outcome.per_org.values()) or submitted
        rows.append(
            RoundRow(
                round=r,
                accuracy=accuracy,
                loss=loss,
                submitted=submitted,
                committed=len(entry["updates"]),
                refused=refused,
                refusals=refusals,
                used=len(aggregate.get("used", ())),
                excluded=len(aggregate.get("excluded", ())),
                update_bytes=sum(int(u.get("size", 0)) for u in entry["updates"]),
                seconds=outcome.timings.get("total", 0.0) if outcome else 0.0,
            )
        )
    return rows


def _with_baseline(row: Any, base: Any, seconds: float) -> Any:
    from dataclasses import replace

    return replace(row, baseline_accuracy=base.accuracy, baseline_seconds=seconds)


async def _ledger_figures(admin: Any, start: int, rows: list[Any], fed: Any) -> Any:
    """Blocks, transactions and bytes the run added to the channel (blocks start..height-1),
    and the updates' bytes on the ledger against the same tensors as raw float32."""
    from fabric_protos.common import common_pb2

    from fedfabric.fl_worker.report import LedgerFigures

    end = await admin.height()
    blocks = txs = valid = size = 0
    if end > start:
        async with admin.network.block_events(start_block=start) as stream:
            async for block in stream:
                blocks += 1
                size += block.ByteSize()
                txs += len(block.data.data)
                codes = block.metadata.metadata[common_pb2.BlockMetadataIndex.TRANSACTIONS_FILTER]
                valid += sum(1 for c in codes if c == 0)
                if block.header.number >= end - 1:
                    break
    params = sum(math.prod(shape) for _, shape in fed.layout.tensors)
    committed = sum(r.committed for r in rows)
    return LedgerFigures(
        blocks,
        txs,
        valid,
        size,
        raw_update_bytes=committed * params * 4,
        ledger_update_bytes=sum(r.update_bytes for r in rows),
    )


# ----------------------------------------------------------------------------- CLI


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig of the CLI: the config file (if any), then the flags on top."""
    config = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    changes: dict[str, Any] = {}
    for flag, key in [
        ("dataset", "dataset"),
        ("rounds", "rounds"),
        ("orgs", "orgs"),
        ("workers_per_org", "workers_per_org"),
        ("epochs", "epochs"),
        ("seed", "seed"),
        ("alpha", "alpha"),
        ("strategy", "strategy"),
        ("weighting", "weighting"),
        ("attack", "attack"),
        ("malicious", "malicious"),
        ("malicious_org", "malicious_org"),
        ("quantization", "quantization"),
        ("compression", "compression"),
        ("mode", "mode"),
        ("buffer_size", "buffer_size"),
        ("max_staleness", "max_staleness"),
        ("staleness_exponent", "staleness_exponent"),
        ("async_order", "async_order"),
    ]:
        value = getattr(args, flag)
        if value is not None:
            changes[key] = value
    if args.strategy_param:
        params = dict(config.strategy_params or {})
        for item in args.strategy_param:
            key, sep, value = item.partition("=")
            if not sep:
                raise ConfigError("strategy_params", f"expected KEY=VALUE, got {item!r}")
            params[key] = _number(value)
        changes["strategy_params"] = params
    return config.replace(**changes) if changes else config


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(args: argparse.Namespace) -> int:
    import sys

    from fedfabric.network import NetworkError
    from fedfabric.network.cli import open_network

    try:
        config = config_from_args(args)
        if args.devices is not None and args.devices < 1:
            raise ConfigError("devices", f"must be >= 1, got {args.devices}")
        network = open_network(args)
    except (ConfigError, NetworkError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()

    async def served(report: Any) -> None:  # the service runs on until Ctrl-C (or SIGTERM)
        if report is not None:
            progress.summary(report)
        progress.say("the job is done; the service runs on until interrupted (Ctrl-C)")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    options = RunOptions(
        serve=args.serve,
        served=served if args.serve is not None else None,
        task=args.task,
        resume=args.resume,
        devices_per_org=args.devices,
        baseline=not args.no_baseline,
        bring_up=not args.no_up,
        report_dir=args.report,
        org=args.org,
        join=args.join,
    )
    from fedfabric.fl_worker._progress import Progress

    with Progress(config) as progress:
        try:
            report = asyncio.run(
                run_job(config, options, network, say=progress.say, on_round=progress.round)
            )
        except (RunError, ConfigError, NetworkError) as exc:
            progress.say(f"error: {exc}")
            return 1
        if report is not None and options.serve is None:  # None: --join, whose lines said it
            progress.summary(report)
    return 0
