"""`FLContract` (contract name ``fl``): federated-learning tasks, rounds and updates on the ledger.

World state (composite keys; rounds are zero-padded to six digits so they sort)::

    fl.task      [task]                          task JSON + initial model digest
    fl.model     [task, round]                   encoded global model after `round` (0: initial)
    fl.round     [task, round]                   {"status": "open" | "aggregated", ...}
    fl.update    [task, round, msp, enrolment#]  update record (worker, samples, digests, tx)
    fl.blob      [task, round, msp, enrolment#]  the encoded update bytes as submitted
    fl.digest    [task, fingerprint]             who submitted this content first (replays)
    fl.worker    [task, msp, enrolment#]         the worker's latest record (history = all)
    fl.member    [task, msp, enrolment#]         a worker its org's admin registered
    fl.members   [task, msp]                     how many workers the org has registered
    fl.seal      [task, msp]                     written by each update of the org's workers;
                                                 its key-level policy: the org's own peer
    fl.batch     [task, round, tx]               a device batch: submitter, accepted devices,
                                                 refused entries (device, check, reason)
    fl.aggregate [task, round]                   rule, updates used / excluded / clipped, digests
    fl.contrib   [task, msp]                     the org's totals over aggregated rounds
    fl.admitted  [task, msp]                     an org admitted while the task ran:
                                                 msp_id, from_round, admitted_tx, admitted_by
    fl.declined  [task, round, msp, enrolment#]  a worker that submits nothing to the round
                                                 (``DeclineRound``): worker, round, reason,
                                                 declined_tx

``enrolment#`` is the SHA-256 (hex) of the submitter's enrolment id (its certificate's
``hf.EnrollmentID``, else its CN), so all certificates of one enrolment are one worker; its id is
``"<msp id>:<enrolment#>"``. Concurrent submissions write disjoint keys and only read keys
that change between rounds, so they never conflict with each other (MVCC).

Workers: an organisation's admin registers its workers for a task (``RegisterWorkers``, at
most the task's ``max_workers_per_org`` over the task's life; ``RemoveWorkers`` stops one
without freeing its place), and only registered workers of allowed organisations submit,
once per round. Each update also writes (blindly, so concurrent ones never conflict) its
organisation's ``fl.seal`` key, whose key-level endorsement policy is that organisation's
peer: an update commits only if its own organisation endorsed it, so a worker cannot pick
endorsers that spare it its own organisation's stricter check (``own_org_threshold``).
The ``fingerprint`` is the SHA-256 of an update's fixed-point values (what
aggregation sees): the same content again from the same worker is a ``replay``, from another
worker a ``copy``, and the first submitter keeps the credit. An all-zero update has no
fingerprint and may be sent any number of times.

Organisations: the task's ``allowed_orgs`` are its founding organisations. An admin of a
driving organisation may admit another one while the task runs (``AdmitOrganisation``, say
an organisation that joined the channel later), from the round after the open one (for an
asynchronous task, from the next model version: its updates' base version must be at least
the current version + 1). The admission is its own ``fl.admitted`` key and the ``fl.task``
key stays as it was, so updates in flight, which all read ``fl.task``, do not conflict with
it; a founding organisation's update reads no admission key at all. The admitted org's
admin registers its workers at once; they submit from ``from_round`` on (before it:
``authorised``). Admitting an admitted org again returns its record and writes nothing.

Declining: a registered worker whose update was refused (or that failed) may say so on the
ledger (``DeclineRound``), so that a coordinator on another host, who never sees that
refusal, closes the round without waiting for it. The round's aggregate does not change.

Devices: an organisation's gateway may submit many of its devices' updates in one
``SubmitBatch``, each signed by its device (see `_batch`); each accepted one is recorded
exactly as ``SubmitUpdate`` records it, and a refused one is named in the batch record.

Rounds: ``CreateTask`` opens round 1; workers ``SubmitUpdate`` to the open round; one
``AdvanceRound`` aggregates it, stores the new global model and opens the next round. A round
not yet opened reads as ``{"status": "new"}``. An asynchronous task (``mode: "async"``) has
model versions instead: ``SubmitUpdate`` takes the update's base version and
``AggregateBuffer`` makes each version from a buffer of pending updates (keys, checks and
the staleness weighting in `fedfabric.chaincode.fl._async`).

Every refusal is a `ChaincodeError` whose message starts with the check's name
(``round-open: ...``) and whose payload is ``{"check": name}``.

Queries never return more than one model or update: ``GetAudit`` is an index of records
(about 0.6 KB per update) in pages of whole rounds (`AUDIT_PAGE_UPDATES` records at most,
unless one round holds more) and the bytes come one by one from ``GetGlobalModel`` and
``GetUpdate``, so an audit works for any number of rounds and any model that fits a
transaction. ``GetContributions`` reads per-organisation totals that ``AdvanceRound`` keeps.

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
import datetime
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from cryptography import x509
from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2

from fedfabric.chaincode import (
    ChaincodeError,
    Context,
    Contract,
    enrollment_id,
    evaluate,
    submit,
)
from fedfabric.chaincode.fl import _async
from fedfabric.chaincode.fl import _fixedpoint as fx
from fedfabric.chaincode.fl._audit import aggregate_round
from fedfabric.chaincode.fl._batch import (
    Authorities,
    BatchEntry,
    Device,
    decode_batch,
    entry_message,
    verify_certificate,
    verify_signature,
)
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
    task_validator,
    validator_from_settings,
)

AUDIT_PAGE_UPDATES = 1000
# AdvanceRound reads a round's updates in one scan (the peer sends 100 results a message)
# when 100 of the largest fit a message well below the 100 MiB gRPC limit; else key by key.
SCAN_BLOBS_UP_TO = 500_000
_MSP_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAX_REASON = 300
"""Characters a worker's reason to decline a round may have (``DeclineRound``)."""

_STATUS = {
    "role": 403,
    "authorised": 403,
    "registered": 403,
    "coordinator": 403,
    "not-found": 404,
    "exists": 409,
    "replay": 409,
    "copy": 409,
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


def worker_enrolment(cert_pem: bytes) -> str:
    """The enrolment id an org admin registers for the holder of a certificate
    (``RegisterWorkers``). Raises ValueError for a certificate without one."""
    enrolment = enrollment_id(x509.load_pem_x509_certificate(cert_pem))
    if not enrolment:
        raise ValueError("the certificate has no enrolment id (hf.EnrollmentID or CN)")
    return enrolment


def _worker_id(msp_id: str, enrolment: str | None) -> tuple[str, str]:
    if not enrolment:
        raise ValueError(f"a {msp_id} certificate has no enrolment id (hf.EnrollmentID or CN)")
    enrolment_hash = hashlib.sha256(enrolment.encode()).hexdigest()
    return f"{msp_id}:{enrolment_hash}", enrolment_hash


def _peer_policy(msp_id: str) -> bytes:
    """A key-level endorsement policy: a peer of `msp_id` (``SignaturePolicyEnvelope``)."""
    role = msp_principal_pb2.MSPRole(msp_identifier=msp_id, role=msp_principal_pb2.MSPRole.PEER)
    principal = msp_principal_pb2.MSPPrincipal(
        principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
        principal=role.SerializeToString(),
    )
    signed = policies_pb2.SignaturePolicy(signed_by=0)
    rule = policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(n=1, rules=[signed])
    )
    envelope = policies_pb2.SignaturePolicyEnvelope(version=0, rule=rule, identities=[principal])
    return envelope.SerializeToString()


def _enrolments(spec: TaskSpec, enrolment_ids: list) -> list[str]:
    """The distinct enrolment ids of a registry call, sorted; refused unless 1 to
    ``max_workers_per_org`` non-empty strings of at most 256 characters."""
    if not 1 <= len(enrolment_ids) <= spec.max_workers_per_org or not all(
        isinstance(e, str) and 0 < len(e) <= 256 for e in enrolment_ids
    ):
        raise _refusal(
            "enrolment-ids",
            f"expected a list of 1..{spec.max_workers_per_org} enrolment ids (non-empty "
            f"strings of at most 256 characters), got {str(enrolment_ids)[:200]}",
        )
    return sorted(set(enrolment_ids))


def _repeat(first: Mapping, worker: str, fingerprint: str) -> tuple[str, str]:
    """The refusal of content already on the record: a replay by its author, else a copy."""
    where = f"round {first['round']} (tx {first['tx_id']})"
    if first["worker"] == worker:
        return "replay", f"{worker} already submitted this content in {where}"
    return "copy", (
        f"the content {fingerprint[:16]}… was first submitted by {first['worker']} in {where}, "
        "who keeps the credit"
    )


def check_update(spec: TaskSpec, update: bytes) -> dict[str, np.ndarray]:
    """Every check of an update's bytes against its task; return the decoded tensors.

    Pure and deterministic (CPU work: the contract runs it off the event loop), so a worker
    or the in-memory baseline knows before submitting what every endorser will say about the
    content. Raises `UpdateError` naming the check (``size``, ``format``, ..., ``norm``).
    The checks that need the ledger (round open, authorised, replay) are not part of it.
    """
    return _checked(spec, update)[0]


def _checked(spec: TaskSpec, update: bytes) -> tuple[dict[str, np.ndarray], str | None]:
    """`check_update`, and the update's fingerprint (`fx.measure`) from the same pass."""
    tensors = decode_update(update, spec.layout, max_bytes=spec.max_update_bytes)
    try:
        squares, fingerprint = fx.measure([tensors[name] for name, _ in spec.layout.tensors])
    except AggregationError as exc:
        raise UpdateError("norm", f"{exc}, so the norm exceeds {spec.norm_bound}") from exc
    if squares > fx.fixed_scalar(spec.norm_bound) ** 2:
        norm = math.sqrt(squares) / fx.SCALE
        raise UpdateError("norm", f"L2 norm {norm:.6g} exceeds the bound {spec.norm_bound}")
    return tensors, fingerprint


@dataclass(frozen=True)
class _Submitter:
    """Whose update it is: the transaction creator (``SubmitUpdate``) or a batch's device."""

    msp_id: str
    enrolment: str | None
    subject: str


@dataclass
class _Pending:
    """What a transaction records before its next update (it does not read its own writes):
    update records by worker, first submitters by fingerprint; and, for a batch, the
    submitting org's registry by enrolment hash when it was read in one scan."""

    updates: dict[str, dict] = field(default_factory=dict)
    firsts: dict[str, dict] = field(default_factory=dict)
    members: dict[str, dict] | None = None  # the org's registry, when read at once

    def add(self, record: dict) -> None:
        self.updates[record["worker"]] = record
        if record["fingerprint"] is not None:
            self.firsts.setdefault(
                record["fingerprint"],
                {"round": record["round"], "tx_id": record["tx_id"], "worker": record["worker"]},
            )


def _announced(record: Mapping) -> dict:
    """What an update's chaincode event says of it (an asynchronous task's update also its
    id and base version)."""
    keys = ("base_version", "digest", "id", "num_samples", "round", "task", "worker")
    return {k: record[k] for k in keys if k in record}


def _checked_entries(
    spec: TaskSpec,
    entries: list[BatchEntry],
    msp_id: str,
    ca: x509.Certificate | None,
    when: datetime.datetime | None,
    channel: str,
    round_no: int,
) -> list[tuple[Device | FLError, tuple[None, str | None] | FLError | None]]:
    """A batch's pure checks in one thread hop, entry by entry: its device
    (`verify_certificate`), then its signature and content (`_checked`, whose tensors are
    dropped at once); each result or the error that refuses it."""
    results: list[tuple[Device | FLError, tuple[None, str | None] | FLError | None]] = []
    for entry in entries:
        try:
            device = verify_certificate(entry.certificate, msp_id, ca, when)
        except FLError as exc:
            results.append((exc, None))
            continue
        try:
            message = entry_message(channel, spec.id, round_no, entry.update, entry.num_samples)
            verify_signature(device, entry.signature, message)
            results.append((device, (None, _checked(spec, entry.update)[1])))
        except FLError as exc:
            results.append((device, exc))
    return results


def _refused_entry(index: int, worker: str | None, exc: ChaincodeError) -> dict:
    """A refused batch entry as the batch record lists it."""
    return {
        "check": json.loads(exc.payload)["check"],
        "entry": index,
        "reason": exc.message,
        "worker": worker,
    }


class FLContract(Contract):
    """The federated-learning contract; see the module docstring for the ledger layout.

    Settings: ``validator=module:function`` and ``validation_data=/path.npz`` configure
    org-private validation (see `_validation`); ``msp_id`` names this org in refusals;
    ``ca_certs`` is a folder of ``<MSP id>.pem``, each organisation's CA certificate, that
    ``SubmitBatch`` checks device certificates against (`fedfabric.network` gives every
    chaincode server the channel's MSP roots);
    ``max_concurrent_checks`` (default 2) bounds the updates decoded, checked and validated
    at once, so memory stays about that many times 36 bytes per parameter however many
    proposals arrive (the others wait). Tests may pass a `validator` callable directly.

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
        limit = self.settings.get("max_concurrent_checks", "2")
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(
                f"setting max_concurrent_checks must be an integer >= 1, got {limit!r}"
            )
        self._checks = asyncio.Semaphore(int(limit))
        self._authorities = Authorities(self.settings.get("ca_certs"))

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
            fx.measure(list(tensors.values()))  # range check: every value within fixed point
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
        ``registered``, ``replay`` / ``one-per-round``, ``size``, ``format``,
        ``encoding-version``, ``quantization``, ``compression``, ``dtype``,
        ``tensor-names``, ``shapes``, ``layout``, ``non-finite``, ``digest``, ``norm``,
        ``replay`` / ``copy``; then ``private-validation`` when this org runs a validator
        and the task sets a threshold.

        For an asynchronous task `round_no` is the version the update was trained from, and
        ``version``, ``done``, ``stale`` and ``pending`` replace ``round-open`` and
        ``one-per-round`` (see `_async`).
        """
        spec, _ = await self._task(ctx, task)
        if spec.mode == "async":
            return await _async.submit_update(self, ctx, spec, round_no, update, num_samples)
        msp_id = await self._submitting(ctx, spec, round_no)
        identity = ctx.client_identity
        async with self._checks:
            record, tensors = await self._admit(
                ctx, spec, round_no, _Submitter(msp_id, identity.enrollment_id, identity.id),
                update, num_samples, None, _Pending(),
            )  # fmt: skip
            assert tensors is not None  # _admit decoded them itself
            return await self._accept(ctx, spec, record, update, tensors, round_no - 1)

    async def _accept(
        self,
        ctx: Context,
        spec: TaskSpec,
        record: dict,
        update: bytes,
        tensors: Mapping[str, np.ndarray],
        base_no: int,
        parts: tuple[str, ...] | None = None,
    ) -> dict:
        """Write an admitted update trained from global model `base_no` (under `parts`, by
        default its round's keys), seal it, announce it, then run this org's private
        validation: every read and write is decided before, so that check can only refuse.
        The base model is read, by every org, only when the task validates."""
        base = b""
        if spec.validation_threshold is not None:
            base = await self._model_bytes(ctx, spec.id, base_no)
        await self._record(ctx, record, update, parts)
        await self._seal(ctx, spec.id, record["msp_id"])
        ctx.stub.set_event("UpdateSubmitted", canonical_json(_announced(record)))
        await self._validate(spec, base_no + 1, base, tensors, record["worker"])
        return record

    @submit
    async def SubmitBatch(self, ctx: Context, task: str, round_no: int, batch: bytes) -> dict:
        """Record the updates of the caller's organisation's devices, one batch
        (`fedfabric.chaincode.fl._batch` has its encoding).

        The caller is any identity of an allowed organisation M (its gateway); every entry
        must be a device of M: a certificate M's CA issued (``ca_certs`` setting), valid at
        the proposal's timestamp, of a device M registered for the task, which signed this
        update for this channel, task, round and sample count. Each entry then passes every
        check of ``SubmitUpdate`` and is recorded exactly as ``SubmitUpdate`` would record
        it. An entry that fails a check (``certificate``, ``signature`` or any check of
        ``SubmitUpdate``) is refused alone and the others count; with the task's
        ``batch_refusal: "batch"`` the whole transaction is refused (check ``batch``), naming
        every refused entry. Refusals of the whole batch: ``not-found``, ``round-open``,
        ``authorised``, ``batch-format``, and ``private-validation`` (an org's private
        judgement cannot differ per entry between endorsers, so it refuses the batch,
        naming the device; the gateway resubmits without it).

        Writes a batch record (``fl.batch``: submitter, accepted devices, refused entries
        with device, check and reason) and emits ``BatchSubmitted`` with the accepted
        updates and the refused entries. Returns the batch record and, under ``records``,
        the accepted update records.
        """
        spec, _ = await self._task(ctx, task)
        if spec.mode == "async":
            raise _refusal("mode", f"task {task!r} is asynchronous: devices submit one by one")
        msp_id = await self._submitting(ctx, spec, round_no)
        try:
            entries = decode_batch(batch)
        except FLError as exc:
            raise _translate(exc) from exc
        base = b""
        if spec.validation_threshold is not None:  # read by every org, validator or not
            base = await self._model_bytes(ctx, task, round_no - 1)
        async with self._checks:  # one update decoded at a time, none kept
            checks = await asyncio.to_thread(
                _checked_entries, spec, entries, msp_id, self._authorities.ca(msp_id),
                ctx.stub.timestamp, ctx.stub.channel_id, round_no,
            )  # fmt: skip
        pending = _Pending(members=await self._members(ctx, task, msp_id, len(entries)))
        accepted: list[tuple[dict, bytes]] = []
        refused: list[dict] = []
        for index, (entry, (device, checked)) in enumerate(zip(entries, checks, strict=True)):
            if isinstance(device, FLError):
                refused.append(_refused_entry(index, None, _translate(device)))
                continue
            who = _Submitter(msp_id, device.enrolment, device.subject)
            try:
                if isinstance(checked, UpdateError) and checked.check == "signature":
                    raise _translate(checked)  # before any other check: not the device's
                record, _ = await self._admit(
                    ctx, spec, round_no, who, entry.update, entry.num_samples, checked, pending
                )
            except ChaincodeError as exc:
                refused.append(_refused_entry(index, _worker_id(msp_id, device.enrolment)[0], exc))
                continue
            if self._validator is not None and spec.validation_threshold is not None:
                async with self._checks:
                    tensors = await asyncio.to_thread(decode_update, entry.update, spec.layout)
                    await self._validate(spec, round_no, base, tensors, record["worker"])
            pending.add(record)
            accepted.append((record, entry.update))
        if refused and spec.batch_refusal == "batch":
            raise _refusal(
                "batch",
                f"{len(refused)} of {len(entries)} entries refused (the task's batch_refusal "
                "is 'batch'): "
                + "; ".join(
                    f"entry {r['entry']} ({r['worker'] or 'unknown device'}): {r['reason']}"
                    for r in refused
                ),
            )
        for record, update in accepted:
            await self._record(ctx, record, update)
        if accepted:
            await self._seal(ctx, task, msp_id)
        identity = ctx.client_identity
        outcome = {
            "accepted": [r["worker"] for r, _ in accepted],
            "entries": len(entries),
            "refused": refused,
            "round": round_no,
            "submitter": worker_id(msp_id, identity.cert_pem),
            "task": task,
            "tx_id": ctx.stub.tx_id,
        }
        await self._put_json(ctx, outcome, "batch", task, _rnd(round_no), ctx.stub.tx_id)
        event = {**outcome, "accepted": [_announced(r) for r, _ in accepted]}
        ctx.stub.set_event("BatchSubmitted", canonical_json(event))
        return {**outcome, "records": [r for r, _ in accepted]}

    async def _members(
        self, ctx: Context, task: str, msp_id: str, entries: int
    ) -> dict[str, dict] | None:
        """The org's whole registry in one scan (about one ledger round trip a hundred
        members) when that is fewer round trips than one read an entry; else None."""
        counter = await self._get_json(ctx, "members", task, msp_id)
        if counter is None:
            return {}
        if counter["registered"] > 100 * entries:
            return None
        return {
            parts[-1]: json.loads(v) for parts, v in await self._scan(ctx, "member", task, msp_id)
        }

    async def _submitting(self, ctx: Context, spec: TaskSpec, round_no: int) -> str:
        """The caller's MSP id, if round `round_no` is open to the caller's org."""
        state = await self._round(ctx, spec.id, round_no)
        if state["status"] != "open":
            raise _refusal("round-open", f"round {round_no} of {spec.id!r} is {state['status']}")
        return await self._caller_org(ctx, spec, round_no)

    async def _caller_org(self, ctx: Context, spec: TaskSpec, round_no: int) -> str:
        """The caller's MSP id, if its org may submit to round `round_no` of the task (an
        asynchronous task's base version), else ``authorised``: a founding org always (its
        call reads no admission key), an admitted one from its ``from_round`` on."""
        msp_id = ctx.client_identity.msp_id
        if msp_id in spec.allowed_orgs:
            return msp_id
        admitted = await self._get_json(ctx, "admitted", spec.id, msp_id)
        if admitted is None:
            raise _refusal("authorised", f"{msp_id} may not submit to task {spec.id!r}")
        if round_no < admitted["from_round"]:
            unit = "base version" if spec.mode == "async" else "round"
            raise _refusal(
                "authorised",
                f"{msp_id} was admitted to task {spec.id!r} from {unit} "
                f"{admitted['from_round']} on, not {unit} {round_no}",
            )
        return msp_id

    async def _admitted(self, ctx: Context, task: str) -> dict[str, dict]:
        """The orgs admitted to `task` while it ran (their records by MSP id, sorted)."""
        return {parts[-1]: json.loads(v) for parts, v in await self._scan(ctx, "admitted", task)}

    async def _orgs(self, ctx: Context, spec: TaskSpec) -> list[str]:
        """Every organisation of the task, founding and admitted, sorted."""
        return sorted({*spec.allowed_orgs, *await self._admitted(ctx, spec.id)})

    async def _admit(
        self,
        ctx: Context,
        spec: TaskSpec,
        round_no: int,
        who: _Submitter,
        update: bytes,
        num_samples: int,
        checked: tuple[dict[str, np.ndarray] | None, str | None] | FLError | None,
        pending: _Pending,
    ) -> tuple[dict, dict[str, np.ndarray] | None]:
        """Every check of one update of `who` (an org's worker or device) that ``SubmitUpdate``
        and ``SubmitBatch`` share; the update record to write and the decoded tensors.

        `checked` is `_checked`'s result when the caller ran it already (else it runs here;
        the tensors returned are None when the caller dropped them);
        `pending` holds what this transaction records before this update (a transaction
        does not read its own writes). Raises the refusal naming the failed check.
        """
        task, msp_id = spec.id, who.msp_id
        if not 1 <= num_samples <= spec.max_samples:
            raise _refusal(
                "num-samples", f"num_samples must be in 1..{spec.max_samples}, got {num_samples}"
            )
        try:
            worker, enrolment_hash = _worker_id(msp_id, who.enrolment)
        except ValueError as exc:
            raise _refusal("authorised", str(exc)) from exc
        if pending.members is not None:
            member = pending.members.get(enrolment_hash)
        else:
            member = await self._get_json(ctx, "member", task, msp_id, enrolment_hash)
        if member is None or not member["active"]:
            state_word = "was removed from" if member else "is not registered for"
            raise _refusal(
                "registered",
                f"{worker} ({who.subject}) {state_word} task {task!r}; {msp_id}'s admin "
                "registers workers with RegisterWorkers",
            )
        sha256 = hashlib.sha256(update).hexdigest()
        previous = pending.updates.get(worker) or await self._get_json(
            ctx, "update", task, _rnd(round_no), msp_id, enrolment_hash
        )
        if previous is not None:
            if previous["sha256"] == sha256:
                raise _refusal(
                    "replay",
                    f"identical update already recorded in tx "
                    f"{previous['tx_id']} for round {round_no}",
                )
            raise _refusal("one-per-round", f"{worker} already submitted to round {round_no}")
        try:
            if checked is None:
                checked = await asyncio.to_thread(_checked, spec, update)
            if isinstance(checked, FLError):
                raise checked
        except FLError as exc:
            raise _translate(exc) from exc
        tensors, fingerprint = checked
        if fingerprint is not None:
            first = pending.firsts.get(fingerprint) or await self._get_json(
                ctx, "digest", task, fingerprint
            )
            if first is not None:
                raise _refusal(*_repeat(first, worker, fingerprint))
        header = read_header(update)
        record = {
            "digest": header["content_digest"],
            "fingerprint": fingerprint,
            "msp_id": msp_id,
            "num_samples": num_samples,
            "quantization": header["quantization"],
            "round": round_no,
            "sha256": sha256,
            "size": len(update),
            "subject": who.subject,
            "task": task,
            "tx_id": ctx.stub.tx_id,
            "worker": worker,
        }
        return record, tensors

    async def _record(
        self, ctx: Context, record: dict, update: bytes, parts: tuple[str, ...] | None = None
    ) -> None:
        """Write an admitted update: its bytes and record (under `parts`, by default its
        round's keys), worker history and fingerprint."""
        task, round_no, msp_id = record["task"], record["round"], record["msp_id"]
        enrolment_hash = record["worker"].rpartition(":")[2]
        parts = parts or (task, _rnd(round_no), msp_id, enrolment_hash)
        await ctx.stub.put_state(self._key(ctx, "blob", *parts), update)
        await self._put_json(ctx, record, "update", *parts)
        if record["fingerprint"] is not None:
            first = {"round": round_no, "tx_id": ctx.stub.tx_id, "worker": record["worker"]}
            await self._put_json(ctx, first, "digest", task, record["fingerprint"])
        await self._put_json(ctx, record, "worker", task, msp_id, enrolment_hash)

    async def _seal(self, ctx: Context, task: str, msp_id: str) -> None:
        """Write the org's seal, blindly: its key-level policy (the org's own peer) makes the
        transaction need that org's endorsement."""
        await self._put_json(ctx, {"msp_id": msp_id}, "seal", task, msp_id)

    @submit
    async def RegisterWorkers(self, ctx: Context, task: str, enrolment_ids: list) -> dict:
        """Register workers of the caller's organisation for `task` (that org's admins
        only): each by its enrolment id (``hf.EnrollmentID``, else the CN of its
        certificates). Registering an active worker again changes nothing; a removed one is
        active again. Refused (``registry-full``) past the task's ``max_workers_per_org``,
        counted over the task's life. Returns the org's workers and its count."""
        spec, _ = await self._task(ctx, task)
        self._require_admin(ctx, "RegisterWorkers")
        msp_id = ctx.client_identity.msp_id
        if msp_id not in spec.allowed_orgs and not await self._get_json(
            ctx, "admitted", task, msp_id
        ):
            raise _refusal("authorised", f"{msp_id} is not an allowed organisation of {task!r}")
        counter = await self._get_json(ctx, "members", task, msp_id)
        if counter is None:  # the org's first registration: its seal, endorsed by its peer
            counter = {"registered": 0}
            seal = self._key(ctx, "seal", task, msp_id)
            await ctx.stub.put_state(seal, canonical_json({"msp_id": msp_id}))
            await ctx.stub.set_state_validation_parameter(seal, _peer_policy(msp_id))
        workers = []
        for enrolment in _enrolments(spec, enrolment_ids):
            worker, enrolment_hash = _worker_id(msp_id, enrolment)
            member = await self._get_json(ctx, "member", task, msp_id, enrolment_hash)
            if member is None:
                counter["registered"] += 1
                member = {"registered_tx": ctx.stub.tx_id, "worker": worker}
            member = {**member, "active": True, "changed_tx": ctx.stub.tx_id}
            await self._put_json(ctx, member, "member", task, msp_id, enrolment_hash)
            workers.append(worker)
        if counter["registered"] > spec.max_workers_per_org:
            raise _refusal(
                "registry-full",
                f"{msp_id} would have registered {counter['registered']} workers for {task!r}; "
                f"the task allows {spec.max_workers_per_org} per organisation",
            )
        await self._put_json(ctx, counter, "members", task, msp_id)
        return {"msp_id": msp_id, "registered": counter["registered"], "workers": workers}

    @submit
    async def RemoveWorkers(self, ctx: Context, task: str, enrolment_ids: list) -> dict:
        """Stop registered workers of the caller's organisation from submitting to `task`
        (that org's admins only). Their updates so far stay on the record; their places in
        ``max_workers_per_org`` are not freed."""
        spec, _ = await self._task(ctx, task)
        self._require_admin(ctx, "RemoveWorkers")
        msp_id = ctx.client_identity.msp_id
        removed = []
        for enrolment in _enrolments(spec, enrolment_ids):
            _, enrolment_hash = _worker_id(msp_id, enrolment)
            member = await self._get_json(ctx, "member", task, msp_id, enrolment_hash)
            if member is None:
                raise _refusal("not-found", f"{enrolment!r} is not a registered {msp_id} worker")
            member = {**member, "active": False, "changed_tx": ctx.stub.tx_id}
            await self._put_json(ctx, member, "member", task, msp_id, enrolment_hash)
            removed.append(member["worker"])
        return {"msp_id": msp_id, "removed": removed}

    @submit
    async def DeclineRound(self, ctx: Context, task: str, round_no: int, reason: str) -> dict:
        """The caller, a registered worker, submits nothing to the open round `round_no`
        (its update was refused, or it failed), so that a coordinator on another host need
        not wait for it. Nothing changes in the round itself: its aggregate counts updates.

        Refusals: ``not-found``, ``round-open``, ``authorised``, ``registered``,
        ``one-per-round`` (the worker has an update in the round) and ``decline`` (an
        asynchronous task; a reason longer than `MAX_REASON` characters). Declining again:
        its record, nothing written. Writes ``fl.declined [task, round, msp_id,
        enrolment#]`` and emits ``RoundDeclined``; returns the record (``worker``,
        ``round``, ``reason``, ``declined_tx``).

        Example (a client)::

            contract.submit("fl:DeclineRound", "digits", "3", "private-validation: refused")
        """
        spec, _ = await self._task(ctx, task)
        if spec.mode == "async":
            raise _refusal("decline", f"task {task!r} is asynchronous: it has no rounds to decline")
        if len(reason) > MAX_REASON:
            raise _refusal("decline", f"a reason has at most {MAX_REASON} characters")
        msp_id = await self._submitting(ctx, spec, round_no)
        identity = ctx.client_identity
        try:
            worker, enrolment_hash = _worker_id(msp_id, identity.enrollment_id)
        except ValueError as exc:
            raise _refusal("authorised", str(exc)) from exc
        member = await self._get_json(ctx, "member", task, msp_id, enrolment_hash)
        if member is None or not member["active"]:
            raise _refusal("registered", f"{worker} is not a registered worker of {task!r}")
        parts = (task, _rnd(round_no), msp_id, enrolment_hash)
        if await self._get_json(ctx, "update", *parts) is not None:
            raise _refusal(
                "one-per-round", f"{worker} has an update in round {round_no} of {task!r}"
            )
        declined = await self._get_json(ctx, "declined", *parts)
        if declined is not None:
            return declined
        record = {
            "declined_tx": ctx.stub.tx_id,
            "reason": reason,
            "round": round_no,
            "worker": worker,
        }
        await self._put_json(ctx, record, "declined", *parts)
        ctx.stub.set_event("RoundDeclined", canonical_json({**record, "task": task}))
        return record

    @submit
    async def AdmitOrganisation(self, ctx: Context, task: str, msp_id: str) -> dict:
        """Admit organisation `msp_id` (say, one that joined the channel later) to a running
        task, by an admin of a driving organisation (as ``AdvanceRound``): its admin may then
        register its workers, who submit from ``from_round`` on, the round after the open
        one (for an asynchronous task, updates trained from the next model version on).

        Refusals: ``not-found``, ``role``, ``coordinator``; ``admit`` for a malformed MSP
        id, a founding organisation, a task with no round left to join, and an organisation
        whose rounds (``max_workers_per_org`` more updates) could overflow the weight sums
        or the aggregation budget (`TaskSpec.with_orgs`). An organisation admitted already:
        its record, nothing written. Writes ``fl.admitted [task, msp_id]`` (the ``fl.task``
        key stays as it is) and emits ``OrganisationAdmitted``; returns the record
        (``msp_id``, ``from_round``, ``admitted_tx``, ``admitted_by``).

        Example (a client)::

            contract.submit("fl:AdmitOrganisation", "digits", "Org4MSP")
        """
        spec, stored = await self._task(ctx, task)
        self._require_driver(ctx, spec, stored, "AdmitOrganisation")
        if not _MSP_ID.fullmatch(msp_id):
            raise _refusal("admit", f"{msp_id[:100]!r} is not an MSP id ({_MSP_ID.pattern})")
        if msp_id in spec.allowed_orgs:
            raise _refusal("admit", f"{msp_id} is a founding organisation of task {task!r}")
        admitted = await self._admitted(ctx, task)
        if msp_id in admitted:
            return admitted[msp_id]
        # Sync: the round after the open one. Async: the open round is the buffer making
        # version current + 1, which is the first base version the org may train from.
        # The scan conflicts with a concurrent AdvanceRound, so from_round is never stale.
        opened = [
            int(parts[-1])
            for parts, value in await self._scan(ctx, "round", task)
            if json.loads(value)["status"] == "open"
        ]
        later, last = (0, spec.rounds - 1) if spec.mode == "async" else (1, spec.rounds)
        from_round = opened[0] + later if opened else None
        if from_round is None or from_round > last:
            raise _refusal("admit", f"task {task!r} has no round left for {msp_id} to join")
        try:
            spec.with_orgs([*admitted, msp_id])
        except TaskError as exc:
            raise _translate(exc, "admit") from exc
        identity = ctx.client_identity
        record = {
            "admitted_by": worker_id(identity.msp_id, identity.cert_pem),
            "admitted_tx": ctx.stub.tx_id,
            "from_round": from_round,
            "msp_id": msp_id,
        }
        await self._put_json(ctx, record, "admitted", task, msp_id)
        ctx.stub.set_event("OrganisationAdmitted", canonical_json({**record, "task": task}))
        return record

    async def _validate(
        self,
        spec: TaskSpec,
        round_no: int,
        base: bytes,
        tensors: Mapping[str, np.ndarray],
        worker: str,
    ) -> None:
        """This org's private validation of an admitted update, when it runs a validator and
        the task sets a threshold; refuses (``private-validation``) or returns."""
        if self._validator is None or spec.validation_threshold is None:
            return
        key = (spec.id, round_no, hashlib.sha256(base).hexdigest())
        org = self.settings.get("msp_id", "this org")
        validator = self._validator

        def run() -> tuple[float, float]:
            score = task_validator(validator, spec.id)
            model = decode_update(base, spec.layout)
            if key not in self._baselines:
                self._baselines[key] = score(model)
            return self._baselines[key], score(apply_update(model, tensors))

        try:
            baseline, candidate = await asyncio.to_thread(run)
        except Exception as exc:
            raise _refusal("private-validation", f"{org}: validator failed: {exc!r}") from exc
        own = worker.rpartition(":")[0] == org and spec.own_org_threshold is not None
        threshold = spec.own_org_threshold if own else spec.validation_threshold
        reason = judge(baseline, candidate, threshold or 0.0)
        if reason is not None:
            whose = " (its own organisation's threshold)" if own else ""
            raise _refusal(
                "private-validation", f"{org} refuses the update of {worker}: {reason}{whose}"
            )

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
        if spec.mode == "async":
            raise _refusal("mode", f"task {task!r} is asynchronous: AggregateBuffer makes versions")
        state = await self._round(ctx, task, round_no)
        if state["status"] != "open":
            raise _refusal("round-state", f"round {round_no} is {state['status']}, not open")
        base = await self._model_bytes(ctx, task, round_no - 1)
        submissions = []
        blobs: dict[tuple[str, ...], bytes] = {}
        if spec.max_update_bytes <= SCAN_BLOBS_UP_TO:  # a scan: one round trip per 100 blobs
            blobs = {tuple(p): v for p, v in await self._scan(ctx, "blob", task, _rnd(round_no))}
        for parts, value in await self._scan(ctx, "update", task, _rnd(round_no)):
            blob = blobs.get(tuple(parts)) or await ctx.stub.get_state(
                self._key(ctx, "blob", *parts)
            )
            submissions.append((json.loads(value), blob))
        if len(submissions) < spec.min_updates:
            raise _refusal(
                "min-updates",
                f"round {round_no} has {len(submissions)} of {spec.min_updates} updates",
            )
        orgs = sorted({record["msp_id"] for record, _ in submissions})
        needed = spec.build_rule().min_updates
        if spec.weighting == "org" and len(orgs) < needed:
            raise _refusal(
                "min-updates",
                f"round {round_no} has updates from {len(orgs)} organisations; rule "
                f"{spec.rule!r} over organisations needs {needed}",
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
        await self._count_contributions(ctx, task, submissions, record)
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

    @submit
    async def AggregateBuffer(self, ctx: Context, task: str, version: int, ids: list) -> dict:
        """Make version ``version + 1`` of an asynchronous task from the pending updates
        `ids` (exactly ``buffer_size``, in commit order), by an admin of a driving
        organisation, with staleness factors and the task's rule (see `_async`). Refusals:
        ``mode``, ``done``, ``version``, ``buffer``, ``update-id``, ``not-pending``. Returns
        the aggregate record; emits ``AggregateCommitted`` (``version``, ``used``, ...)."""
        return await _async.aggregate_buffer(self, ctx, task, version, ids)

    @evaluate
    async def GetAsyncState(self, ctx: Context, task: str) -> dict:
        """An asynchronous task's current version, its pending update records and the
        current version's aggregate record (see `_async.state`)."""
        return await _async.state(self, ctx, task)

    async def _count_contributions(
        self, ctx: Context, task: str, submissions: list, record: Mapping
    ) -> None:
        totals: dict[str, dict[str, int]] = {}
        for update, _ in submissions:
            org = await self._contribution(ctx, task, update["msp_id"], totals)
            org["updates"] += 1
            org["samples"] += update["num_samples"]
        for worker in record["used"]:
            (await self._contribution(ctx, task, worker.rpartition(":")[0], totals))["used"] += 1
        for item in record["excluded"]:
            org = await self._contribution(ctx, task, item["id"].rpartition(":")[0], totals)
            org["excluded"] += 1
        for msp_id, counts in sorted(totals.items()):
            await self._put_json(ctx, counts, "contrib", task, msp_id)

    async def _contribution(self, ctx: Context, task: str, msp_id: str, totals: dict) -> dict:
        if msp_id not in totals:
            totals[msp_id] = await self._get_json(ctx, "contrib", task, msp_id) or {
                "excluded": 0,
                "samples": 0,
                "updates": 0,
                "used": 0,
            }
        return totals[msp_id]

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
    async def ListTasks(self, ctx: Context) -> dict:
        """Every task on the channel, in id order: id, creator, creating transaction, mode,
        rounds and aggregation rule (``GetTask`` has the whole record)."""
        tasks = []
        for (task_id,), value in await self._scan(ctx, "task"):
            stored = json.loads(value)
            spec = stored["spec"]
            tasks.append(
                {
                    "id": task_id,
                    "created_by": stored["created_by"],
                    "created_tx": stored["created_tx"],
                    "mode": spec.get("mode", "sync"),
                    "rounds": spec["rounds"],
                    "aggregation": spec["aggregation"]["rule"],
                }
            )
        return {"tasks": tasks}

    @evaluate
    async def GetGlobalModel(self, ctx: Context, task: str, round_no: int) -> bytes:
        """The encoded global model after `round_no` (0: the initial model)."""
        await self._task(ctx, task)
        return await self._model_bytes(ctx, task, round_no)

    @evaluate
    async def GetRoundUpdates(self, ctx: Context, task: str, round_no: int) -> dict:
        """The round's state, its update records (without the update bytes), its aggregate
        record (null until the round is aggregated) and the workers that declined it
        (``DeclineRound``: their records)."""
        await self._task(ctx, task)
        records = await self._scan(ctx, "update", task, _rnd(round_no))
        declined = await self._scan(ctx, "declined", task, _rnd(round_no))
        return {
            "aggregate": await self._get_json(ctx, "aggregate", task, _rnd(round_no)),
            "declined": [json.loads(v) for _, v in declined],
            "round": round_no,
            "state": await self._round(ctx, task, round_no),
            "task": task,
            "updates": [json.loads(v) for _, v in records],
        }

    @evaluate
    async def GetBatches(self, ctx: Context, task: str, round_no: int) -> list:
        """The device batches of `round_no` (``SubmitBatch`` records: submitter, accepted
        devices, refused entries with device, check and reason), by transaction id."""
        await self._task(ctx, task)
        return [json.loads(v) for _, v in await self._scan(ctx, "batch", task, _rnd(round_no))]

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
        """Per org, over the aggregated rounds: updates, samples claimed, updates used and
        excluded (totals ``AdvanceRound`` keeps, so this reads one key per org, after one
        scan of the admitted orgs)."""
        spec, _ = await self._task(ctx, task)
        orgs = {}
        for msp_id in await self._orgs(ctx, spec):
            counts = await self._get_json(ctx, "contrib", task, msp_id)
            if counts is not None:
                orgs[msp_id] = counts
        return {"orgs": orgs, "task": task}

    @evaluate
    async def GetWorkers(self, ctx: Context, task: str) -> dict:
        """The task's registry: per org, its registered workers (active or removed) and how
        many places of ``max_workers_per_org`` it has used (founding and admitted orgs)."""
        spec, _ = await self._task(ctx, task)
        orgs = {}
        for msp_id in await self._orgs(ctx, spec):
            counter = await self._get_json(ctx, "members", task, msp_id)
            members = [json.loads(v) for _, v in await self._scan(ctx, "member", task, msp_id)]
            orgs[msp_id] = {
                "registered": counter["registered"] if counter else 0,
                "workers": members,
            }
        return {"max_workers_per_org": spec.max_workers_per_org, "orgs": orgs, "task": task}

    @evaluate
    async def GetOrganisations(self, ctx: Context, task: str) -> dict:
        """The task's organisations: its founding ``allowed_orgs`` and, under ``admitted``,
        the records of those admitted while it ran (``from_round`` each), by MSP id."""
        spec, _ = await self._task(ctx, task)
        admitted = await self._admitted(ctx, task)
        return {
            "admitted": list(admitted.values()),
            "founding": list(spec.allowed_orgs),
            "task": task,
        }

    @evaluate
    async def GetUpdate(self, ctx: Context, task: str, round_no: int, worker: str) -> bytes:
        """The encoded update `worker` (``"<msp id>:<enrolment#>"``) submitted to `round_no`;
        for an asynchronous task, `worker` is the update's id and `round_no` is ignored."""
        spec, _ = await self._task(ctx, task)
        if spec.mode == "async":
            return await _async.get_update(self, ctx, task, worker)
        msp_id, enrolment_hash = self._split_worker(worker)
        blob = await ctx.stub.get_state(
            self._key(ctx, "blob", task, _rnd(round_no), msp_id, enrolment_hash)
        )
        if not blob:
            raise _refusal("not-found", f"{worker} has no update in round {round_no} of {task!r}")
        return blob

    @evaluate
    async def GetAudit(self, ctx: Context, task: str, from_round: int) -> dict:
        """One page of the audit index of a task: its record and, from round `from_round`
        on, each round's state, aggregate and update records, whole rounds up to
        `AUDIT_PAGE_UPDATES` records (at least one round). ``next_round`` is where the next
        page starts, null after the last round that was opened.

        No bytes travel in it (about 0.6 KB per update); an auditor fetches each model with
        ``GetGlobalModel`` and each update with ``GetUpdate`` and hands all three to
        `verify_audit`.
        """
        spec, stored = await self._task(ctx, task)
        if from_round < 1:
            raise _refusal("round", f"from_round must be >= 1, got {from_round}")
        if spec.mode == "async":  # rounds are versions
            return await _async.audit_page(self, ctx, spec, stored, from_round, AUDIT_PAGE_UPDATES)
        rounds: list[dict] = []
        records = 0
        round_no = from_round
        while round_no <= spec.rounds:
            state = await self._round(ctx, task, round_no)
            if state["status"] == "new":
                break
            updates = [
                json.loads(v) for _, v in await self._scan(ctx, "update", task, _rnd(round_no))
            ]
            if rounds and records + len(updates) > AUDIT_PAGE_UPDATES:
                return {"next_round": round_no, "rounds": rounds, "task": stored}
            records += len(updates)
            rounds.append(
                {
                    "aggregate": await self._get_json(ctx, "aggregate", task, _rnd(round_no)),
                    "round": round_no,
                    "state": state,
                    "updates": updates,
                }
            )
            round_no += 1
        return {"next_round": None, "rounds": rounds, "task": stored}
