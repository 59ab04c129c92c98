"""A worker: one client identity that trains locally and submits its update to the ledger.

Each round a `Worker` reads the global model of the previous round from the ledger, trains
off the event loop (its `Trainer`), encodes the update with the contract's encoding and
submits it with ``SubmitUpdate``. Submitting again is always safe: the contract refuses the
same bytes as ``replay``, which the worker recognises as its own earlier success, so an
update is never counted twice. Transient failures (`fedfabric.fl_worker.ledger.is_transient`)
are retried with backoff; refusals are reported, not retried.

The trainers of a federation's workers and of simulated devices are in
`fedfabric.fl_worker.federation`. Workers of one process share a `WorkerResources` (global
models read once per round, deltas computed once, bounded training and submissions).

Example::

    workers = federation_workers(fed, ledgers, resources=WorkerResources())
    result = await workers[0].run_round("digits", 1)
    assert result.accepted, result.refusal
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ledger import EntryRefused, Ledger, Refusal, is_transient, refusal
from fedfabric.gateway import CommitError, EndorseError, GatewayError

Tensors = Mapping[str, np.ndarray]

COMMITTED = "committed"
"""The update was endorsed and committed by this call."""
REPLAYED = "replayed"
"""The ledger already held exactly this update from this worker (an earlier attempt)."""
SKIPPED = "skipped"
"""The ledger held this worker's update for the round before the call (a resumed round)."""
REFUSED = "refused"
"""The contract (or the encoder, before submitting) refused the update."""
FAILED = "failed"
"""Transient failures outlasted the retries, or something unexpected broke."""
ACCEPTED = frozenset({COMMITTED, REPLAYED, SKIPPED})


@dataclass(frozen=True, kw_only=True)
class Retry:
    """How often and how patiently a transient failure is retried (exponential backoff)."""

    attempts: int = 6
    backoff: float = 0.2
    max_backoff: float = 5.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based), with jitter."""
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1)

    async def run(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Await `call()`, again after a transient failure (`is_transient`), at most
        `attempts` times; any other failure, or the last one, is raised."""
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except (GatewayError, CommitError) as exc:
                if attempt == self.attempts or not is_transient(exc):
                    raise
            await asyncio.sleep(self.delay(attempt))
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class LocalUpdate:
    """What local training produced: the encoded update (None if the encoder refused it,
    `error` says why), the sample count claimed and the mean training loss."""

    blob: bytes | None
    num_samples: int
    train_loss: float
    error: fl.UpdateError | None = None


class Trainer(Protocol):
    """Local training of one worker; pure CPU work that `Worker` runs off the event loop."""

    layout: fl.Layout

    def compute(self, base: Tensors, base_digest: str, round_no: int) -> LocalUpdate:
        """Train from the global model `base` (content digest `base_digest`) for `round_no`."""
        ...


def encode(
    delta: Tensors,
    layout: fl.Layout,
    quantization: str,
    compression: str,
    samples: int,
    loss: float,
) -> LocalUpdate:
    """Encode `delta` as the contract expects; an encoder refusal becomes `LocalUpdate.error`."""
    try:
        blob = fl.encode_update(delta, layout, quantization=quantization, compression=compression)
    except fl.UpdateError as exc:
        return LocalUpdate(None, samples, loss, exc)
    return LocalUpdate(blob, samples, loss)


@dataclass(frozen=True)
class GlobalModel:
    """A global model read from the ledger: round, encoded bytes, tensors, content digest."""

    round: int
    blob: bytes
    tensors: dict[str, np.ndarray]
    digest: str


class WorkerResources:
    """What the workers of one process share: global models (read from the ledger once per
    round), cached deltas, and bounds on concurrent training and submissions.

    `train_concurrency` threads train at once (1 keeps torch's own threads busy without
    oversubscribing a small machine); at most `submit_concurrency` submissions are in flight.
    """

    def __init__(self, *, train_concurrency: int = 1, submit_concurrency: int = 64) -> None:
        from fedfabric.fl_worker.federation import DeltaCache

        self.deltas = DeltaCache()
        self.train_slots = asyncio.Semaphore(train_concurrency)
        self.submit_slots = asyncio.Semaphore(submit_concurrency)
        self._models: dict[tuple[str, int], asyncio.Task[GlobalModel]] = {}

    async def global_model(
        self, ledger: Ledger, task: str, round_no: int, layout: fl.Layout, retry: Retry
    ) -> GlobalModel:
        """The global model after `round_no`, read once and shared."""
        key = (task, round_no)
        if key not in self._models or (
            self._models[key].done() and self._models[key].exception() is not None
        ):
            for old in [k for k in self._models if k[0] == task and k[1] < round_no - 1]:
                del self._models[old]
            self._models[key] = asyncio.ensure_future(
                _read_model(ledger, task, round_no, layout, retry)
            )
        return await asyncio.shield(self._models[key])


async def _read_model(
    ledger: Ledger, task: str, round_no: int, layout: fl.Layout, retry: Retry
) -> GlobalModel:
    blob = await retry.run(lambda: ledger.global_model(task, round_no))
    tensors = await asyncio.to_thread(fl.decode_update, blob, layout)
    return GlobalModel(round_no, blob, tensors, fl.read_header(blob)["content_digest"])


@dataclass(frozen=True)
class WorkerResult:
    """What happened to one worker's update in one round.

    `status` is one of `COMMITTED`, `REPLAYED`, `SKIPPED`, `REFUSED`, `FAILED`;
    `accepted` is true for the first three (the update is on the ledger). `record` is the
    contract's update record when known, `refusal` says who refused and why, `error`
    describes a failure. Times are seconds of local training and of submitting; `steps`
    splits the submission of a committed update (`Ledger.last_steps`: endorse, order).
    """

    worker: str
    org: str
    worker_id: str
    round: int
    status: str
    refusal: Refusal | None = None
    record: Mapping[str, Any] | None = None
    num_samples: int = 0
    size: int = 0
    train_loss: float | None = None
    attempts: int = 0
    train_seconds: float = 0.0
    submit_seconds: float = 0.0
    error: str | None = None
    steps: Mapping[str, float] | None = None

    @property
    def accepted(self) -> bool:
        """Whether the worker's update for the round is on the ledger."""
        return self.status in ACCEPTED


class Worker:
    """One client identity (its `Ledger`) and its local training (its `Trainer`).

    `fedfabric.fl_worker.federation` builds them for a federation's workers and for devices.
    """

    def __init__(
        self,
        name: str,
        ledger: Ledger,
        trainer: Trainer,
        *,
        resources: WorkerResources | None = None,
        retry: Retry | None = None,
    ) -> None:
        self.name = name
        self.ledger = ledger
        self.trainer = trainer
        self.resources = resources if resources is not None else WorkerResources()
        self.retry = retry or Retry()
        self.org = ledger.msp_id
        self.worker_id = ledger.worker_id

    def __repr__(self) -> str:
        return f"Worker({self.name!r}, {self.worker_id[:24]}…)"

    async def run_round(
        self, task: str, round_no: int, *, on_ledger: Mapping[str, Mapping[str, Any]] | None = None
    ) -> WorkerResult:
        """Train on the global model of round ``round_no - 1`` and submit to `round_no`.

        `on_ledger` maps worker ids to the round's update records already on the ledger
        (the coordinator reads them once for all workers); without it the worker asks the
        ledger itself. A worker already listed is `SKIPPED` without training. Never raises
        for refusals or transient failures; they are in the result.
        """
        if on_ledger is None:
            on_ledger = await self._on_ledger(task, round_no)
        if self.worker_id in on_ledger:
            record = on_ledger[self.worker_id]
            return self._result(
                round_no,
                SKIPPED,
                record=record,
                num_samples=record.get("num_samples", 0),
                size=record.get("size", 0),
            )
        return await self._train_and_submit(task, round_no - 1, round_no, round_no, False)

    async def run_async(self, task: str, base: int, step: int) -> WorkerResult:
        """Train on version `base` of an asynchronous task and submit the update with that
        base version. `step` is the worker's update count plus one: with the base model it
        seeds training (the trainer's round), so the update is the same whenever it is
        made again. The result's ``round`` is `base`. Never raises for refusals or
        transient failures."""
        return await self._train_and_submit(task, base, step, base, True)

    async def _train_and_submit(
        self, task: str, base_no: int, step: int, round_no: int, asynchronous: bool
    ) -> WorkerResult:
        """Train on global model `base_no` (trainer round `step`) and submit to `round_no`."""
        try:
            base = await self.resources.global_model(
                self.ledger, task, base_no, self.trainer.layout, self.retry
            )
            started = time.perf_counter()
            async with self.resources.train_slots:
                local = await asyncio.to_thread(
                    self.trainer.compute, base.tensors, base.digest, step
                )
            trained = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 - reported in the result, never lost
            return self._result(round_no, FAILED, error=f"{type(exc).__name__}: {exc}")
        if local.blob is None:
            error = local.error
            check = error.check if error is not None else "encoding"
            return self._result(
                round_no,
                REFUSED,
                refusal=Refusal(check, str(error), ()),
                num_samples=local.num_samples,
                train_loss=local.train_loss,
                train_seconds=trained,
            )
        started = time.perf_counter()
        async with self.resources.submit_slots:
            outcome = await self._submit(task, round_no, local, asynchronous)
        return self._result(
            round_no,
            train_loss=local.train_loss,
            train_seconds=trained,
            submit_seconds=time.perf_counter() - started,
            num_samples=local.num_samples,
            size=len(local.blob),
            **outcome,
        )

    async def _on_ledger(self, task: str, round_no: int) -> dict[str, Mapping[str, Any]]:
        page = await self.retry.run(lambda: self.ledger.round_updates(task, round_no))
        return {r["worker"]: r for r in page["updates"]}

    async def _submit(
        self, task: str, round_no: int, local: LocalUpdate, asynchronous: bool
    ) -> dict[str, Any]:
        assert local.blob is not None
        for attempt in range(1, self.retry.attempts + 1):
            try:
                record = await self.ledger.submit_update(
                    task, round_no, local.blob, local.num_samples
                )
                steps = dict(self.ledger.last_steps)
                return {"status": COMMITTED, "record": record, "attempts": attempt, "steps": steps}
            except EntryRefused as exc:  # one entry of a device batch
                if exc.refusal.check == "replay":
                    return await self._replayed(task, round_no, local.blob, exc.refusal, attempt)
                return {"status": REFUSED, "refusal": exc.refusal, "attempts": attempt}
            except (GatewayError, CommitError) as exc:
                if isinstance(exc, EndorseError) and not is_transient(exc):
                    refused = refusal(exc)
                    if refused.check == "replay":
                        return await self._replayed(
                            task, round_no, local.blob, refused, attempt, asynchronous
                        )
                    return {"status": REFUSED, "refusal": refused, "attempts": attempt}
                if not is_transient(exc):
                    if isinstance(exc, CommitError):
                        return {"status": REFUSED, "refusal": refusal(exc), "attempts": attempt}
                    return {"status": FAILED, "error": str(exc), "attempts": attempt}
                if attempt == self.retry.attempts:
                    return {
                        "status": FAILED,
                        "error": f"gave up after {attempt} attempts: {exc}",
                        "attempts": attempt,
                    }
            await asyncio.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable")

    async def _replayed(
        self,
        task: str,
        round_no: int,
        blob: bytes,
        refused: Refusal,
        attempt: int,
        asynchronous: bool,
    ) -> dict[str, Any]:
        """A ``replay`` refusal: success if the recorded copy is this worker's own (for an
        asynchronous task: its pending update, or one already aggregated)."""
        if asynchronous:
            page = await self.retry.run(lambda: self.ledger.async_state(task))
            mine = next((r for r in page["pending"] if r["worker"] == self.worker_id), None)
            if mine is None:  # already aggregated: on the ledger, and no longer pending
                return {"status": REPLAYED, "attempts": attempt}
        else:
            mine = (await self._on_ledger(task, round_no)).get(self.worker_id)
        if mine is not None and mine["sha256"] == hashlib.sha256(blob).hexdigest():
            return {"status": REPLAYED, "record": mine, "attempts": attempt}
        return {"status": REFUSED, "refusal": refused, "attempts": attempt}

    def failed(self, round_no: int, error: str) -> WorkerResult:
        """This worker's result for a round it could not take part in (`FAILED`)."""
        return self._result(round_no, FAILED, error=error)

    def _result(self, round_no: int, status: str, **fields: Any) -> WorkerResult:
        return WorkerResult(
            worker=self.name,
            org=self.org,
            worker_id=self.worker_id,
            round=round_no,
            status=status,
            **fields,
        )


async def decline_refused(
    workers: Sequence[Worker],
    done: Sequence[WorkerResult],
    task: str,
    round_no: int,
    say: Callable[[str], None] | None,
) -> None:
    """Each worker whose update is not on the ledger (refused, or failed) declines the
    round (``DeclineRound``), with the reason: a coordinator on another host, which never
    sees the refusal, need not wait for it, and everyone sees on the ledger who was refused
    and why. A decline that fails is said, never raised (a coordinator elsewhere then waits
    for its event timeout)."""

    async def decline(worker: Worker, result: WorkerResult) -> None:
        if result.refusal is not None:
            refused = result.refusal  # the contract's words, once per endorser that said them
            reason = refused.reason or f"{refused.check}: {refused.message}"
        else:
            reason = f"{result.status}: {result.error or 'no update'}"
        try:
            await worker.ledger.decline_round(task, round_no, reason[: fl.MAX_REASON])
        except (GatewayError, CommitError) as exc:
            if say is not None:
                say(f"round {round_no}: {worker.name} could not decline the round: {exc}")
        else:
            if say is not None:
                say(f"round {round_no}: {worker.name} declined the round ({reason[:80]})")

    await asyncio.gather(
        *(decline(w, r) for w, r in zip(workers, done, strict=True) if not r.accepted)
    )


__all__ = [
    "ACCEPTED",
    "COMMITTED",
    "FAILED",
    "REFUSED",
    "REPLAYED",
    "SKIPPED",
    "GlobalModel",
    "LocalUpdate",
    "Retry",
    "Trainer",
    "Worker",
    "WorkerResources",
    "WorkerResult",
    "decline_refused",
    "encode",
]
