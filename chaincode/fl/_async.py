"""Asynchronous tasks (``mode: "async"``): buffered asynchronous aggregation, as in FedBuff.

Workers train on the latest committed global model and submit whenever they are done; each
update names the model version it was trained from (the ``round_no`` argument of
``SubmitUpdate`` is that *base version*). Every ``buffer_size`` (K) committed updates the
task's coordinator sends ``AggregateBuffer(task, version, ids)``, naming the K pending updates
in commit order; the contract makes version ``version + 1`` from them. ``rounds`` is the
number of versions a task makes.

World state, beside `fedfabric.chaincode.fl._contract`'s keys (``n`` zero-padded)::

    fl.update    [task, "async", msp, enrolment#, n]  the worker's n-th update (record)
    fl.blob      [task, "async", msp, enrolment#, n]  its bytes
    fl.slot      [task, msp, enrolment#]             {"count": n, "pending": id or null}
    fl.version   [task]                              {"version": v, "tx_id": ...}; absent: 0
    fl.model     [task, v]                           global model version v (0: initial)
    fl.round     [task, v]                           the buffer making version v: open, then
                                                     aggregated (with its update ids)
    fl.aggregate [task, v]                           its record (below)

An update's id is ``"<worker id>#<n>"``. A worker has at most one *pending* (not yet
aggregated) update: another is refused (``pending``), so an organisation fills at most
``max_workers_per_org`` places of a buffer, and ``weighting: "org"`` still gives it one row.

Submitting checks everything ``SubmitUpdate`` checks in a round (registered worker, content,
replays and copies, norm, org-private validation, which scores base + update against the
base version on the organisation's split), and refuses:

- ``version``: the base version is not committed;
- ``done``: the task has made all its versions;
- ``stale``: version ``base + max_staleness + 1`` is already committed.

None of these reads a key that another worker's submission writes, and of the keys an
aggregation writes a submission reads only the round records of versions ``base``,
``base + max_staleness + 1`` and ``rounds``, so it conflicts (MVCC) with an aggregation
only when that aggregation makes (or opens) one of them; the worker then submits again.

Aggregating version ``v + 1`` (``AggregateBuffer``, by an admin of a driving organisation, as
``AdvanceRound``): ``v`` must be the current version, the ids exactly K distinct pending
updates. Each update's staleness is ``tau = v - base``; one staler than ``max_staleness``
by now is excluded with reason ``stale``. Every other update's delta is multiplied by its
staleness factor ``s(tau)`` (``polynomial``: ``(1 + tau) ** -exponent``, as FedBuff; or
``constant``: 1), an integer in units of 2**-30 computed in decimal arithmetic
(`staleness_factor`), in exact fixed point (`fx.scale`); then the task's rule runs over the
buffer with the task's weighting, as in a round. The record (`aggregate_version`) holds the
ids, each update's base version, staleness and factor, what was used, clipped and excluded
and why; the new model goes to ``fl.model [task, v + 1]``. Every endorser computes the same
bytes, and `verify_audit` recomputes every version from the ledger.

Trust: the coordinator chooses which pending updates fill a buffer (`fedfabric.fl_worker`
takes them in commit order, from the ``UpdateSubmitted`` events). The contract checks only
that they are pending; the choice, and every update left waiting, is on the ledger.
"""

from __future__ import annotations

import asyncio
import decimal
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fedfabric.chaincode import Context
from fedfabric.chaincode.fl import _contract
from fedfabric.chaincode.fl import _fixedpoint as fx
from fedfabric.chaincode.fl._audit import aggregate_round
from fedfabric.chaincode.fl._encoding import canonical_json
from fedfabric.chaincode.fl._errors import FLError
from fedfabric.chaincode.fl._task import TaskSpec

if TYPE_CHECKING:
    from fedfabric.chaincode.fl._contract import FLContract

ONE = 1 << fx.FACTOR_BITS
_ASYNC = "async"


def update_id(worker: str, n: int) -> str:
    """The id of `worker`'s `n`-th update to an asynchronous task."""
    return f"{worker}#{n}"


def staleness_factor(spec: TaskSpec, tau: int) -> int:
    """The factor (units of 2**-30, at least 1) of an update `tau` versions stale.

    ``polynomial``: ``round((1 + tau) ** -exponent * 2**30)``, computed with `decimal` at 40
    digits (software arithmetic, the same on every CPU); ``constant``: ``2**30``.
    """
    rule = dict(spec.staleness)
    if rule["rule"] == "constant" or tau <= 0 or rule["exponent"] == 0:
        return ONE
    context = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
    exponent = decimal.Decimal(repr(rule["exponent"]))
    value = context.multiply(context.power(decimal.Decimal(1 + tau), -exponent), ONE)
    return max(1, int(value.to_integral_value(rounding=decimal.ROUND_HALF_EVEN, context=context)))


def aggregate_version(
    spec: TaskSpec, model: bytes, version: int, submissions: Sequence[tuple[Mapping, bytes]]
) -> tuple[bytes, dict]:
    """Make version ``version + 1`` from the encoded version `model` and the buffer's
    `submissions` (update record, encoded update), in the buffer's order.

    Returns the new encoded model and the record ``AggregateBuffer`` stores: the fields of
    `aggregate_round` (over the updates fresh enough) plus ``ids``, ``staleness`` (per
    update: id, base version, staleness, factor), ``version`` and the stale updates among
    ``excluded``.
    """
    fresh, factors, staleness, stale = [], [], [], []
    for record, blob in submissions:
        tau = version - record["base_version"]
        factor = staleness_factor(spec, tau)
        staleness.append(
            {
                "base_version": record["base_version"],
                "factor": factor,
                "id": record["id"],
                "staleness": tau,
            }
        )
        if tau > spec.max_staleness:
            reason = (
                f"stale: trained from version {record['base_version']}, {tau} versions "
                f"behind version {version} (max_staleness {spec.max_staleness})"
            )
            stale.append({"id": record["id"], "reason": reason})
        else:
            fresh.append((record, blob))
            factors.append(factor)
    new, record = aggregate_round(spec, model, fresh, factors)
    return new, {
        **record,
        "excluded": stale + record["excluded"],
        "ids": [r["id"] for r, _ in submissions],
        "staleness": staleness,
        "version": version + 1,
    }


def _parse(update: str) -> tuple[str, str, int]:
    """(MSP id, enrolment#, n) of an update id; `ChaincodeError` ``update-id`` if malformed."""
    worker, _, n = update.rpartition("#") if isinstance(update, str) else ("", "", "")
    msp_id, _, enrolment_hash = worker.rpartition(":")
    if not (msp_id and len(enrolment_hash) == 64 and n.isdigit() and int(n) >= 1):
        raise _contract._refusal(
            "update-id", f"{str(update)[:200]!r} is not '<msp id>:<enrolment#>#<n>'"
        )
    return msp_id, enrolment_hash, int(n)


def _parts(task: str, update: str) -> tuple[str, ...]:
    msp_id, enrolment_hash, n = _parse(update)
    return (task, _ASYNC, msp_id, enrolment_hash, f"{n:06d}")


async def _version(contract: FLContract, ctx: Context, task: str) -> int:
    return ((await contract._get_json(ctx, "version", task)) or {"version": 0})["version"]


async def submit_update(
    contract: FLContract,
    ctx: Context,
    spec: TaskSpec,
    base: int,
    update: bytes,
    num_samples: int,
) -> dict:
    """``SubmitUpdate`` of an asynchronous task: `base` is the version the update was
    trained from. See the module docstring for the checks; returns the update record."""
    refuse, task = _contract._refusal, spec.id
    if base < 0 or base >= spec.rounds:
        raise refuse("version", f"base version must be in 0..{spec.rounds - 1}, got {base}")
    if base > 0 and (await contract._round(ctx, task, base))["status"] != "aggregated":
        raise refuse("version", f"version {base} of {task!r} is not committed yet")
    if (await contract._round(ctx, task, spec.rounds))["status"] == "aggregated":
        raise refuse("done", f"task {task!r} has made all its {spec.rounds} versions")
    newer = base + spec.max_staleness + 1
    if newer < spec.rounds and (await contract._round(ctx, task, newer))["status"] == "aggregated":
        raise refuse(
            "stale",
            f"the update was trained from version {base}, but version {newer} is already "
            f"committed: more than max_staleness {spec.max_staleness} versions behind",
        )
    msp_id = await contract._caller_org(ctx, spec, base)
    identity = ctx.client_identity
    try:
        worker, enrolment_hash = _contract._worker_id(msp_id, identity.enrollment_id)
    except ValueError as exc:
        raise refuse("authorised", str(exc)) from exc
    slot = await contract._get_json(ctx, "slot", task, msp_id, enrolment_hash)
    slot = slot or {"count": 0, "pending": None}
    if slot["pending"] is not None:
        pending = await contract._get_json(ctx, "update", *_parts(task, slot["pending"]))
        if pending is not None and pending["sha256"] == hashlib.sha256(update).hexdigest():
            raise refuse("replay", f"identical update already recorded in tx {pending['tx_id']}")
        raise refuse(
            "pending",
            f"{worker} already has update {slot['pending']} waiting for aggregation; a "
            "worker has one pending update at a time",
        )
    n = slot["count"] + 1
    ident = update_id(worker, n)
    who = _contract._Submitter(msp_id, identity.enrollment_id, identity.id)
    async with contract._checks:
        record, tensors = await contract._admit(
            ctx, spec, base, who, update, num_samples, None, _contract._Pending()
        )
        assert tensors is not None  # _admit decoded them itself
        await contract._put_json(
            ctx, {"count": n, "pending": ident}, "slot", task, msp_id, enrolment_hash
        )
        record.update(base_version=base, id=ident, seq=n)
        parts = _parts(task, ident)
        return await contract._accept(ctx, spec, record, update, tensors, base, parts)


async def aggregate_buffer(
    contract: FLContract, ctx: Context, task: str, version: int, ids: list
) -> dict:
    """``AggregateBuffer``: make version ``version + 1`` from the pending updates `ids`."""
    refuse = _contract._refusal
    spec, stored = await contract._task(ctx, task)
    contract._require_driver(ctx, spec, stored, "AggregateBuffer")
    if spec.mode != _ASYNC:
        raise refuse("mode", f"task {task!r} is synchronous: AdvanceRound ends its rounds")
    current = await _version(contract, ctx, task)
    if current >= spec.rounds:
        raise refuse("done", f"task {task!r} has made all its {spec.rounds} versions")
    if version != current:
        raise refuse("version", f"the current version of {task!r} is {current}, not {version}")
    if len(ids) != spec.buffer_size or len(set(map(str, ids))) != len(ids):
        raise refuse(
            "buffer", f"expected {spec.buffer_size} distinct update ids, got {str(ids)[:300]}"
        )
    submissions = []
    for ident in ids:
        msp_id, enrolment_hash, _ = _parse(ident)
        slot = await contract._get_json(ctx, "slot", task, msp_id, enrolment_hash)
        if slot is None or slot["pending"] != ident:
            raise refuse("not-pending", f"update {ident} of {task!r} is not pending")
        parts = _parts(task, ident)
        record = await contract._get_json(ctx, "update", *parts)
        assert record is not None  # a pending slot always names a recorded update
        blob = await ctx.stub.get_state(contract._key(ctx, "blob", *parts))
        submissions.append((record, blob))
        await contract._put_json(
            ctx, {**slot, "pending": None}, "slot", task, msp_id, enrolment_hash
        )
    base = await contract._model_bytes(ctx, task, current)
    try:
        model, result = await asyncio.to_thread(aggregate_version, spec, base, current, submissions)
    except FLError as exc:
        raise _contract._translate(exc) from exc
    made = current + 1
    record = {**result, "round": made, "task": task, "tx_id": ctx.stub.tx_id}
    await ctx.stub.put_state(contract._key(ctx, "model", task, _contract._rnd(made)), model)
    await contract._put_json(ctx, record, "aggregate", task, _contract._rnd(made))
    await contract._put_json(ctx, {"tx_id": ctx.stub.tx_id, "version": made}, "version", task)
    state = await contract._round(ctx, task, made)
    identity = ctx.client_identity
    state = {
        **state,
        "advanced_by": _contract.worker_id(identity.msp_id, identity.cert_pem),
        "aggregated_tx": ctx.stub.tx_id,
        "status": "aggregated",
        "updates": record["ids"],
    }
    await contract._put_json(ctx, state, "round", task, _contract._rnd(made))
    await contract._count_contributions(ctx, task, submissions, record)
    nxt = made + 1 if made < spec.rounds else None
    if nxt is not None:
        await contract._open(ctx, task, nxt)
    event = {
        "excluded": [e["id"] for e in record["excluded"]],
        "model_digest": record["model_digest"],
        "next_round": nxt,
        "round": made,
        "task": task,
        "used": record["used"],
        "version": made,
    }
    ctx.stub.set_event("AggregateCommitted", canonical_json(event))
    return record


async def state(contract: FLContract, ctx: Context, task: str) -> dict:
    """``GetAsyncState``: the current version, the pending update records (by key order,
    not commit order: the ``UpdateSubmitted`` events give that), each worker's slot (its
    update count and pending id) and the current version's aggregate record (null for
    version 0)."""
    spec, _ = await contract._task(ctx, task)
    if spec.mode != _ASYNC:
        raise _contract._refusal("mode", f"task {task!r} is synchronous")
    current = await _version(contract, ctx, task)
    pending, workers = [], {}
    for (_, msp_id, enrolment_hash), value in await contract._scan(ctx, "slot", task):
        slot = workers[f"{msp_id}:{enrolment_hash}"] = json.loads(value)
        if slot["pending"] is not None:
            pending.append(await contract._get_json(ctx, "update", *_parts(task, slot["pending"])))
    last = await contract._get_json(ctx, "aggregate", task, _contract._rnd(current))
    return {
        "last": last,
        "pending": pending,
        "rounds": spec.rounds,
        "task": task,
        "version": current,
        "workers": workers,
    }


async def get_update(contract: FLContract, ctx: Context, task: str, ident: str) -> bytes:
    """The encoded update `ident` of an asynchronous task (``GetUpdate``)."""
    blob = await ctx.stub.get_state(contract._key(ctx, "blob", *_parts(task, ident)))
    if not blob:
        raise _contract._refusal("not-found", f"{task!r} has no update {ident}")
    return blob


async def audit_page(
    contract: FLContract, ctx: Context, spec: TaskSpec, stored: dict, start: int, page: int
) -> dict:
    """``GetAudit`` of an asynchronous task: like a round's entry, each version's state,
    aggregate and update records (the buffer's, in its order; for the open version, the
    pending ones), whole versions up to `page` records."""
    task = spec.id
    rounds: list[dict] = []
    records = 0
    for version in range(start, spec.rounds + 1):
        round_state = await contract._round(ctx, task, version)
        if round_state["status"] == "new":
            break
        aggregate = await contract._get_json(ctx, "aggregate", task, _contract._rnd(version))
        if aggregate is not None:
            updates = [
                await contract._get_json(ctx, "update", *_parts(task, i)) for i in aggregate["ids"]
            ]
        else:
            updates = (await state(contract, ctx, task))["pending"]
        if rounds and records + len(updates) > page:
            return {"next_round": version, "rounds": rounds, "task": stored}
        records += len(updates)
        rounds.append(
            {"aggregate": aggregate, "round": version, "state": round_state, "updates": updates}
        )
    return {"next_round": None, "rounds": rounds, "task": stored}
