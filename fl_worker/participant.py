"""An organisation's part in a task that another organisation coordinates: its own workers,
on its own host, with its own keys.

`take_part` registers the organisation's workers with its own admin (``RegisterWorkers``),
then follows the task's rounds on the ledger: as each round opens, the workers train on the
previous global model and submit; when the coordinator's ``AdvanceRound`` closes it, they go
on to the next. Nothing but the ledger connects the organisations: the coordinator (a
`Coordinator` with ``expect_registered=True``) waits for the updates of every registered
worker, and each organisation's workers run wherever that organisation runs them. A worker
whose update was refused declines the round on the ledger (``DeclineRound``): the
coordinator, which never sees that refusal, then need not wait for it. An
organisation that joined the channel while the task runs waits until a driving organisation
admits it (``fedfabric task admit``), then takes part from the round the admission names.

Example (on Energy's host)::

    results = await take_part(energy_admin, "digits-3f2a", energy_workers)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ledger import Ledger
from fedfabric.fl_worker.worker import Worker, WorkerResult, decline_refused


class ParticipantError(Exception):
    """The organisation cannot take part: no such task, or it did not move for too long."""


async def take_part(
    admin: Ledger,
    task: str,
    workers: Sequence[Worker],
    *,
    poll: float = 0.25,
    timeout: float = 600.0,
    say: Callable[[str], None] | None = None,
) -> list[WorkerResult]:
    """Register `workers` (all of `admin`'s organisation) and run them in every round of
    the synchronous `task`, from the first one still open, until its last round is closed;
    return their results; for an organisation that is not a founding one, from the round
    its admission names, once it is admitted. Raises `ParticipantError` when the task does
    not exist after `timeout` seconds, is asynchronous, does not admit the organisation or
    stays in one phase for `timeout` seconds."""
    foreign = sorted({w.name for w in workers if w.org != admin.msp_id})
    if foreign:
        raise ValueError(f"workers of another organisation than {admin.msp_id}: {foreign}")
    record = await wait_until(lambda: admin.task(task), lambda r: r is not None, poll, timeout)
    if record is None:
        raise ParticipantError(f"no task {task!r} on the ledger after {timeout:g}s")
    spec = record["spec"]
    if spec.get("mode", "sync") != "sync":
        raise ParticipantError(f"task {task!r} is asynchronous; take_part follows rounds")
    first = 1
    if admin.msp_id not in spec["allowed_orgs"]:
        first = await _admitted(admin, task, record, poll, timeout, say)
    await admin.register_workers(task, sorted({w.ledger.enrolment_id for w in workers}))
    if say is not None:
        say(f"task {task}: {admin.msp_id} registered its workers ({len(workers)})")
    results: list[WorkerResult] = []
    for round_no in range(first, spec["rounds"] + 1):
        page = await _past(admin, task, round_no, "new", poll, timeout)
        if page is None:
            raise ParticipantError(f"round {round_no} of {task!r} did not open in {timeout:g}s")
        if page["state"]["status"] != "open":
            continue  # closed before this organisation came (or came back)
        known = {u["worker"]: u for u in page["updates"]}
        done = await asyncio.gather(
            *(w.run_round(task, round_no, on_ledger=known) for w in workers)
        )
        await decline_refused(workers, done, task, round_no, say)
        results.extend(done)
        if say is not None:
            statuses = ", ".join(f"{r.worker}: {r.status}" for r in done)
            say(f"round {round_no}: {statuses}")
        closed = await _past(admin, task, round_no, "open", poll, timeout)
        if closed is None:
            raise ParticipantError(f"round {round_no} of {task!r} stayed open for {timeout:g}s")
    return results


async def _admitted(
    admin: Ledger,
    task: str,
    record: dict[str, Any],
    poll: float,
    timeout: float,
    say: Callable[[str], None] | None,
) -> int:
    """The round from which `admin`'s organisation, not a founding one of `task`, may
    submit, once a driving organisation admitted it (``AdmitOrganisation``)."""
    msp_id = admin.msp_id

    def found(orgs: dict[str, Any]) -> dict[str, Any] | None:
        return next((a for a in orgs["admitted"] if a["msp_id"] == msp_id), None)

    orgs = await admin.organisations(task)
    if found(orgs) is None and say is not None:
        drivers = ", ".join(fl.task_drivers(record))
        admit = f"fedfabric task admit --task {task} --org NAME {msp_id}"
        say(f"waiting for {drivers} to admit {msp_id} to task {task} (its admin runs: {admit})")
    orgs = await wait_until(lambda: admin.organisations(task), found, poll, timeout)
    if orgs is None:
        raise ParticipantError(f"{msp_id} was not admitted to task {task!r} in {timeout:g}s")
    first = int(found(orgs)["from_round"])
    if say is not None:
        say(f"task {task}: {msp_id} admitted, from round {first}")
    return first


async def _past(
    admin: Ledger, task: str, round_no: int, phase: str, poll: float, timeout: float
) -> dict[str, Any] | None:
    """Round `round_no`'s page once the round is no longer in `phase` (None: timed out)."""
    return await wait_until(
        lambda: admin.round_updates(task, round_no),
        lambda page: page["state"]["status"] != phase,
        poll,
        timeout,
    )


async def wait_until(
    read: Callable[[], Any], ready: Callable[[Any], bool], poll: float, timeout: float
) -> Any:
    """`read()` until `ready` says yes (return it) or `timeout` seconds pass (return None)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await read()
        if ready(value):
            return value
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(poll)
