"""Device batches on the client: each device signs its own update; its organisation's
gateway identity submits them together in ``SubmitBatch`` transactions.

- `DeviceLedger`: a device's `Ledger` as its `Worker` sees it. ``submit_update`` signs the
  entry with the device's own key (its certificate comes from its organisation's CA) and
  hands it to the org's `OrgBatcher`; it returns the device's update record, or raises
  `EntryRefused` with the contract's check and reason. Queries go through the org's gateway.
- `OrgBatcher`: collects one organisation's entries per round and submits them, split by
  `BatchLimits`, as soon as every device of the org has handed in its entry, a batch is
  full, or no entry came for `linger` seconds. Transient failures are retried; when an
  endorsing org's private validation refuses a device, the batch goes again without it.
- `split_batches`, `BatchLimits`: the message limits.

Why `DEFAULT_MAX_BATCH_BYTES` is 4 MiB: a batch's bytes travel twice in its transaction (the
proposal's arguments, then the updates in the write set) and twice in the peer's message to
the chaincode server (its input and the signed proposal), so ``4 x`` the batch must stay
below the orderer's ``absolute_max_bytes`` (99 MiB by default) and the 100 MiB gRPC limit;
`BatchLimits.for_message_limit` lowers it for a smaller orderer limit. Smaller batches also
endorse and commit in parallel with training, and one slow batch delays fewer devices.
`DEFAULT_MAX_BATCH_ENTRIES` (500) keeps one endorsement well under a second (about 0.5 ms of
checks an entry) and below the contract's `fedfabric.chaincode.fl.MAX_BATCH_ENTRIES`.

Example::

    batcher = OrgBatcher(gateway_ledger, devices=len(identities), retry=Retry())
    ledgers = [DeviceLedger(batcher, cert_pem, signer) for cert_pem, signer in identities]
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ledger import EntryRefused, Ledger, Refusal, _Calls, refusal
from fedfabric.fl_worker.worker import Retry
from fedfabric.gateway import ChaincodeEvent, EndorseError, EventStream

DEFAULT_MAX_BATCH_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_BATCH_ENTRIES = 500

Signer = Callable[[bytes], bytes]


@dataclass(frozen=True, kw_only=True)
class BatchLimits:
    """How large one ``SubmitBatch`` may be: encoded bytes and entries (see the module doc)."""

    max_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_entries: int = DEFAULT_MAX_BATCH_ENTRIES

    def __post_init__(self) -> None:
        if not 1 <= self.max_entries <= fl.MAX_BATCH_ENTRIES:
            raise ValueError(
                f"max_entries must be in 1..{fl.MAX_BATCH_ENTRIES} (the contract's limit), "
                f"got {self.max_entries}"
            )
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {self.max_bytes}")

    @classmethod
    def for_message_limit(cls, limit: int, **kw: int) -> BatchLimits:
        """Limits for a network whose smallest message limit (orderer ``absolute_max_bytes``,
        gRPC) is `limit` bytes: a batch of at most a quarter of it, and the default."""
        return cls(max_bytes=min(kw.pop("max_bytes", DEFAULT_MAX_BATCH_BYTES), limit // 4), **kw)


def split_batches(entries: Sequence[fl.BatchEntry], limits: BatchLimits) -> list[list[int]]:
    """The indices of `entries`, in order, cut into batches within `limits` (an entry larger
    than ``max_bytes`` alone goes in a batch of its own)."""
    batches: list[list[int]] = []
    size = 0
    for i, entry in enumerate(entries):
        n = fl.entry_size(entry)
        current = batches[-1] if batches else None
        if current is None or len(current) >= limits.max_entries or size + n > limits.max_bytes:
            batches.append([i])
            size = 8 + n
        else:
            current.append(i)
            size += n
    return batches


@dataclass
class _Item:
    worker: str
    entry: fl.BatchEntry
    done: asyncio.Future[dict[str, Any]]


@dataclass
class _Round:
    items: list[_Item] = field(default_factory=list)
    size: int = 0
    arrived: int = 0
    timer: asyncio.TimerHandle | None = None


class OrgBatcher:
    """Submits one organisation's device entries in batches, as `ledger`'s identity (any
    identity of that organisation: the org's gateway).

    `devices` is how many devices hand in entries (a round's batch goes as soon as all did);
    `say` reports each batch (progress for long rounds).
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        devices: int,
        limits: BatchLimits | None = None,
        retry: Retry | None = None,
        linger: float = 0.2,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.devices = devices
        self.limits = limits or BatchLimits()
        self.retry = retry or Retry()
        self.linger = linger
        self.say = say
        self._rounds: dict[tuple[str, int], _Round] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, task: str, round_no: int, worker: str, entry: fl.BatchEntry) -> dict:
        """Submit `worker`'s signed `entry` with the others; its update record once
        committed. Raises `EntryRefused`, or the gateway error that failed its batch."""
        loop = asyncio.get_running_loop()
        key = (task, round_no)
        pending = self._rounds.setdefault(key, _Round())
        if pending.items and (
            len(pending.items) >= self.limits.max_entries
            or pending.size + fl.entry_size(entry) > self.limits.max_bytes
        ):
            self._flush(key)
            pending = self._rounds.setdefault(key, _Round(arrived=pending.arrived))
        item = _Item(worker, entry, loop.create_future())
        pending.items.append(item)
        pending.size += fl.entry_size(entry)
        pending.arrived += 1
        if pending.timer is not None:
            pending.timer.cancel()
        if pending.arrived >= self.devices:
            self._flush(key)
        else:
            pending.timer = loop.call_later(self.linger, self._flush, key)
        return await item.done

    def _flush(self, key: tuple[str, int]) -> None:
        pending = self._rounds.get(key)
        if pending is None or not pending.items:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self._rounds[key] = _Round(arrived=pending.arrived)
        for indices in split_batches([i.entry for i in pending.items], self.limits):
            sending = asyncio.create_task(self._send(key, [pending.items[i] for i in indices]))
            self._sending.add(sending)
            sending.add_done_callback(self._sending.discard)

    async def _send(self, key: tuple[str, int], items: list[_Item]) -> None:
        task, round_no = key
        started = time.perf_counter()
        while items:
            batch = fl.encode_batch([i.entry for i in items])
            try:
                result = await self.retry.run(
                    lambda b=batch: self.ledger.submit_batch(task, round_no, b)
                )
            except EndorseError as exc:
                refused = refusal(exc)
                named = [i for i in items if i.worker in refused.message]
                if refused.check == "private-validation" and named:
                    for i in named:  # an endorser's own judgement: the others go again
                        _settle(i, EntryRefused(i.worker, refused))
                    items = [i for i in items if i not in named]
                    continue
                for i in items:
                    _settle(i, EntryRefused(i.worker, refused) if refused.check == "batch" else exc)
                return
            except Exception as exc:  # noqa: BLE001 - every device hears of it
                for i in items:
                    _settle(i, exc)
                return
            records = {r["worker"]: r for r in result["records"]}
            for r in result["refused"]:
                item = items[r["entry"]]
                _settle(item, EntryRefused(item.worker, Refusal(r["check"], r["reason"], ())))
            for i in items:
                if i.worker in records:
                    _settle(i, records[i.worker])
            if self.say is not None:
                self.say(
                    f"{self.ledger.msp_id}: round {round_no}: a batch of {len(items)} devices: "
                    f"{len(records)} recorded, {len(result['refused'])} refused "
                    f"({time.perf_counter() - started:.1f}s)"
                )
            return


def _settle(item: _Item, outcome: dict | BaseException) -> None:
    if item.done.done():
        return
    if isinstance(outcome, BaseException):
        item.done.set_exception(outcome)
    else:
        item.done.set_result(outcome)


class DeviceLedger(_Calls):
    """One device's `Ledger`: its certificate (PEM, from its organisation's CA) and signer
    (``signer(sha256 digest) -> DER signature``, e.g. `fedfabric.gateway.signers`); its
    update goes through `batcher`, and queries through the batcher's ledger. A device
    submits nothing else (its organisation's admin registers it and drives rounds)."""

    def __init__(self, batcher: OrgBatcher, certificate: bytes, signer: Signer) -> None:
        if not isinstance(batcher.ledger, _Calls):
            raise TypeError("the batcher's ledger must be an FLLedger or a MemoryFLLedger")
        self.batcher = batcher
        self._queries: _Calls = batcher.ledger
        self._msp_id = batcher.ledger.msp_id
        self._worker_id = fl.worker_id(self._msp_id, certificate)
        self._enrolment_id = fl.worker_enrolment(certificate)
        cert = x509.load_pem_x509_certificate(certificate)
        self._der = cert.public_bytes(serialization.Encoding.DER)
        self._sign = signer

    @property
    def msp_id(self) -> str:
        """The device's organisation."""
        return self._msp_id

    @property
    def worker_id(self) -> str:
        """The contract's id of the device (`fedfabric.chaincode.fl.worker_id`)."""
        return self._worker_id

    @property
    def enrolment_id(self) -> str:
        """The enrolment id its org's admin registers."""
        return self._enrolment_id

    @property
    def channel(self) -> str:
        """The channel its entries are signed for."""
        return self.batcher.ledger.channel

    def entry(self, task: str, round_no: int, update: bytes, num_samples: int) -> fl.BatchEntry:
        """The device's signed batch entry for `update`."""
        message = fl.entry_message(self.channel, task, round_no, update, num_samples)
        signature = self._sign(hashlib.sha256(message).digest())
        return fl.BatchEntry(self._der, update, num_samples, signature)

    async def submit_update(
        self, task: str, round_no: int, update: bytes, num_samples: int
    ) -> dict[str, Any]:
        """Sign the update and submit it in the organisation's next batch; the committed
        update record. Raises `EntryRefused` or the error that failed the batch."""
        entry = self.entry(task, round_no, update, num_samples)
        return await self.batcher.submit(task, round_no, self.worker_id, entry)

    async def height(self) -> int:
        """The channel's height, as the organisation's gateway sees it."""
        return await self.batcher.ledger.height()

    def events(self, *, start_block: int | None = None) -> EventStream[ChaincodeEvent]:
        """The contract's events, through the organisation's gateway."""
        return self.batcher.ledger.events(start_block=start_block)

    async def _submit(self, name: str, *args: str | bytes) -> dict[str, Any]:
        raise TypeError(f"a device submits only its updates, in batches; not {name}")

    async def _evaluate_raw(self, name: str, *args: str) -> bytes:
        return await self._queries._evaluate_raw(name, *args)


__all__ = [
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_MAX_BATCH_ENTRIES",
    "BatchLimits",
    "DeviceLedger",
    "OrgBatcher",
    "split_batches",
]
