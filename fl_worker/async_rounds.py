"""The coordinator of an asynchronous task (``mode: async``, FedBuff): versions, not rounds.

`AsyncCoordinator.run` drives the task until it has made its last version::

    workers: train on the latest version → SubmitUpdate(base version) → again
             (a worker with an update pending waits until it is aggregated)
    coordinator: UpdateSubmitted events, in commit order → the pending queue
                 → K pending: AggregateBuffer(version, the first K ids) → next version
                 → read the new model once (for the workers and the evaluation) → `RoundOutcome`

With ``async_order: free`` the workers run concurrently (arrival order is whatever the
machine makes of it). With ``fixed`` they take turns round-robin, one at a time; each
trains on the version it saw at its last committed update (as if it trained while the
others took their turns; never staler than ``max_staleness``), and a worker whose update is
still pending passes its turn. Then every update
and every buffer is a function of the ledger alone, so `run` continues an interrupted run
from the ledger (``GetAsyncState``: the version, the workers' update counts, the pending
updates, ordered by replaying their ``UpdateSubmitted`` events from the block of the oldest)
and commits the same models as an uninterrupted run. A worker's k-th update is trained with
trainer round k (seeding its training) from the version it names.

Each `RoundOutcome` is one version: ``round`` is the version, ``updates`` its buffer's
records, ``aggregate`` its record (ids, staleness and factors, used, excluded with reasons).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fedfabric.fl_worker.coordinator import (
    Coordinator,
    CoordinatorError,
    ResumePoint,
    RoundOutcome,
)
from fedfabric.fl_worker.federation import Federation
from fedfabric.fl_worker.ledger import Ledger
from fedfabric.fl_worker.worker import FAILED, REFUSED, Worker, WorkerResult
from fedfabric.gateway import GatewayError


def coordinator_for(fed: Federation, ledger: Ledger, **options: Any) -> Coordinator:
    """The coordinator of `fed`'s mode: an `AsyncCoordinator` (in the config's
    ``async_order``) for ``mode: async``, else a `Coordinator`; `options` as theirs."""
    if fed.config.mode == "async":
        return AsyncCoordinator(fed, ledger, order=fed.config.async_order, **options)
    return Coordinator(fed, ledger, **options)


class AsyncCoordinator(Coordinator):
    """A `Coordinator` for an asynchronous task; `order` is ``free`` or ``fixed`` (see the
    module docstring). Everything else is as for `Coordinator`."""

    def __init__(self, *args: Any, order: str = "free", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if order not in ("free", "fixed"):
            raise ValueError(f"order must be free or fixed, got {order!r}")
        self.order = order
        self.version = 0
        self._pending: list[str] = []  # update ids, commit order
        self._records: dict[str, Mapping[str, Any]] = {}
        self._counts: dict[str, int] = {}  # worker id → updates committed
        self._mine: dict[str, str] = {}  # worker id → its pending update id
        self._seen: set[str] = set()  # every update id queued by this run
        self._results: list[WorkerResult] = []
        self._tip = -1  # the highest block an update in the queue came in
        self._changed = asyncio.Condition()

    async def resume_point(self) -> ResumePoint:
        """The next version to make, from the ledger (``GetAsyncState``)."""
        state = await self._query(lambda: self.ledger.async_state(self.task))
        version, rounds = state["version"], state["rounds"]
        pending = tuple(r["id"] for r in state["pending"])
        if version >= rounds:
            return ResumePoint(rounds + 1, "aggregated", (), version, True)
        return ResumePoint(version + 1, "open", pending, version, False)

    async def run(
        self,
        workers: Sequence[Worker],
        *,
        on_round: Callable[[RoundOutcome], Any] | None = None,
        start: ResumePoint | None = None,
    ) -> list[RoundOutcome]:
        """Make every remaining version of the task; return one outcome per version.

        Raises `CoordinatorError` when the fixed order makes no progress (every worker
        refused or pending for a whole turn of the workers) and the ledger's errors for
        admin transactions that fail for good.
        """
        if self.spec is None:
            await self.create_or_load_task()
        assert self.spec is not None
        await self.register(workers)
        height = await self._query(self.ledger.height)
        state = await self._query(lambda: self.ledger.async_state(self.task))
        self.version = state["version"]
        self._counts = {w: s["count"] for w, s in state["workers"].items()}
        self._mine = {r["worker"]: r["id"] for r in state["pending"]}
        self._records = {r["id"]: r for r in state["pending"]}
        first = height
        for record in state["pending"]:
            first = min(first, await self._query(lambda r=record: self.ledger.block_of(r["tx_id"])))
        known = set(self._records)
        listener = asyncio.create_task(self._listen(first, height, known))
        last = state["last"]["ids"][-1] if state["last"] else None
        outcomes: list[RoundOutcome] = []
        runner = self._fixed(workers, known, last) if self.order == "fixed" else self._free(workers)
        tasks = [
            asyncio.create_task(self._aggregate_all(workers, outcomes, on_round)),
            asyncio.create_task(runner),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the first failure
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, listener]:
                task.cancel()
            for task in [*tasks, listener]:
                with contextlib.suppress(asyncio.CancelledError, GatewayError):
                    await task
        return outcomes

    # -- the pending queue -----------------------------------------------------------------

    async def _listen(self, start: int, height: int, known: set[str]) -> None:
        """Append each committed update of the task to the queue, in commit order: from
        block `start`, the ones in `known` (pending when the run began), from `height` on
        every one."""
        seen = self._seen
        async with self.ledger.events(start_block=start) as stream:
            async for event in stream:
                if event.event_name != "UpdateSubmitted":
                    continue
                payload = json.loads(event.payload)
                ident = payload.get("id")
                if payload.get("task") != self.task or ident is None or ident in seen:
                    continue
                if event.block_number < height and ident not in known:
                    continue  # aggregated before this run began
                async with self._changed:
                    seen.add(ident)
                    self._tip = max(self._tip, event.block_number)
                    self._pending.append(ident)
                    self._mine[payload["worker"]] = ident
                    self._changed.notify_all()

    async def _wait(self, predicate: Callable[[], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(predicate)

    def _done(self) -> bool:
        assert self.spec is not None
        return self.version >= self.spec.rounds

    async def _aggregate_all(
        self,
        workers: Sequence[Worker],
        outcomes: list[RoundOutcome],
        on_round: Callable[[RoundOutcome], Any] | None,
    ) -> None:
        """Aggregate each buffer as soon as it is full, until the last version."""
        assert self.spec is not None
        size = self.spec.buffer_size
        names = {w.worker_id: w.name for w in workers}
        started = time.perf_counter()
        while not self._done():
            await self._wait(lambda: len(self._pending) >= size)
            ids = self._pending[:size]
            t = time.perf_counter()
            # Every endorser of AggregateBuffer must hold every update it names.
            await self.ledger.reach(self._tip + 1)
            version = self.version
            aggregate = await self._admin(
                lambda v=version, i=ids: self.ledger.aggregate_buffer(self.task, v, i),
                done_if=("version", "done"),
            )
            if not aggregate:  # made already, by an earlier attempt of ours
                aggregate = (await self._query(lambda: self.ledger.async_state(self.task)))["last"]
            if aggregate is None or aggregate["ids"] != ids:
                raise CoordinatorError(
                    f"version {version + 1} of {self.task!r} holds other updates than {ids}"
                )
            seconds = time.perf_counter() - t
            model = await self.resources.global_model(
                self.ledger, self.task, version + 1, self.fed.layout, self.retry
            )
            async with self._changed:
                del self._pending[:size]
                self.version = version + 1
                for ident in ids:
                    worker = ident.rpartition("#")[0]
                    if self._mine.get(worker) == ident:
                        del self._mine[worker]
                results, self._results = tuple(self._results), []
                self._changed.notify_all()
            loss = accuracy = None
            if self.evaluate_models:
                loss, accuracy = await self.evaluate(model.tensors)
            now = time.perf_counter()
            outcome = RoundOutcome(
                task=self.task,
                round=version + 1,
                phase_on_entry="open",
                workers=results,
                updates=tuple(self._records[i] for i in ids if i in self._records),
                aggregate=aggregate,
                model=model.blob,
                model_digest=model.digest,
                accuracy=accuracy,
                loss=loss,
                timings={"aggregate": seconds, "total": now - started},
                events=len(ids),
                names=names,
            )
            started = now
            outcomes.append(outcome)
            if on_round is not None:
                result = on_round(outcome)
                if isinstance(result, Awaitable):
                    await result

    async def _seen_versions(self) -> dict[str, int]:
        """Per worker, the version after its last committed update's turn (and the
        aggregation that turn triggered), from the ledger: its buffer's version if it
        filled that buffer, else the version before; the current one while it is pending."""
        audit = await self._query(lambda: self.ledger.audit(self.task))
        where: dict[str, int] = {}
        for entry in audit["rounds"]:
            ids = (entry["aggregate"] or {}).get("ids", [])
            for i, ident in enumerate(ids):
                where[ident] = entry["round"] - (i < len(ids) - 1)
        return {
            worker: where.get(f"{worker}#{count}", self.version)
            for worker, count in self._counts.items()
            if count
        }

    # -- the workers -----------------------------------------------------------------------

    async def _turn(self, worker: Worker, base: int | None = None) -> WorkerResult:
        """One update of `worker` on version `base` (default: the latest); its record is
        remembered."""
        step = self._counts.get(worker.worker_id, 0) + 1
        base = self.version if base is None else base
        result = await worker.run_async(self.task, base, step)
        if result.accepted:
            self._counts[worker.worker_id] = step
            if result.record is not None:
                self._records[result.record["id"]] = result.record
        async with self._changed:
            self._results.append(result)
        return result

    async def _free(self, workers: Sequence[Worker]) -> None:
        """Every worker trains and submits concurrently until the last version."""

        async def loop(worker: Worker) -> None:
            while not self._done():
                await self._wait(lambda: self._done() or worker.worker_id not in self._mine)
                if self._done():
                    return
                version = self.version
                result = await self._turn(worker)
                if result.accepted and result.record is not None:
                    ident = result.record["id"]
                    await self._wait(lambda i=ident: self._done() or i in self._seen)
                elif result.status in (REFUSED, FAILED):
                    if result.refusal is not None and result.refusal.check == "done":
                        return
                    if result.refusal is None or result.refusal.check != "stale":
                        # The same base would give the same update: wait for a new version.
                        await self._wait(lambda v=version: self.version > v)

        await asyncio.gather(*(loop(w) for w in workers))

    async def _fixed(self, workers: Sequence[Worker], known: set[str], last: str | None) -> None:
        """Round-robin turns, one at a time, starting after the worker of the update
        committed last (the last pending one, else the last one aggregated). A worker
        trains on the version it saw when its last update committed (it trained while the
        others took their turns), or on the oldest one still fresh enough
        (``current - max_staleness``) if that is newer."""
        assert self.spec is not None
        await self._wait(lambda: known <= set(self._pending))
        if self._pending:
            last = self._pending[-1]
        index = {w.worker_id: i for i, w in enumerate(workers)}
        turn = index[last.rpartition("#")[0]] + 1 if last is not None else 0
        seen = await self._seen_versions()
        size, lag = self.spec.buffer_size, self.spec.max_staleness
        idle = 0
        while not self._done():
            # A full buffer is aggregated before the next turn.
            await self._wait(lambda: self._done() or len(self._pending) < size)
            if self._done():
                return
            worker = workers[turn % len(workers)]
            turn += 1
            if worker.worker_id in self._mine:
                idle += 1
            else:
                base = max(seen.get(worker.worker_id, 0), self.version - lag)
                result = await self._turn(worker, base)
                if result.accepted and result.record is not None:
                    await self._wait(lambda i=result.record["id"]: i in self._seen)
                    await self._wait(lambda: self._done() or len(self._pending) < size)
                    seen[worker.worker_id] = self.version
                    idle = 0
                elif result.status == FAILED:
                    raise CoordinatorError(f"{worker.name} failed: {result.error}")
                else:
                    idle += 1
            if idle > len(workers):
                raise CoordinatorError(
                    f"no update of {self.task!r} committed in a whole turn of the workers "
                    f"(version {self.version}, {len(self._pending)} pending)"
                )
