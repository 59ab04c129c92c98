"""The coordinator: an org admin that drives the rounds of one task on the ledger.

A round, as `Coordinator.run_round` runs it (``CreateTask`` opened round 1, each
``AdvanceRound`` opens the next)::

    GetRoundUpdates (the round's state, the updates already recorded, its aggregate; not
                     needed when this coordinator's own AdvanceRound opened the round)
      → every worker trains and submits, concurrently
      → wait for the chaincode event of every accepted update (or a deadline): its
        UpdateSubmitted, or the BatchSubmitted of its device batch
      → wait until every organisation's peer has the last of those blocks
      → AdvanceRound (aggregate, store the new global model, open the next round: one block;
                      it returns once every organisation's peer has that block)
      → read the new global model once, for the evaluation and for the next round's workers
      → `RoundOutcome`

Nothing waits on a clock: each step starts when the commit or event it needs arrives.

Everything is derived from the ledger, never from local files: `resume_point` reads
``GetAudit`` once to find the first round without a committed aggregate, and `run_round`
continues a round in whatever phase it finds it (workers whose update is already recorded
are skipped). Because a round is closed only once *every* worker's update
is on the ledger (not just ``min_updates``) and each worker trains deterministically from
(seed, round, worker) and the previous global model, a run interrupted at any point and
resumed commits the same global models, byte for byte, as an uninterrupted run.

Errors::

    CoordinatorError
     ├── TaskMismatchError       the ledger's task is not the one this run would create
     └── RoundIncompleteError    a round cannot be closed: workers failed, events or updates
                                 are missing, or fewer updates than the task's minimum

Example::

    coordinator = Coordinator(fed, admin_ledger, task="digits", allowed_orgs=msp_ids)
    await coordinator.create_or_load_task()
    for outcome in await coordinator.run(workers):
        print(outcome.round, outcome.accuracy, outcome.model_digest[:12])
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedfabric.chaincode import fl
from fedfabric.fl_worker import ml
from fedfabric.fl_worker.federation import Federation
from fedfabric.fl_worker.ledger import Ledger, Refusal, is_transient, refusal
from fedfabric.fl_worker.worker import (
    FAILED,
    REFUSED,
    SKIPPED,
    Retry,
    Worker,
    WorkerResources,
    WorkerResult,
    decline_refused,
)
from fedfabric.gateway import CommitError, EndorseError, GatewayError


class CoordinatorError(Exception):
    """A round or task cannot proceed as this coordinator needs."""


class TaskMismatchError(CoordinatorError):
    """The task on the ledger differs from the one this run's settings describe (`field`)."""

    def __init__(self, task: str, field: str, detail: str) -> None:
        super().__init__(f"task {task!r} on the ledger differs from this run: {field}: {detail}")
        self.task = task
        self.field = field


class RoundIncompleteError(CoordinatorError):
    """Round `round` stays open: `missing` worker names have no update on the ledger.

    `results` holds what each worker reported. Running the round again (or resuming the
    run) continues it; nothing is lost.
    """

    def __init__(
        self,
        task: str,
        round_no: int,
        reason: str,
        *,
        missing: Sequence[str] = (),
        results: Sequence[WorkerResult] = (),
    ) -> None:
        super().__init__(f"round {round_no} of task {task!r} cannot close: {reason}")
        self.task = task
        self.round = round_no
        self.missing = tuple(missing)
        self.results = tuple(results)


@dataclass(frozen=True)
class TaskInfo:
    """The task on the ledger: whether this call created it, its spec and initial model."""

    task: str
    created: bool
    spec: fl.TaskSpec
    initial_model_digest: str


@dataclass(frozen=True)
class ResumePoint:
    """Where a task stands on the ledger.

    `round` is the first round without a committed aggregate (``rounds + 1`` when `done`),
    `phase` its state (``open``; ``aggregated`` when done),
    `updates` the worker ids already recorded in it and `aggregated` the rounds finished.
    """

    round: int
    phase: str
    updates: tuple[str, ...]
    aggregated: int
    done: bool


@dataclass(frozen=True)
class OrgSummary:
    """One organisation in one round: updates submitted (attempted), accepted on the ledger,
    refused (with reasons), and used / excluded / clipped by the aggregation rule."""

    submitted: int = 0
    accepted: int = 0
    refused: int = 0
    used: int = 0
    excluded: int = 0
    clipped: int = 0


@dataclass(frozen=True)
class RoundOutcome:
    """Everything a report needs about one round.

    `workers` are the results of the workers run by this call (empty when the round was
    already closed or aggregated on entry, see `phase_on_entry`); `updates` are the round's
    update records on the ledger and `aggregate` the contract's aggregate record (rule,
    used, excluded with reasons, clipped, digests). Worker ids map to names via `names`.
    `timings` holds seconds per phase: ``read`` (the round's state and updates),
    ``train_submit`` (the workers train and submit),
    ``events`` (the rest of their commit events), ``sync`` (until every organisation's peer
    has the round's updates), ``aggregate`` (``AdvanceRound``; ``aggregate_endorse``,
    ``aggregate_order`` and ``aggregate_sync`` split it on Fabric), ``model`` (the new
    global model read), ``evaluate`` and ``total``.
    """

    task: str
    round: int
    phase_on_entry: str
    workers: tuple[WorkerResult, ...]
    updates: tuple[Mapping[str, Any], ...]
    aggregate: Mapping[str, Any]
    model: bytes
    model_digest: str
    accuracy: float | None
    loss: float | None
    timings: Mapping[str, float]
    events: int
    names: Mapping[str, str] = field(default_factory=dict)

    def name(self, worker_id: str) -> str:
        """The worker's name, or its ledger id when this process did not run it."""
        return self.names.get(worker_id, worker_id)

    @property
    def used(self) -> tuple[str, ...]:
        """Names of the workers whose updates the rule used."""
        return tuple(self.name(w) for w in self.aggregate.get("used", ()))

    @property
    def excluded(self) -> tuple[tuple[str, str], ...]:
        """(name, reason) of every update the rule excluded."""
        return tuple((self.name(e["id"]), e["reason"]) for e in self.aggregate.get("excluded", ()))

    @property
    def clipped(self) -> tuple[str, ...]:
        """Names of the workers whose updates were norm-clipped."""
        return tuple(self.name(w) for w in self.aggregate.get("clipped", ()))

    @property
    def refused(self) -> tuple[tuple[str, str, Refusal], ...]:
        """(worker name, org, refusal) of every update refused in this call."""
        return tuple(
            (r.worker, r.org, r.refusal)
            for r in self.workers
            if r.status == REFUSED and r.refusal is not None
        )

    @property
    def update_bytes(self) -> int:
        """Bytes of the round's updates stored on the ledger."""
        return sum(int(u.get("size", 0)) for u in self.updates)

    @property
    def train_loss(self) -> float | None:
        """Mean local training loss of the workers that trained in this call."""
        losses = [r.train_loss for r in self.workers if r.train_loss is not None]
        return sum(losses) / len(losses) if losses else None

    @property
    def per_org(self) -> dict[str, OrgSummary]:
        """`OrgSummary` per MSP id, sorted."""
        counts: dict[str, dict[str, int]] = {}

        def org(msp: str) -> dict[str, int]:
            return counts.setdefault(msp, dict.fromkeys(OrgSummary.__dataclass_fields__, 0))

        for r in self.workers:
            counts_ = org(r.org)
            if r.status != SKIPPED:
                counts_["submitted"] += 1
            if r.accepted:
                counts_["accepted"] += 1
            elif r.status == REFUSED:
                counts_["refused"] += 1
        if not self.workers:
            for u in self.updates:
                org(u["msp_id"])["accepted"] += 1
        for key in ("used", "clipped"):
            for w in self.aggregate.get(key, ()):
                org(w.rpartition(":")[0])[key] += 1
        for e in self.aggregate.get("excluded", ()):
            org(e["id"].rpartition(":")[0])["excluded"] += 1
        return {msp: OrgSummary(**counts[msp]) for msp in sorted(counts)}


class Coordinator:
    """Drives task `task` for federation `fed` as the org admin behind `ledger`.

    `allowed_orgs` are the MSP ids whose identities may submit (the task's
    ``allowed_orgs``). `event_timeout` bounds the wait for the chaincode events of a
    round's accepted updates. With `wait_for_all` (the default, needed for byte-identical
    resumes) a round closes only when every worker's update is on the ledger or refused;
    without it, it closes with whatever arrived by the deadline (device experiments).
    `evaluate` scores each new global model on the federation's test set. `resources` are
    the workers' shared resources: the coordinator puts each new global model there, so the
    workers of this process never read it from the ledger again. `coordinators` are the
    organisations whose admins may advance the task's rounds (default: the creating org,
    this coordinator's). A task another organisation drives is never adopted, and a round
    advanced by anyone but this coordinator's identity is reported as an error.
    `max_workers_per_org` is the task's registry size (default: the config's
    ``workers_per_org``; device runs pass their devices per org). `registrars` are org
    admins' ledgers (this coordinator's own included, if it should):
    before the rounds, each registers its organisation's workers for the task
    (``RegisterWorkers``); workers of other organisations must be registered by their own
    admins. With `expect_registered`, each organisation may run its own workers on its own
    host (`fedfabric.fl_worker.participant.take_part`): a round also waits for the updates
    of every active registered worker of the organisations that run none of the workers
    given here. An update of theirs that was refused never reaches the ledger, so such a
    round waits `event_timeout` for it (then fails with `wait_for_all`, else closes).
    """

    def __init__(
        self,
        fed: Federation,
        ledger: Ledger,
        *,
        task: str,
        allowed_orgs: Sequence[str],
        event_timeout: float = 120.0,
        wait_for_all: bool = True,
        evaluate: bool = True,
        retry: Retry | None = None,
        resources: WorkerResources | None = None,
        coordinators: Sequence[str] = (),
        registrars: Sequence[Ledger] = (),
        max_workers_per_org: int | None = None,
        expect_registered: bool = False,
    ) -> None:
        self.fed = fed
        self.ledger = ledger
        self.task = task
        self.allowed_orgs = tuple(allowed_orgs)
        self.event_timeout = event_timeout
        self.wait_for_all = wait_for_all
        self.evaluate_models = evaluate
        self.retry = retry or Retry()
        self.resources = resources if resources is not None else WorkerResources()
        self.coordinators = tuple(coordinators)
        self.registrars = tuple(registrars)
        self.max_workers_per_org = max_workers_per_org
        self.expect_registered = expect_registered
        self._registered: set[str] = set()
        self._opened: tuple[int, int] | None = None  # (round, height) of our last AdvanceRound
        self.spec: fl.TaskSpec | None = None

    # -- the task ---------------------------------------------------------------------

    def task_json(self) -> dict[str, Any]:
        """The ``CreateTask`` JSON of this run (the model spec included)."""
        spec = self.fed.config.task_json(
            self.task,
            self.fed.layout,
            list(self.allowed_orgs),
            strategy=self.fed.strategy,
            max_workers_per_org=self.max_workers_per_org,
        )
        extra = {"coordinators": list(self.coordinators)} if self.coordinators else {}
        return {**spec, "model": dict(self.fed.model_spec), **extra}

    def initial_model(self) -> bytes:
        """The encoded initial model (identical in every process for the same config)."""
        return fl.encode_model(self.fed.initial_model, self.fed.layout)

    async def create_or_load_task(self) -> TaskInfo:
        """Create the task, or check that the one on the ledger is this run's.

        Raises `TaskMismatchError` when the stored spec or initial model differ (another
        seed, strategy, dataset...), and the ledger's errors for anything else.
        """
        wanted = fl.TaskSpec.from_json(self.task_json())
        initial = self.initial_model()
        digest = fl.read_header(initial)["content_digest"]
        stored = await self._query(lambda: self.ledger.task(self.task))
        created = False
        if stored is None:
            stored = await self._admin(
                lambda: self.ledger.create_task(self.task_json(), initial), done_if=("exists",)
            )
            created = bool(stored)
            stored = stored or await self._query(lambda: self.ledger.task(self.task))
        spec = fl.TaskSpec.from_json(stored["spec"])
        mine, theirs = wanted.to_json(), spec.to_json()
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                detail = f"ledger has {theirs.get(key)!r}, run has {mine.get(key)!r}"
                raise TaskMismatchError(self.task, key, detail)
        if stored["initial_model_digest"] != digest:
            raise TaskMismatchError(
                self.task, "initial_model", "the initial model differs (another seed or model?)"
            )
        drivers = fl.task_drivers(stored)
        if self.ledger.msp_id not in drivers:
            raise TaskMismatchError(
                self.task,
                "coordinators",
                f"{stored['created_by']} created it and {', '.join(drivers)} drive it; "
                f"{self.ledger.msp_id} never adopts a task another organisation drives",
            )
        self.spec = spec
        return TaskInfo(self.task, created, spec, digest)

    async def resume_point(self) -> ResumePoint:
        """Which round to continue, and in which phase, from the ledger (``GetAudit``)."""
        audit = await self._query(lambda: self.ledger.audit(self.task))
        spec = self.spec = fl.TaskSpec.from_json(audit["task"]["spec"])
        by_round = {entry["round"]: entry for entry in audit["rounds"]}
        aggregated = 0
        for round_no in range(1, spec.rounds + 1):
            entry = by_round.get(round_no)
            status = entry["state"]["status"] if entry else "new"
            if status != "aggregated":
                updates = tuple(u["worker"] for u in entry["updates"]) if entry else ()
                return ResumePoint(round_no, status, updates, aggregated, False)
            aggregated = round_no
        return ResumePoint(spec.rounds + 1, "aggregated", (), aggregated, True)

    async def evaluate(self, model: bytes | Mapping[str, Any]) -> tuple[float, float]:
        """``(loss, accuracy)`` of a global model (encoded, or its tensors) on the test set,
        off the event loop."""

        def run() -> tuple[float, float]:
            net = fl.build_model(self.fed.model_spec)
            tensors = (
                fl.decode_update(model, self.fed.layout) if isinstance(model, bytes) else model
            )
            fl.set_weights(net, tensors)
            return ml.evaluate(net, self.fed.partition.test)

        return await asyncio.to_thread(run)

    # -- rounds -----------------------------------------------------------------------

    async def run(
        self,
        workers: Sequence[Worker],
        *,
        on_round: Callable[[RoundOutcome], Any] | None = None,
        start: ResumePoint | None = None,
    ) -> list[RoundOutcome]:
        """Run (or resume) every remaining round of the task; return their outcomes.

        Starts at `start` (default: `resume_point`, read now); `on_round` is called after each
        round (it may be a coroutine function). Raises `RoundIncompleteError` when a round
        cannot close.
        """
        point = start or await self.resume_point()
        assert self.spec is not None  # set by resume_point / create_or_load_task
        outcomes = []
        for round_no in range(point.round, self.spec.rounds + 1):
            outcome = await self.run_round(round_no, workers)
            outcomes.append(outcome)
            if on_round is not None:
                result = on_round(outcome)
                if isinstance(result, Awaitable):
                    await result
        return outcomes

    async def admit(self, msp_id: str, *, registrar: Ledger | None = None) -> dict[str, Any]:
        """Admit organisation `msp_id` (one that joined the channel later) to the running
        task (``AdmitOrganisation``; again: the same record). Its workers submit from the
        record's ``from_round`` on: pass them to `run_round` with the others (before it
        they are refused, check ``authorised``). `registrar`, its admin's ledger, then
        registers them like the other `registrars`. `allowed_orgs` stays the founding
        organisations: the task's spec does not change."""
        record = await self._admin(lambda: self.ledger.admit_organisation(self.task, msp_id))
        if registrar is not None and registrar not in self.registrars:
            self.registrars += (registrar,)
        return record

    async def register(self, workers: Sequence[Worker]) -> None:
        """Have each registrar register the workers of its own organisation that this
        coordinator has not registered yet (`run_round` does it; after a restart it does it
        again, and registering an active worker changes nothing)."""
        for admin in self.registrars:
            mine = sorted(
                {w.ledger.enrolment_id for w in workers if w.ledger.msp_id == admin.msp_id}
                - self._registered
            )
            for start in range(0, len(mine), 500):  # keeps each transaction small
                batch = mine[start : start + 500]
                await self._admin(lambda a=admin, b=batch: a.register_workers(self.task, b))
                self._registered.update(batch)

    async def run_round(self, round_no: int, workers: Sequence[Worker]) -> RoundOutcome:
        """Run round `round_no` from whatever phase the ledger shows; see the module doc.

        Raises `RoundIncompleteError` (the round stays open and can be run again) and the
        ledger's errors for admin transactions that fail for good.
        """
        started = time.perf_counter()
        timings: dict[str, float] = {}
        names = {w.worker_id: w.name for w in workers}
        # Updates committed before `height` are in the page; later ones arrive as events.
        # A round this coordinator opened itself (its AdvanceRound committed in block
        # `height` - 1) had nothing in it before: no need to read it.
        if self._opened is not None and self._opened[0] == round_no:
            height = self._opened[1]
            page = {"state": {"status": "open"}, "updates": []}
        else:
            height = await self._query(self.ledger.height)
            page = await self._query(lambda: self.ledger.round_updates(self.task, round_no))
        self._opened = None
        timings["read"] = time.perf_counter() - started
        entry_phase = page["state"]["status"]
        if entry_phase == "new":
            raise RoundIncompleteError(
                self.task, round_no, "it is not open yet (the round before it has no aggregate)"
            )
        if entry_phase == "aggregated":
            self._advanced_by_me(page["state"], round_no)
        records = {u["worker"]: u for u in page["updates"]}
        aggregate: dict[str, Any] = page.get("aggregate") or {}
        results: tuple[WorkerResult, ...] = ()
        events = 0
        if entry_phase == "open":
            await self.register(workers)
            results, events, tip = await self._collect(
                round_no, workers, height, records, _settled(page), timings
            )
            records.update((r.worker_id, r.record) for r in results if r.record is not None)
            if self.expect_registered:  # the other hosts' updates, for the outcome
                page = await self._query(lambda: self.ledger.round_updates(self.task, round_no))
                records.update((u["worker"], u) for u in page["updates"])
            t = time.perf_counter()
            # Every endorser of AdvanceRound must hold every update: wait for the last block.
            await self.ledger.reach(max(tip + 1, height))
            timings["sync"] = time.perf_counter() - t
            t = time.perf_counter()
            aggregate = await self._admin(
                lambda: self.ledger.advance_round(self.task, round_no),
                done_if=("round-state",),
                round_no=round_no,
            )
            steps = self.ledger.last_steps if aggregate else {}
            for step in ("endorse", "order", "sync"):
                if step in steps:
                    timings[f"aggregate_{step}"] = steps[step]
            if "block" in steps:
                self._opened = (round_no + 1, int(steps["block"]) + 1)
            if not aggregate:  # advanced already: by an earlier attempt of ours, or not
                page = await self._query(lambda: self.ledger.round_updates(self.task, round_no))
                self._advanced_by_me(page["state"], round_no)
                aggregate = page["aggregate"] or {}
                records.update((u["worker"], u) for u in page["updates"])
            timings["aggregate"] = time.perf_counter() - t
        t = time.perf_counter()
        model = await self.resources.global_model(
            self.ledger, self.task, round_no, self.fed.layout, self.retry
        )
        timings["model"] = time.perf_counter() - t
        if model.digest != aggregate.get("model_digest"):
            raise CoordinatorError(
                f"round {round_no} of {self.task!r}: the global model read "
                f"({model.digest[:16]}…) is not the aggregate's"
            )
        loss = accuracy = None
        if self.evaluate_models:
            t = time.perf_counter()
            loss, accuracy = await self.evaluate(model.tensors)
            timings["evaluate"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        return RoundOutcome(
            task=self.task,
            round=round_no,
            phase_on_entry=entry_phase,
            workers=results,
            updates=tuple(records[w] for w in sorted(records)),
            aggregate=aggregate,
            model=model.blob,
            model_digest=model.digest,
            accuracy=accuracy,
            loss=loss,
            timings=timings,
            events=events,
            names=names,
        )

    def _advanced_by_me(self, state: Mapping[str, Any], round_no: int) -> None:
        """Raise `CoordinatorError` unless this coordinator's identity advanced the round."""
        who = state.get("advanced_by")
        if who != self.ledger.worker_id:
            raise CoordinatorError(
                f"round {round_no} of {self.task!r} was advanced by {who}, not by this "
                f"coordinator ({self.ledger.worker_id}); its aggregate is not this run's"
            )

    async def _collect(
        self,
        round_no: int,
        workers: Sequence[Worker],
        height: int,
        known: Mapping[str, Mapping[str, Any]],
        settled: set[str],
        timings: dict[str, float],
    ) -> tuple[tuple[WorkerResult, ...], int, int]:
        """Run the workers and wait for the events of their accepted updates (and of the
        other hosts' workers that declined the round; `settled`: done before `height`);
        return the results, the events seen and the highest block they came in (-1: none)."""
        arrived: set[str] = set(known) | settled
        blocks = [-1]
        changed = asyncio.Event()
        listener = asyncio.create_task(self._listen(round_no, height, arrived, changed, blocks))
        try:
            t = time.perf_counter()
            gathered = await asyncio.gather(
                *(w.run_round(self.task, round_no, on_ledger=known) for w in workers),
                return_exceptions=True,
            )
            results = tuple(
                r if isinstance(r, WorkerResult) else w.failed(round_no, f"{type(r).__name__}: {r}")
                for w, r in zip(workers, gathered, strict=True)
            )
            timings["train_submit"] = time.perf_counter() - t
            refused = [(w, r) for w, r in zip(workers, results, strict=True) if r.status == REFUSED]
            if refused:  # on the ledger with the reason, before the round closes (auditors see it)
                t = time.perf_counter()
                await decline_refused(*zip(*refused, strict=True), self.task, round_no, None)
                timings["decline"] = time.perf_counter() - t
            failed = [r for r in results if r.status == FAILED]
            if failed and self.wait_for_all:
                raise RoundIncompleteError(
                    self.task,
                    round_no,
                    "workers failed: " + "; ".join(f"{r.worker}: {r.error}" for r in failed),
                    missing=[r.worker for r in failed],
                    results=results,
                )
            expected = {r.worker_id for r in results if r.accepted}
            local = {w.worker_id: w.name for w in workers}
            if self.expect_registered:
                expected |= await self._registered_elsewhere(round_no, workers)
            t = time.perf_counter()
            await self._wait(expected, arrived, changed, listener, round_no)
            timings["events"] = time.perf_counter() - t
            missing = expected - arrived
            if missing:
                page = await self._query(lambda: self.ledger.round_updates(self.task, round_no))
                missing -= _settled(page)
            if missing and self.wait_for_all:
                raise RoundIncompleteError(
                    self.task,
                    round_no,
                    f"{len(missing)} accepted updates are not on the ledger after "
                    f"{self.event_timeout:g}s",
                    missing=sorted(local.get(w, w) for w in missing),  # others': their ids
                    results=results,
                )
            return results, len(arrived - set(known)), max(blocks)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, GatewayError):
                await listener

    async def _registered_elsewhere(self, round_no: int, workers: Sequence[Worker]) -> set[str]:
        """The active registered workers of the task's organisations that run none of
        `workers` here (each runs its own: `fedfabric.fl_worker.participant`), of those
        that may submit to `round_no` (an admitted one from its ``from_round``)."""
        here = {w.org for w in workers}
        registry = await self._query(lambda: self.ledger.workers(self.task))
        admitted = await self._query(lambda: self.ledger.organisations(self.task))
        later = {a["msp_id"]: a["from_round"] for a in admitted["admitted"]}
        return {
            member["worker"]
            for msp_id, org in registry["orgs"].items()
            if msp_id not in here and later.get(msp_id, 0) <= round_no
            for member in org["workers"]
            if member.get("active", True)
        }

    async def _listen(
        self,
        round_no: int,
        start_block: int,
        arrived: set[str],
        changed: asyncio.Event,
        blocks: list[int],
    ) -> None:
        async with self.ledger.events(start_block=start_block) as stream:
            async for event in stream:
                if event.event_name not in ("UpdateSubmitted", "BatchSubmitted", "RoundDeclined"):
                    continue
                payload = json.loads(event.payload)
                if payload.get("task") == self.task and payload.get("round") == round_no:
                    # A device batch announces each of its accepted updates.
                    for update in payload.get("accepted", [payload]):
                        arrived.add(update["worker"])
                    blocks.append(event.block_number)
                    changed.set()

    async def _wait(
        self,
        expected: set[str],
        arrived: set[str],
        changed: asyncio.Event,
        listener: asyncio.Task[None],
        round_no: int,
    ) -> None:
        """Until `expected` ⊆ `arrived` or the deadline; poll the ledger if events stop."""
        deadline = time.monotonic() + self.event_timeout
        poll = 0.2
        while not expected <= arrived:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if listener.done():
                # The event stream broke: fall back to reading the round from the ledger.
                page = await self._query(lambda: self.ledger.round_updates(self.task, round_no))
                arrived.update(_settled(page))
                await asyncio.sleep(min(poll, remaining))
                poll = min(2 * poll, 2.0)
                continue
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=remaining)

    async def _query(self, call: Callable[[], Awaitable[Any]]) -> Any:
        return await self.retry.run(call)

    async def _admin(
        self,
        call: Callable[[], Awaitable[dict[str, Any]]],
        *,
        done_if: Sequence[str] = (),
        round_no: int = 0,
    ) -> dict[str, Any]:
        """An admin transaction with retries; a refusal in `done_if` means another attempt
        (or coordinator) already did it, and returns ``{}``."""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await call()
            except (GatewayError, CommitError) as exc:
                if isinstance(exc, EndorseError) and refusal(exc).check in done_if:
                    return {}
                if isinstance(exc, EndorseError) and refusal(exc).check == "min-updates":
                    raise RoundIncompleteError(self.task, round_no, refusal(exc).message) from exc
                if attempt == self.retry.attempts or not is_transient(exc):
                    raise
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")


def _settled(page: Mapping[str, Any]) -> set[str]:
    """The workers a round page shows done: with an update, or declined (``DeclineRound``)."""
    return {u["worker"] for u in [*page["updates"], *page.get("declined", ())]}


__all__ = [
    "Coordinator",
    "CoordinatorError",
    "OrgSummary",
    "ResumePoint",
    "RoundIncompleteError",
    "RoundOutcome",
    "TaskInfo",
    "TaskMismatchError",
]
