"""`FLContract` (contract name ``fl``): federated-learning tasks, rounds and updates on the ledger.

World state (composite keys; rounds are zero-padded to six digits so they sort)::

    fl.task      [task]                        task JSON + initial model digest
    fl.model     [task, round]                 encoded global model after `round` (0: initial)
    fl.round     [task, round]                 {"status": "open" | "aggregated", ...}
    fl.update    [task, round, msp, enrolment#]  update record (worker, samples, digests, tx)
    fl.blob      [task, round, msp, enrolment#]  the encoded update bytes as submitted
    fl.digest    [task, content digest]        who submitted this content first (replays)
    fl.worker    [task, msp, enrolment#]         the worker's latest record (history = all)
    fl.aggregate [task, round]                 rule, updates used / excluded / clipped, digests

``enrolment#`` is the SHA-256 (hex) of the submitter's enrolment id (its certificate's
``hf.EnrollmentID``, else its CN), so all certificates of one enrolment are one worker; its id is
``"<msp id>:<enrolment#>"``. Concurrent submissions write disjoint keys and only read keys
that change between rounds, so they never conflict with each other (MVCC).

Rounds: ``CreateTask`` opens round 1; workers ``SubmitUpdate`` to the open round; one
``AdvanceRound`` aggregates it, stores the new global model and opens the next round. A round
not yet opened reads as ``{"status": "new"}``.

Every refusal is a `ChaincodeError` whose message starts with the check's name
(``round-open: ...``) and whose payload is ``{"check": name}``.

Queries never return more than one model or update: ``GetAudit`` is an index of records
(about 0.6 KB per update) and the bytes come one by one from ``GetGlobalModel`` and
``GetUpdate``, so an audit works for any model that fits a transaction.

Largest model that fits (measured on Fabric 3.1.5 as set up by `fedfabric.network`; the 50 MB
commits re-measured on the pinned 3.0 snapshot 695dd57e; orderer ``AbsoluteMaxBytes`` 99 MiB,
100 MiB gRPC messages between peer and chaincode server): an update's bytes travel twice in one
transaction (proposal arguments and write set) and twice in the peer's TRANSACTION message to
the chaincode (its input and the signed proposal). A 50.0 MB update (12.5 M float32 parameters)
and a 50.0 MB initial model commit; a 52 MB initial model is refused by the orderer
(``BAD_REQUEST: message payload is 104005763 bytes and exceeds maximum allowed 103809024``) and
at 56 MB the peer's stream to the chaincode fails (``error sending: chaincode stream
terminated``). `MAX_UPDATE_BYTES` (50 000 000) caps a task's ``max_update_bytes`` and its
float32 model, so the largest model is 12.5 M parameters (the global model is always float32);
updates of such a model may use fp16 or int8 to be smaller. The 4 MB default of older peers
(fabric#4245) applies to neither. On the snapshot a 50 MB ``CreateTask`` took 27 s and a 50 MB
``SubmitUpdate`` 16 s to commit (3.1.5: 14 s, 11 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Mapping

import numpy as np
from cryptography import x509

from fedfabric.chaincode import (
    ChaincodeError,
    Context,
    Contract,
    enrollment_id,
    evaluate,
    submit,
)
from fedfabric.chaincode.fl import _fixedpoint as fx
from fedfabric.chaincode.fl._audit import aggregate_round
from fedfabric.chaincode.fl._encoding import (
    canonical_json,
    decode_update,
    encode_model,
    read_header,
)
from fedfabric.chaincode.fl._errors import AggregationError, FLError, TaskError, UpdateError
from fedfabric.chaincode.fl._task import TaskSpec, task_drivers
from fedfabric.chaincode.fl._validation import (
    Validator,
    apply_update,
    judge,
    validator_from_settings,
)

_STATUS = {
    "role": 403,
    "authorised": 403,
    "coordinator": 403,
    "not-found": 404,
    "exists": 409,
    "replay": 409,
}


def _refusal(check: str, detail: str) -> ChaincodeError:
    return ChaincodeError(
        f"{check}: {detail}",
        status=_STATUS.get(check, 400),
        payload=canonical_json({"check": check}),
    )


def _translate(exc: FLError, prefix: str = "") -> ChaincodeError:
    """The one place where this package's errors become chaincode refusals."""
    if isinstance(exc, UpdateError):
        check, detail = exc.check, exc.detail
    elif isinstance(exc, TaskError):
        check, detail = "task", str(exc)
    elif isinstance(exc, AggregationError):
        check, detail = "aggregation", str(exc)
    else:
        check, detail = "fl", str(exc)
    if prefix:
        check, detail = prefix, f"{check}: {detail}"
    return _refusal(check, detail)


def _rnd(round_no: int) -> str:
    return f"{round_no:06d}"


def worker_id(msp_id: str, cert_pem: bytes) -> str:
    """The id the contract gives the holder of a certificate: ``"<msp id>:<sha256 of its
    enrolment id>"``, so every certificate of one enrolment is the same worker. Raises
    ValueError for a certificate without an enrolment id."""
    return _worker_id(msp_id, enrollment_id(x509.load_pem_x509_certificate(cert_pem)))[0]


def _worker_id(msp_id: str, enrolment: str | None) -> tuple[str, str]:
    if not enrolment:
        raise ValueError(f"a {msp_id} certificate has no enrolment id (hf.EnrollmentID or CN)")
    enrolment_hash = hashlib.sha256(enrolment.encode()).hexdigest()
    return f"{msp_id}:{enrolment_hash}", enrolment_hash


def squared_norm(tensors: Mapping[str, np.ndarray]) -> int:
    """Exact squared L2 norm of float tensors, in fixed-point units squared."""
    return sum(fx.sum_squares(fx.to_fixed(t)) for t in tensors.values())


def check_update(spec: TaskSpec, update: bytes) -> dict[str, np.ndarray]:
    """Every check of an update's bytes against its task; return the decoded tensors.

    Pure and deterministic (CPU work: the contract runs it off the event loop), so a worker
    or the in-memory baseline knows before submitting what every endorser will say about the
    content. Raises `UpdateError` naming the check (``size``, ``format``, ..., ``norm``).
    The checks that need the ledger (round open, authorised, replay) are not part of it.
    """
    tensors = decode_update(update, spec.layout, max_bytes=spec.max_update_bytes)
    try:
        squares = squared_norm(tensors)
    except AggregationError as exc:
        raise UpdateError("norm", f"{exc}, so the norm exceeds {spec.norm_bound}") from exc
    if squares > fx.fixed_scalar(spec.norm_bound) ** 2:
        norm = math.sqrt(squares) / fx.SCALE
        raise UpdateError("norm", f"L2 norm {norm:.6g} exceeds the bound {spec.norm_bound}")
    return tensors


class FLContract(Contract):
    """The federated-learning contract; see the module docstring for the ledger layout.

    Settings: ``validator=module:function`` and ``validation_data=/path.npz`` configure
    org-private validation (see `_validation`); ``msp_id`` names this org in refusals.
    Tests may pass a `validator` callable directly.

    Example (a client)::

        contract.submit("fl:SubmitUpdate", "digits", "3", encoded_update, "600")
    """

    name = "fl"

    def __init__(
        self, settings: Mapping[str, str] | None = None, *, validator: Validator | None = None
    ) -> None:
        super().__init__(settings)
        self._validator = (
            validator if validator is not None else validator_from_settings(self.settings)
        )
        self._baselines: dict[tuple[str, int, str], float] = {}

    # -- ledger helpers ------------------------------------------------------------------

    @staticmethod
    def _key(ctx: Context, kind: str, *parts: str) -> str:
        return ctx.stub.create_composite_key(f"fl.{kind}", list(parts))

    async def _get_json(self, ctx: Context, kind: str, *parts: str) -> dict | None:
        raw = await ctx.stub.get_state(self._key(ctx, kind, *parts))
        return json.loads(raw) if raw else None

    async def _put_json(self, ctx: Context, value: object, kind: str, *parts: str) -> None:
        await ctx.stub.put_state(self._key(ctx, kind, *parts), canonical_json(value))

    async def _scan(self, ctx: Context, kind: str, *parts: str) -> list[tuple[list[str], bytes]]:
        found = []
        async for key, value in ctx.stub.get_state_by_partial_composite_key(
            f"fl.{kind}", list(parts)
        ):
            found.append((ctx.stub.split_composite_key(key)[1], value))
        return found

    async def _task(self, ctx: Context, task: str) -> tuple[TaskSpec, dict]:
        stored = await self._get_json(ctx, "task", task)
        if stored is None:
            raise _refusal("not-found", f"task {task!r} does not exist")
        return TaskSpec.from_json(stored["spec"]), stored

    async def _model_bytes(self, ctx: Context, task: str, round_no: int) -> bytes:
        raw = await ctx.stub.get_state(self._key(ctx, "model", task, _rnd(round_no)))
        if not raw:
            raise _refusal("not-found", f"task {task!r} has no global model for round {round_no}")
        return raw

    async def _round(self, ctx: Context, task: str, round_no: int) -> dict:
        return await self._get_json(ctx, "round", task, _rnd(round_no)) or {"status": "new"}

    @staticmethod
    def _split_worker(worker: str) -> tuple[str, str]:
        msp_id, _, enrolment_hash = worker.rpartition(":")
        if not msp_id or len(enrolment_hash) != 64:
            raise _refusal("worker", f"{worker!r} is not '<msp id>:<sha256 of subject>'")
        return msp_id, enrolment_hash

    @staticmethod
    def _require_admin(ctx: Context, action: str) -> None:
        identity = ctx.client_identity
        if identity.role != "admin":
            raise _refusal(
                "role",
                f"{action} needs an admin; {identity.msp_id} {identity.id} is {identity.role}",
            )

    @classmethod
    def _require_driver(cls, ctx: Context, spec: TaskSpec, stored: dict, action: str) -> None:
        """Only admins of the task's driving organisations (its `coordinators`, or the
        organisation that created it) may end its rounds."""
        cls._require_admin(ctx, action)
        msp_id = ctx.client_identity.msp_id
        drivers = task_drivers(stored)
        if msp_id not in drivers:
            raise _refusal(
                "coordinator",
                f"{action}: {msp_id} does not drive task {spec.id!r} (its coordinators: "
                f"{', '.join(drivers)})",
            )

    # -- transactions --------------------------------------------------------------------

    @submit
    async def CreateTask(self, ctx: Context, task: dict, initial_model: bytes) -> dict:
        """Create a task (admin only) from its JSON spec and the encoded initial model, and
        open its round 1."""
        self._require_admin(ctx, "CreateTask")
        try:
            spec = TaskSpec.from_json(task)
        except FLError as exc:
            raise _translate(exc) from exc
        if await self._get_json(ctx, "task", spec.id) is not None:
            raise _refusal("exists", f"task {spec.id!r} already exists")
        try:
            tensors = decode_update(initial_model, spec.layout)
            squared_norm(tensors)  # range check: every value within the fixed-point range
        except FLError as exc:
            raise _translate(exc, "initial-model") from exc
        model = encode_model(tensors, spec.layout)
        stored = {
            "created_by": ctx.client_identity.msp_id,
            "created_tx": ctx.stub.tx_id,
            "initial_model_digest": read_header(model)["content_digest"],
            "spec": spec.to_json(),
        }
        await self._put_json(ctx, stored, "task", spec.id)
        await ctx.stub.put_state(self._key(ctx, "model", spec.id, _rnd(0)), model)
        await self._open(ctx, spec.id, 1)
        return stored

    @submit
    async def SubmitUpdate(
        self, ctx: Context, task: str, round_no: int, update: bytes, num_samples: int
    ) -> dict:
        """Record the caller's encoded update for an open round, after every check.

        The worker is the transaction creator (MSP id and X.509 subject). Checks, each a
        refusal naming it: ``not-found``, ``round-open``, ``authorised``, ``num-samples``,
        ``replay`` / ``one-per-round``, ``size``, ``format``, ``encoding-version``,
        ``quantization``, ``compression``, ``dtype``, ``tensor-names``, ``shapes``,
        ``layout``, ``non-finite``, ``digest``, ``norm``; then ``private-validation`` when
        this org runs a validator and the task sets a threshold.
        """
        spec, _ = await self._task(ctx, task)
        state = await self._round(ctx, task, round_no)
        if state["status"] != "open":
            raise _refusal("round-open", f"round {round_no} of {task!r} is {state['status']}")
        identity = ctx.client_identity
        msp_id, subject = identity.msp_id, identity.id
        if not spec.allows(msp_id, subject):
            raise _refusal("authorised", f"{msp_id} {subject} may not submit to task {task!r}")
        if not 1 <= num_samples <= spec.max_samples:
            raise _refusal(
                "num-samples", f"num_samples must be in 1..{spec.max_samples}, got {num_samples}"
            )
        try:
            worker, enrolment_hash = _worker_id(msp_id, identity.enrollment_id)
        except ValueError as exc:
            raise _refusal("authorised", str(exc)) from exc
        parts = (task, _rnd(round_no), msp_id, enrolment_hash)
        sha256 = hashlib.sha256(update).hexdigest()
        previous = await self._get_json(ctx, "update", *parts)
        if previous is not None:
            if previous["sha256"] == sha256:
                raise _refusal(
                    "replay",
                    f"identical update already recorded in tx "
                    f"{previous['tx_id']} for round {round_no}",
                )
            raise _refusal("one-per-round", f"{worker} already submitted to round {round_no}")
        try:
            tensors = await asyncio.to_thread(check_update, spec, update)
        except FLError as exc:
            raise _translate(exc) from exc
        header = read_header(update)
        digest = header["content_digest"]
        first = await self._get_json(ctx, "digest", task, digest)
        if first is not None:
            raise _refusal(
                "replay",
                f"content {digest[:16]}… was already submitted by "
                f"{first['worker']} in round {first['round']}",
            )
        # Read by every org, validator or not, so the read set never depends on the validator.
        base = await self._model_bytes(ctx, task, round_no - 1)
        record = {
            "digest": digest,
            "msp_id": msp_id,
            "num_samples": num_samples,
            "quantization": header["quantization"],
            "round": round_no,
            "sha256": sha256,
            "size": len(update),
            "subject": subject,
            "task": task,
            "tx_id": ctx.stub.tx_id,
            "worker": worker,
        }
        await ctx.stub.put_state(self._key(ctx, "blob", *parts), update)
        await self._put_json(ctx, record, "update", *parts)
        await self._put_json(ctx, {"round": round_no, "worker": worker}, "digest", task, digest)
        await self._put_json(ctx, record, "worker", task, msp_id, enrolment_hash)
        ctx.stub.set_event(
            "UpdateSubmitted",
            canonical_json(
                {k: record[k] for k in ("digest", "num_samples", "round", "task", "worker")}
            ),
        )
        # Every read and write is decided above; the private check can only refuse.
        if self._validator is not None and spec.validation_threshold is not None:
            await self._validate(spec, round_no, base, tensors, worker)
        return record

    async def _validate(
        self,
        spec: TaskSpec,
        round_no: int,
        base: bytes,
        tensors: Mapping[str, np.ndarray],
        worker: str,
    ) -> None:
        key = (spec.id, round_no, hashlib.sha256(base).hexdigest())
        org = self.settings.get("msp_id", "this org")
        validator = self._validator
        assert validator is not None  # SubmitUpdate validates only when it has one

        def run() -> tuple[float, float]:
            model = decode_update(base, spec.layout)
            if key not in self._baselines:
                self._baselines[key] = validator(model)
            return self._baselines[key], validator(apply_update(model, tensors))

        try:
            baseline, candidate = await asyncio.to_thread(run)
        except Exception as exc:
            raise _refusal("private-validation", f"{org}: validator failed: {exc!r}") from exc
        reason = judge(baseline, candidate, spec.validation_threshold or 0.0)
        if reason is not None:
            raise _refusal("private-validation", f"{org} refuses the update of {worker}: {reason}")

    @submit
    async def AdvanceRound(self, ctx: Context, task: str, round_no: int) -> dict:
        """End an open round (admin only), the only way a round ends: once it holds at least
        `min_updates` updates, aggregate them with the task's rule, store the new global model
        and open the next round (if the task has one), all in one transaction.

        Every endorser recomputes the same bytes (fixed point, ledger key order). Returns the
        aggregate record; emits ``AggregateCommitted`` with the new model's digest, the
        updates used and excluded and ``next_round`` (null after the last round).
        """
        spec, stored = await self._task(ctx, task)
        self._require_driver(ctx, spec, stored, "AdvanceRound")
        state = await self._round(ctx, task, round_no)
        if state["status"] != "open":
            raise _refusal("round-state", f"round {round_no} is {state['status']}, not open")
        base = await self._model_bytes(ctx, task, round_no - 1)
        submissions = []
        for parts, value in await self._scan(ctx, "update", task, _rnd(round_no)):
            blob = await ctx.stub.get_state(self._key(ctx, "blob", *parts))
            submissions.append((json.loads(value), blob))
        if len(submissions) < spec.min_updates:
            raise _refusal(
                "min-updates",
                f"round {round_no} has {len(submissions)} of {spec.min_updates} updates",
            )
        try:
            model, result = await asyncio.to_thread(aggregate_round, spec, base, submissions)
        except FLError as exc:
            raise _translate(exc) from exc
        nxt = round_no + 1 if round_no < spec.rounds else None
        record = {**result, "round": round_no, "task": task, "tx_id": ctx.stub.tx_id}
        await ctx.stub.put_state(self._key(ctx, "model", task, _rnd(round_no)), model)
        await self._put_json(ctx, record, "aggregate", task, _rnd(round_no))
        updates = [r["worker"] for r, _ in submissions]
        identity = ctx.client_identity
        state = {
            **state,
            "advanced_by": worker_id(identity.msp_id, identity.cert_pem),
            "aggregated_tx": ctx.stub.tx_id,
            "status": "aggregated",
            "updates": updates,
        }
        await self._put_json(ctx, state, "round", task, _rnd(round_no))
        if nxt is not None:
            await self._open(ctx, task, nxt)
        ctx.stub.set_event(
            "AggregateCommitted",
            canonical_json(
                {
                    "excluded": [e["id"] for e in record["excluded"]],
                    "model_digest": record["model_digest"],
                    "next_round": nxt,
                    "round": round_no,
                    "task": task,
                    "used": record["used"],
                }
            ),
        )
        return record

    async def _open(self, ctx: Context, task: str, round_no: int) -> None:
        state = {"opened_tx": ctx.stub.tx_id, "round": round_no, "status": "open", "task": task}
        await self._put_json(ctx, state, "round", task, _rnd(round_no))

    # -- queries -------------------------------------------------------------------------

    @evaluate
    async def GetTask(self, ctx: Context, task: str) -> dict:
        """The task record: spec, creator, creating transaction and initial model digest."""
        _, stored = await self._task(ctx, task)
        return stored

    @evaluate
    async def GetGlobalModel(self, ctx: Context, task: str, round_no: int) -> bytes:
        """The encoded global model after `round_no` (0: the initial model)."""
        await self._task(ctx, task)
        return await self._model_bytes(ctx, task, round_no)

    @evaluate
    async def GetRoundUpdates(self, ctx: Context, task: str, round_no: int) -> dict:
        """The round's state, its update records (without the update bytes) and its aggregate
        record (null until the round is aggregated)."""
        await self._task(ctx, task)
        records = await self._scan(ctx, "update", task, _rnd(round_no))
        return {
            "aggregate": await self._get_json(ctx, "aggregate", task, _rnd(round_no)),
            "round": round_no,
            "state": await self._round(ctx, task, round_no),
            "task": task,
            "updates": [json.loads(v) for _, v in records],
        }

    @evaluate
    async def GetWorkerHistory(self, ctx: Context, task: str, worker: str) -> list:
        """Every submission of `worker` (``"<msp id>:<enrolment#>"``) to `task`, in peer order."""
        msp_id, enrolment_hash = self._split_worker(worker)
        key = self._key(ctx, "worker", task, msp_id, enrolment_hash)
        history = []
        async for entry in ctx.stub.get_history_for_key(key):
            history.append(
                {
                    "is_delete": entry.is_delete,
                    "record": json.loads(entry.value) if entry.value else None,
                    "timestamp": entry.timestamp.isoformat() if entry.timestamp else None,
                    "tx_id": entry.tx_id,
                }
            )
        return history

    @evaluate
    async def GetContributions(self, ctx: Context, task: str) -> dict:
        """Per org: updates submitted, samples claimed, updates used and excluded."""
        await self._task(ctx, task)
        orgs: dict[str, dict[str, int]] = {}

        def org(worker_or_msp: str) -> dict[str, int]:
            msp = worker_or_msp.rpartition(":")[0] or worker_or_msp
            return orgs.setdefault(msp, {"excluded": 0, "samples": 0, "updates": 0, "used": 0})

        for _, value in await self._scan(ctx, "update", task):
            record = json.loads(value)
            org(record["msp_id"])["updates"] += 1
            org(record["msp_id"])["samples"] += record["num_samples"]
        for _, value in await self._scan(ctx, "aggregate", task):
            record = json.loads(value)
            for worker in record["used"]:
                org(worker)["used"] += 1
            for item in record["excluded"]:
                org(item["id"])["excluded"] += 1
        return {"orgs": orgs, "task": task}

    @evaluate
    async def GetUpdate(self, ctx: Context, task: str, round_no: int, worker: str) -> bytes:
        """The encoded update `worker` (``"<msp id>:<enrolment#>"``) submitted to `round_no`."""
        await self._task(ctx, task)
        msp_id, enrolment_hash = self._split_worker(worker)
        blob = await ctx.stub.get_state(
            self._key(ctx, "blob", task, _rnd(round_no), msp_id, enrolment_hash)
        )
        if not blob:
            raise _refusal("not-found", f"{worker} has no update in round {round_no} of {task!r}")
        return blob

    @evaluate
    async def GetAudit(self, ctx: Context, task: str) -> dict:
        """The audit index of a task: its record and, per round, state, aggregate and records.

        No bytes travel in it (about 0.6 KB per update), so it stays far below gRPC message
        limits; an auditor fetches each model with ``GetGlobalModel`` and each update with
        ``GetUpdate`` and hands all three to `verify_audit`.
        """
        _, stored = await self._task(ctx, task)
        rounds = []
        for parts, value in await self._scan(ctx, "round", task):
            records = await self._scan(ctx, "update", task, parts[1])
            rounds.append(
                {
                    "aggregate": await self._get_json(ctx, "aggregate", task, parts[1]),
                    "round": int(parts[1]),
                    "state": json.loads(value),
                    "updates": [json.loads(raw) for _, raw in records],
                }
            )
        return {"rounds": rounds, "task": stored}
