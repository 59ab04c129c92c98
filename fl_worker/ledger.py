"""The FL contract as FL code sees it: typed async calls, over Fabric or in memory.

`FLLedger` calls the contract through a `fedfabric.gateway` Network as the identity the
gateway was connected with: queries are evaluated on one peer, transactions are endorsed
by the policy's organisations, ordered and committed (``submit_update`` returns only once
the transaction is VALID). With ``sync_orgs`` a transaction returns once a peer of each of
those organisations has its block (waiting 10 s at most: an organisation whose peer is down
delays, but never stalls, everyone's commits): whoever acts on it next (a worker submitting to the
round an ``AdvanceRound`` opened, an admin registering workers for a task just created)
is endorsed by peers that already read what it wrote, instead of getting ``not-found`` or
``round-open`` from a peer a block behind. `MemoryFL` is the same ledger without a network:
the real `FLContract` over `fedfabric.chaincode.testing`'s memory ledger, one block per transaction,
with the same errors (`EndorseError` carrying ``chaincode response <status>, <check>: ...``)
and the same chaincode events, so worker and coordinator tests need no peer. Given one
contract per organisation (each with its own private validator), it endorses like the Fabric
gateway under a majority policy.

Both implement `Ledger`; the worker, the coordinator and the auditor accept either.

Example::

    async with connect_org(profiles_dir, "transport", "User1") as gateway:
        ledger = FLLedger.for_gateway(gateway, "smartcity")
        model = await ledger.global_model("digits", 0)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import transaction_pb2

from fedfabric.chaincode import fl
from fedfabric.chaincode.testing import DEFAULT_TIMESTAMP, InvokeResult, MemoryLedger, invoke
from fedfabric.fl_worker.endorsers import POLICY_FAILURE, Endorsers
from fedfabric.gateway import (
    ChaincodeEvent,
    Checkpoint,
    CommitError,
    CommitStatusError,
    Contract,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    EventStream,
    Gateway,
    GatewayError,
    Identity,
    Network,
    Reconnect,
    SubmitError,
)

CHAINCODE = "fl"
VALID = transaction_pb2.TxValidationCode.VALID
MEMORY_CHANNEL = "memory"
"""The channel name `MemoryFL`'s contract sees."""
_RESPONSE = re.compile(r"chaincode response (\d+), (.*)", re.DOTALL)
# A peer that could not reach its chaincode server (Fabric's "could not launch chaincode",
# with the dial error under it): the server was stopped or is starting.
_UNREACHED = re.compile(r"could not launch chaincode|connection refused")


@dataclass(frozen=True)
class BlockSummary:
    """A committed block: its number, its transactions and how many of them are valid."""

    number: int
    transactions: int
    valid: int


@dataclass(frozen=True)
class Refusal:
    """An update the endorsing organisations did not accept, and what they said.

    `check` is the contract's check name (``replay``, ``norm``, ``private-validation``,
    ...) or, for a transaction invalidated at commit, its validation code name
    (``MVCC_READ_CONFLICT``); `orgs` are the MSP ids that refused (empty when the refusal
    was decided before submitting, or at commit).
    """

    check: str
    message: str
    orgs: tuple[str, ...]
    status: int = 0  # the contract's status (400, 403, 404, 409), 0 when not the contract's
    reason: str = ""  # the contract's own words ("<check>: ..."), once, or "" if not its


class EntryRefused(Exception):
    """The contract refused one entry of a device batch (``SubmitBatch``); `refusal` says
    which check and why, `orgs` are empty (every endorser decides the same)."""

    def __init__(self, worker: str, refused: Refusal) -> None:
        super().__init__(f"{worker}: {refused.message}")
        self.worker = worker
        self.refusal = refused


def refusal(exc: GatewayError | CommitError) -> Refusal:
    """What a failed ``SubmitUpdate`` means: the refusing orgs and the contract's check name."""
    if isinstance(exc, CommitError):
        return Refusal(exc.code_name, str(exc), ())
    messages = [d.message for d in exc.details] or [str(exc)]
    orgs = tuple(sorted({d.msp_id for d in exc.details if d.msp_id}))
    # The contract's refusals read "<check>: <reason>" after the peer's own prefix.
    found = _RESPONSE.search(messages[0])
    text = found.group(2) if found else messages[0]
    check = text.split(":", 1)[0].strip() if found and ":" in text else "error"
    said = dict.fromkeys(m.group(2) for m in map(_RESPONSE.search, messages) if m)
    status = int(found.group(1)) if found else 0
    return Refusal(check, "; ".join(messages), orgs, status, "; ".join(said))


class Ledger(Protocol):
    """What FL code needs from the FL contract, for one identity (`FLLedger`, `MemoryFL`).

    Transactions return the contract's JSON result and raise `EndorseError` (refused at
    endorsement; `refusal` reads it), `SubmitError` / `CommitStatusError` (outcome unknown:
    safe to resubmit) or `CommitError` (committed as invalid). Queries raise `EvaluateError`.
    """

    @property
    def msp_id(self) -> str: ...
    @property
    def worker_id(self) -> str: ...
    @property
    def enrolment_id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    async def create_task(self, spec: dict[str, Any], initial_model: bytes) -> dict[str, Any]: ...
    async def submit_update(
        self, task: str, round_no: int, update: bytes, num_samples: int
    ) -> dict[str, Any]: ...
    async def submit_batch(self, task: str, round_no: int, batch: bytes) -> dict[str, Any]: ...
    async def advance_round(self, task: str, round_no: int) -> dict[str, Any]: ...
    async def aggregate_buffer(self, task: str, version: int, ids: list[str]) -> dict[str, Any]: ...
    async def async_state(self, task: str) -> dict[str, Any]: ...
    async def block_of(self, tx_id: str) -> int: ...
    async def register_workers(self, task: str, enrolment_ids: list[str]) -> dict[str, Any]: ...
    async def workers(self, task: str) -> dict[str, Any]: ...
    async def admit_organisation(self, task: str, msp_id: str) -> dict[str, Any]: ...
    async def organisations(self, task: str) -> dict[str, Any]: ...
    async def decline_round(self, task: str, round_no: int, reason: str) -> dict[str, Any]: ...
    async def task(self, task: str) -> dict[str, Any] | None: ...
    async def global_model(self, task: str, round_no: int) -> bytes: ...
    async def round_updates(self, task: str, round_no: int) -> dict[str, Any]: ...
    async def contributions(self, task: str) -> dict[str, Any]: ...
    async def audit(self, task: str) -> dict[str, Any]: ...
    async def update(self, task: str, round_no: int, worker: str) -> bytes: ...
    async def height(self) -> int: ...
    async def reach(self, height: int) -> None: ...
    def events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[ChaincodeEvent]: ...
    def blocks(self, start_block: int) -> AsyncIterator[BlockSummary]: ...
    @property
    def last_steps(self) -> Mapping[str, float]: ...


class _Calls:
    """The typed calls, over two primitives a subclass provides."""

    async def _submit(self, name: str, *args: str | bytes) -> dict[str, Any]:
        raise NotImplementedError

    async def _evaluate_raw(self, name: str, *args: str) -> bytes:
        raise NotImplementedError

    async def _evaluate(self, name: str, *args: str) -> Any:
        return json.loads(await self._evaluate_raw(name, *args))

    async def create_task(self, spec: dict[str, Any], initial_model: bytes) -> dict[str, Any]:
        """``CreateTask`` (admins only) with the task JSON and the encoded initial model; it
        opens round 1. Returns the task record."""
        return await self._submit("CreateTask", json.dumps(spec, sort_keys=True), initial_model)

    async def submit_update(
        self, task: str, round_no: int, update: bytes, num_samples: int
    ) -> dict[str, Any]:
        """``SubmitUpdate`` as this identity; returns the committed update record."""
        return await self._submit("SubmitUpdate", task, str(round_no), update, str(num_samples))

    async def submit_batch(self, task: str, round_no: int, batch: bytes) -> dict[str, Any]:
        """``SubmitBatch`` as this identity (any identity of the devices' organisation):
        `batch` is encoded by `fedfabric.chaincode.fl.encode_batch`, each entry signed by its
        device. Returns the batch record (accepted devices, refused entries with device,
        check and reason) and, under ``records``, the accepted update records."""
        return await self._submit("SubmitBatch", task, str(round_no), batch)

    async def batches(self, task: str, round_no: int) -> list[dict[str, Any]]:
        """``GetBatches``: the round's batch records."""
        return await self._evaluate("GetBatches", task, str(round_no))

    async def advance_round(self, task: str, round_no: int) -> dict[str, Any]:
        """``AdvanceRound`` (admins only): aggregate the open round and open the next one in
        one transaction; returns the aggregate record (used, excluded, digests)."""
        return await self._submit("AdvanceRound", task, str(round_no))

    async def aggregate_buffer(self, task: str, version: int, ids: list[str]) -> dict[str, Any]:
        """``AggregateBuffer`` (admins of a driving org): make version ``version + 1`` of an
        asynchronous task from the pending updates `ids`; returns the aggregate record."""
        return await self._submit("AggregateBuffer", task, str(version), json.dumps(ids))

    async def async_state(self, task: str) -> dict[str, Any]:
        """``GetAsyncState``: an asynchronous task's version, pending updates and workers."""
        return await self._evaluate("GetAsyncState", task)

    async def register_workers(self, task: str, enrolment_ids: list[str]) -> dict[str, Any]:
        """``RegisterWorkers`` (admins only): register workers of the caller's org for `task`
        by enrolment id (`enrolment_id` of each worker's ledger)."""
        return await self._submit("RegisterWorkers", task, json.dumps(sorted(enrolment_ids)))

    async def workers(self, task: str) -> dict[str, Any]:
        """``GetWorkers``: per org, its registered workers and places used."""
        return await self._evaluate("GetWorkers", task)

    async def admit_organisation(self, task: str, msp_id: str) -> dict[str, Any]:
        """``AdmitOrganisation`` (admins of a driving org): admit `msp_id` (an organisation
        that joined the channel later) to the running `task`; its workers submit from the
        round after the open one. Returns the admission record (``from_round``, ...); the
        same record again if `msp_id` was admitted already."""
        return await self._submit("AdmitOrganisation", task, msp_id)

    async def decline_round(self, task: str, round_no: int, reason: str) -> dict[str, Any]:
        """``DeclineRound``: the caller (a registered worker) submits nothing to the open
        round (`reason`: why, at most ``fl.MAX_REASON`` characters), so a coordinator on
        another host need not wait for it; again: the same record."""
        return await self._submit("DeclineRound", task, str(round_no), reason)

    async def organisations(self, task: str) -> dict[str, Any]:
        """``GetOrganisations``: the task's founding orgs and the admitted ones' records."""
        return await self._evaluate("GetOrganisations", task)

    async def global_model(self, task: str, round_no: int) -> bytes:
        """The encoded global model after `round_no` (0: the initial model)."""
        return await self._evaluate_raw("GetGlobalModel", task, str(round_no))

    async def round_updates(self, task: str, round_no: int) -> dict[str, Any]:
        """``{"state": {"status": "new" | "open" | ...}, "updates": [record, ...],
        "declined": [record, ...], "aggregate": ...}``."""
        return await self._evaluate("GetRoundUpdates", task, str(round_no))

    async def contributions(self, task: str) -> dict[str, Any]:
        """Per org: updates submitted, samples claimed, updates used and excluded."""
        return await self._evaluate("GetContributions", task)

    async def audit(self, task: str) -> dict[str, Any]:
        """The whole ``GetAudit`` index (every page, one query each): the task record and,
        per round, state, aggregate and update records."""
        audit = await self._evaluate("GetAudit", task, "1")
        while audit["next_round"] is not None:
            page = await self._evaluate("GetAudit", task, str(audit["next_round"]))
            audit = {**page, "rounds": audit["rounds"] + page["rounds"]}
        return audit

    async def update(self, task: str, round_no: int, worker: str) -> bytes:
        """The encoded update `worker` submitted to `round_no`."""
        return await self._evaluate_raw("GetUpdate", task, str(round_no), worker)

    async def tasks(self) -> list[dict[str, Any]]:
        """``ListTasks``: every task of the channel (id, creator, mode, rounds, rule)."""
        return (await self._evaluate("ListTasks"))["tasks"]

    async def task(self, task: str) -> dict[str, Any] | None:
        """The task record (``GetTask``: spec, creator, initial model digest), None if there
        is no such task (any other query failure is raised)."""
        try:
            return await self._evaluate("GetTask", task)
        except GatewayError as exc:
            if refusal(exc).check == "not-found":
                return None
            raise


class FLLedger(_Calls):
    """Calls of the FL contract through a gateway, for one identity (a worker's or an admin's)."""

    def __init__(
        self,
        network: Network,
        chaincode: str = CHAINCODE,
        *,
        identity: Identity | None = None,
        sync_orgs: Sequence[str] = (),
        endorsers: Endorsers | None = None,
    ) -> None:
        self.network = network
        self.contract: Contract = network.get_contract(chaincode)
        self.chaincode = chaincode
        self.sync_orgs = tuple(sync_orgs)
        self.endorsers = endorsers
        self._identity = identity
        self._steps: dict[str, float] = {}

    @classmethod
    def for_gateway(
        cls,
        gateway: Gateway,
        channel: str,
        chaincode: str = CHAINCODE,
        *,
        sync_orgs: Sequence[str] = (),
        endorsers: Endorsers | None = None,
    ) -> FLLedger:
        """The ledger of `gateway`'s identity on `channel` (the usual way to build one);
        `sync_orgs`: the organisations whose peers must have each commit's block before it
        returns (every endorsing organisation of the channel). `endorsers`: the chaincode's
        policy (`Endorsers`, shared by a run's ledgers), whose sets of organisations (MSP
        ids, the caller's own first) are tried in order: the gateway then asks a set's peers
        at once, instead of its own organisation's peer first and the others after it. A set
        in which another organisation refuses (or cannot answer) gives way to the next; a
        refusal by the caller's own organisation is final, as when the gateway plans the
        endorsements itself (without `endorsers`). A transaction that commits as
        ``ENDORSEMENT_POLICY_FAILURE`` because the consortium moved the policy is sent again
        to sets of the committed one (`Endorsers.follow`)."""
        return cls(
            gateway.get_network(channel),
            chaincode,
            identity=gateway.identity,
            sync_orgs=sync_orgs,
            endorsers=endorsers,
        )

    @property
    def msp_id(self) -> str:
        """The MSP id of the calling identity."""
        return self._require_identity().msp_id

    @property
    def worker_id(self) -> str:
        """The contract's id of the calling identity (`fedfabric.chaincode.fl.worker_id`)."""
        identity = self._require_identity()
        return fl.worker_id(identity.msp_id, identity.credentials)

    @property
    def enrolment_id(self) -> str:
        """The enrolment id its org's admin registers (`fl.worker_enrolment`)."""
        return fl.worker_enrolment(self._require_identity().credentials)

    @property
    def channel(self) -> str:
        """The channel's name (device batch entries are signed for it)."""
        return self.network.name

    async def height(self) -> int:
        """The channel's block height on the gateway peer (``qscc GetChainInfo``)."""
        return await self.network.height()

    async def reach(self, height: int) -> None:
        """Wait (10 s at most, then go on: never an error) until a peer of each of
        `sync_orgs` has `height` blocks, so what they endorse next reads those blocks."""
        if self.sync_orgs:
            with contextlib.suppress(TimeoutError):
                await self.network.wait_for_height(height, self.sync_orgs, timeout=10.0)

    @property
    def last_steps(self) -> Mapping[str, float]:
        """Where the time of this ledger's last transaction went (`Contract.submit`'s
        ``steps``: endorse, order, sync seconds and the block number)."""
        return self._steps

    def events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[ChaincodeEvent]:
        """The contract's chaincode events (committed transactions only), from `start_block`,
        or after `checkpoint`'s position (then reopened after a broken connection)."""
        if checkpoint is None:
            return self.network.chaincode_events(self.chaincode, start_block=start_block)
        return self.network.chaincode_events(
            self.chaincode, start_block=start_block, checkpoint=checkpoint, reconnect=Reconnect()
        )

    async def blocks(self, start_block: int) -> AsyncIterator[BlockSummary]:
        """Each committed block from `start_block` on (reopened after a broken connection)."""
        stream = self.network.filtered_block_events(start_block=start_block, reconnect=Reconnect())
        async with stream:
            async for block in stream:
                codes = [t.tx_validation_code for t in block.filtered_transactions]
                yield BlockSummary(block.number, len(codes), codes.count(VALID))

    async def block_of(self, tx_id: str) -> int:
        """The number of the block that holds transaction `tx_id` (``qscc GetBlockByTxID``)."""
        qscc = self.network.get_contract("qscc")
        raw = await qscc.evaluate("GetBlockByTxID", [self.network.name, tx_id])
        return int(common_pb2.Block.FromString(raw).header.number)

    def _require_identity(self) -> Identity:
        if self._identity is None:
            raise ValueError("this FLLedger was built without identity=; use for_gateway()")
        return self._identity

    async def _submit(self, name: str, *args: str | bytes) -> dict[str, Any]:
        for _ in range(3):  # the policy may move again while this one is followed
            seen = self.endorsers.version if self.endorsers else 0
            try:
                return await self._submit_once(name, *args)
            except CommitError as exc:  # invalid, so nothing written: safe to send again
                if exc.code_name != POLICY_FAILURE or self.endorsers is None:
                    raise
                if not await self.endorsers.follow(self.network, self.chaincode, seen):
                    raise
                if self.sync_orgs:  # an organisation the policy added reads commits too
                    self.sync_orgs = tuple(
                        dict.fromkeys([*self.sync_orgs, *self.endorsers.msp_ids])
                    )
        return await self._submit_once(name, *args)

    async def _submit_once(self, name: str, *args: str | bytes) -> dict[str, Any]:
        self._steps = {}
        refused: list[EndorseError] = []
        sets = self.endorsers.sets(self.msp_id) if self.endorsers else ()
        for orgs in sets or (None,):
            try:
                raw = await self.contract.submit(
                    name,
                    list(args),
                    endorsing_orgs=orgs,
                    sync_orgs=self.sync_orgs,
                    steps=self._steps,
                )
                return json.loads(raw) if raw else {}
            except EndorseError as exc:
                refused.append(exc)
                if orgs is None or any(d.msp_id == self.msp_id for d in exc.details):
                    break  # the own organisation refused (or the gateway planned): final
        last = refused[-1]
        if len(refused) == 1:
            raise last
        raise EndorseError(  # every set failed: what each organisation said
            last.transaction_id,
            code=last.code,
            grpc_message=last.grpc_message,
            details=[d for exc in refused for d in exc.details],
        )

    async def _evaluate_raw(self, name: str, *args: str) -> bytes:
        return await self.contract.evaluate(name, list(args))


class MemoryFL:
    """An in-memory FL ledger: the real `FLContract` over a memory world state.

    Every transaction is endorsed and committed at once as its own block (calls are
    serialised, so there are no MVCC conflicts); refusals raise the errors the gateway
    raises. `ledger(creator)` gives the `Ledger` of one identity (``SerializedIdentity``
    bytes, e.g. from ``fedfabric.chaincode.testing.fake_identity``). `fail_next` makes the
    next call of a function fail, before or after it commits, to exercise retries.

    `contracts` gives each organisation its own `FLContract` (MSP id → contract, each with
    its own settings, e.g. its org-private validator); without it one contract endorses for
    everybody. A transaction is then endorsed as `FLLedger` has the Fabric gateway endorse
    it, naming the organisations of one set after another (``endorsing_organizations``; fabric
    ``internal/pkg/gateway/api.go``, read at the pinned snapshot 695dd57e), under the policy
    ``OutOf(endorsements, orgs)`` (default: a majority, the network's default policy):

    1. the sets are the submitter's own org with ``endorsements - 1`` others, in `contracts`
       order (`fedfabric.network.endorsing_sets`); every org of a set executes it;
    2. if the own org refuses, the transaction fails at once, naming every org of that set
       that refused, with its message (``chaincode response <status>, <check>: ...``, which
       `refusal` reads): its own org has a veto;
    3. if another org of the set refuses, the next set is tried; when no set is left,
       `EndorseError` names every org that refused;
    4. the endorsers' responses and read/write sets must be identical (Fabric compares the
       proposal response payloads), and the transaction is committed once.

    No org commits anything while endorsing: nothing is written when the policy is not met.
    Queries are evaluated by the caller's own org.
    """

    def __init__(
        self,
        contracts: Mapping[str, fl.FLContract] | None = None,
        *,
        endorsements: int | None = None,
    ) -> None:
        if contracts is not None and not contracts:
            raise ValueError("contracts must name at least one organisation")
        self.contracts = dict(contracts) if contracts else {"": fl.FLContract()}
        count = len(self.contracts)
        self.endorsements = count // 2 + 1 if endorsements is None else endorsements
        if not 1 <= self.endorsements <= count:
            raise ValueError(
                f"endorsements must be in 1..{count} (the organisations), got {endorsements}"
            )
        self.state = MemoryLedger()
        self.blocks: list[list[ChaincodeEvent]] = []
        self.last_block: dict[bytes, int] = {}  # creator → block of its last transaction
        self.tx_blocks: dict[str, int] = {}
        self._lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._faults: list[tuple[str, bool, BaseException]] = []

    @property
    def height(self) -> int:
        """Blocks committed so far."""
        return len(self.blocks)

    def ledger(self, creator: bytes) -> MemoryFLLedger:
        """The `Ledger` seen by the identity `creator` (``SerializedIdentity`` bytes)."""
        return MemoryFLLedger(self, creator)

    def fail_next(self, function: str, error: BaseException, *, after_commit: bool = False) -> None:
        """Make the next call of `function` raise `error`, before or after committing it."""
        self._faults.append((function, after_commit, error))

    def _fault(self, function: str, after_commit: bool) -> None:
        for i, (name, after, error) in enumerate(self._faults):
            if name == function and after == after_commit:
                del self._faults[i]
                raise error

    def _orgs(self, msp_id: str) -> list[str]:
        """The orgs in the order the gateway of `msp_id`'s peer asks them."""
        first = msp_id if msp_id in self.contracts else next(iter(self.contracts))
        return [first] + [org for org in self.contracts if org != first]

    async def call(
        self, creator: bytes, function: str, args: tuple[str | bytes, ...], *, submit: bool
    ) -> bytes:
        msp_id = identities_pb2.SerializedIdentity.FromString(creator).mspid
        self._fault(function, False)
        async with self._lock:
            if submit:
                result = await self._endorse(creator, msp_id, function, args)
                self.state.commit(result.rwset, tx_id=result.tx_id, timestamp=DEFAULT_TIMESTAMP)
                events = []
                if result.event is not None:
                    events.append(
                        ChaincodeEvent(
                            len(self.blocks), result.tx_id, "fl", result.event[0], result.event[1]
                        )
                    )
                self.tx_blocks[result.tx_id] = len(self.blocks)
                self.blocks.append(events)
                self.last_block[creator] = len(self.blocks) - 1
            else:
                org = self._orgs(msp_id)[0]
                result = await self._execute(org, creator, function, args)
                if result.status >= 400:
                    raise EvaluateError(
                        result.tx_id,
                        code=grpc.StatusCode.ABORTED,
                        grpc_message="failed to evaluate transaction",
                        details=[self._detail(org, msp_id, result)],
                    )
        if submit:
            async with self._changed:
                self._changed.notify_all()
            self._fault(function, True)
        return result.payload

    async def _execute(
        self, org: str, creator: bytes, function: str, args: tuple[str | bytes, ...]
    ) -> InvokeResult:
        """`org`'s contract runs the call on the committed state, committing nothing."""
        return await invoke(
            self.contracts[org],
            f"fl:{function}",
            *args,
            creator=creator,
            ledger=self.state,
            channel_id=MEMORY_CHANNEL,
            commit=False,
        )

    def _detail(self, org: str, msp_id: str, result: InvokeResult) -> ErrorDetail:
        return ErrorDetail(
            f"memory:{org or msp_id}",
            org or msp_id,
            f"chaincode response {result.status}, {result.message}",
        )

    async def _endorse(
        self, creator: bytes, msp_id: str, function: str, args: tuple[str | bytes, ...]
    ) -> InvokeResult:
        """The endorsed result (see the class docstring), or `EndorseError`."""
        own, *others = self._orgs(msp_id)
        results: dict[str, InvokeResult] = {}  # an org's answer is the same in every set
        details: list[ErrorDetail] = []
        endorsed_any = False
        for combo in itertools.combinations(others, self.endorsements - 1):
            endorsed: list[InvokeResult] = []
            refused = []
            for org in (own, *combo):
                if org not in results:
                    results[org] = await self._execute(org, creator, function, args)
                result = results[org]
                if result.status >= 400:
                    refused.append(self._detail(org, msp_id, result))
                elif endorsed and _response(result) != _response(endorsed[0]):
                    refused.append(
                        ErrorDetail(f"memory:{org}", org, "ProposalResponsePayloads do not match")
                    )
                else:
                    endorsed.append(result)
            if not refused:
                return endorsed[0]
            endorsed_any = endorsed_any or bool(endorsed)
            details += [d for d in refused if d not in details]
            if results[own].status >= 400:
                break  # the own org refused: final
        raise EndorseError(
            results[own].tx_id,
            code=grpc.StatusCode.ABORTED,
            grpc_message=(
                "failed to collect enough transaction endorsements, see attached details for "
                "more info"
                if endorsed_any
                else "failed to endorse transaction, see attached details for more info"
            ),
            details=details,
        )

    async def _events(
        self, start_block: int | None, checkpoint: Checkpoint | None = None
    ) -> AsyncIterator[ChaincodeEvent]:
        block = self.height if start_block is None else start_block
        after = ""  # a checkpoint's transaction: its block's events up to it were read
        if checkpoint is not None and (checkpoint.block_number or checkpoint.transaction_id):
            block, after = checkpoint.block_number, checkpoint.transaction_id
        while True:
            async with self._changed:
                await self._changed.wait_for(lambda b=block: len(self.blocks) > b)
            while block < len(self.blocks):
                events = self.blocks[block]
                ids = [e.transaction_id for e in events]
                skip = ids.index(after) + 1 if after in ids else 0
                for event in events[skip:]:
                    yield event
                block, after = block + 1, ""


def _response(result: InvokeResult) -> tuple[Any, ...]:
    """What Fabric compares between endorsements: response, event and read/write set."""
    return (result.status, result.message, result.payload, result.event, result.rwset)


class _Identity(_Calls):
    """`_Calls` for one known identity (MSP id and certificate PEM) without a gateway."""

    def _identify(self, msp_id: str, certificate: bytes) -> None:
        self._msp_id = msp_id
        self._worker_id = fl.worker_id(msp_id, certificate)
        self._enrolment_id = fl.worker_enrolment(certificate)

    @property
    def msp_id(self) -> str:
        """The MSP id of this identity."""
        return self._msp_id

    @property
    def worker_id(self) -> str:
        """The contract's id of this identity."""
        return self._worker_id

    @property
    def enrolment_id(self) -> str:
        """The enrolment id its org's admin registers."""
        return self._enrolment_id


class MemoryFLLedger(_Identity):
    """One identity's `Ledger` over a `MemoryFL`."""

    def __init__(self, world: MemoryFL, creator: bytes) -> None:
        self.world = world
        self.creator = creator
        identity = identities_pb2.SerializedIdentity.FromString(creator)
        self._identify(identity.mspid, identity.id_bytes)
        self._steps: dict[str, float] = {}

    @property
    def channel(self) -> str:
        """The channel the memory contract sees (`MEMORY_CHANNEL`)."""
        return MEMORY_CHANNEL

    async def height(self) -> int:
        """Blocks committed so far."""
        return self.world.height

    async def reach(self, height: int) -> None:
        """Nothing to wait for: one ledger."""

    @property
    def last_steps(self) -> Mapping[str, float]:
        """The block of this identity's last transaction (no network steps in memory)."""
        return self._steps

    def events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[ChaincodeEvent]:
        """Chaincode events of committed transactions, from `start_block` (default: next),
        or after `checkpoint`'s position."""
        return EventStream(self.world._events(start_block, checkpoint))

    async def blocks(self, start_block: int) -> AsyncIterator[BlockSummary]:
        """Each block from `start_block` on (one transaction each, all valid)."""
        block = start_block
        while True:
            async with self.world._changed:
                await self.world._changed.wait_for(lambda b=block: len(self.world.blocks) > b)
            for number in range(block, len(self.world.blocks)):
                yield BlockSummary(number, 1, 1)
            block = len(self.world.blocks)

    async def block_of(self, tx_id: str) -> int:
        """The block that holds transaction `tx_id` (KeyError if none)."""
        return self.world.tx_blocks[tx_id]

    async def _submit(self, name: str, *args: str | bytes) -> dict[str, Any]:
        self._steps = {}
        raw = await self.world.call(self.creator, name, args, submit=True)
        self._steps = {"block": self.world.last_block[self.creator]}
        return json.loads(raw) if raw else {}

    async def _evaluate_raw(self, name: str, *args: str) -> bytes:
        return await self.world.call(self.creator, name, args, submit=False)


TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def is_transient(exc: BaseException) -> bool:
    """Whether a failed submission may simply be sent again.

    True for an unknown outcome (`CommitStatusError`, `SubmitError`), for transactions
    invalidated by a concurrent write (MVCC / phantom read conflicts), for gateway calls
    that failed with UNAVAILABLE or DEADLINE_EXCEEDED without any chaincode answer, and for
    endorsements every peer of which could not reach its chaincode server (one restarting,
    say when an organisation deploys its validator as a task starts).
    A refusal by the contract is never transient.
    """
    if isinstance(exc, CommitError):
        return exc.code_name in ("MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT")
    if isinstance(exc, CommitStatusError):
        return True
    if not isinstance(exc, GatewayError):
        return False
    if any(_RESPONSE.search(d.message) for d in exc.details):
        return False
    if exc.details and all(_UNREACHED.search(d.message) for d in exc.details):
        return True  # each peer's chaincode server was (re)starting: no chaincode ran
    return isinstance(exc, SubmitError) or exc.code in TRANSIENT_CODES


__all__ = [
    "CHAINCODE",
    "MEMORY_CHANNEL",
    "EndorseError",
    "EntryRefused",
    "FLLedger",
    "Ledger",
    "MemoryFL",
    "MemoryFLLedger",
    "Refusal",
    "is_transient",
    "refusal",
]
