"""Device batches on the client: each device signs its own update; its organisation's
gateway identity submits them together in ``SubmitBatch`` transactions.

- `DeviceLedger`: a device's `Ledger` as its `Worker` sees it. ``submit_update`` signs the
  entry with the device's own key (its certificate comes from its organisation's CA) and
  hands it to the org's `OrgBatcher`; it returns the device's update record, or raises
  `EntryRefused` with the contract's check and reason. Queries go through the org's gateway.
- `OrgBatcher`: collects one organisation's entries per round and submits them, split by
  `BatchLimits`, as soon as every device of the org has handed in its entry, a batch is
  full, or no entry came for `linger` seconds, with at most `max_in_flight` batches of the
  org in flight. Transient failures are retried; when an endorsing org's private validation
  refuses a device, the batch goes again without it.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ledger import EntryRefused, Ledger, Refusal, _Calls, _Identity, refusal
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
    return list(_batches(entries, limits))


def _batches(entries: Sequence[fl.BatchEntry], limits: BatchLimits) -> Iterator[list[int]]:
    batch: list[int] = []
    size = 8  # the magic and the count
    for i, entry in enumerate(entries):
        n = fl.entry_size(entry)
        if batch and (len(batch) >= limits.max_entries or size + n > limits.max_bytes):
            yield batch
            batch, size = [], 8
        batch.append(i)
        size += n
    if batch:
        yield batch


@dataclass
class _Item:
    worker: str
    entry: fl.BatchEntry
    done: asyncio.Future[dict[str, Any]]


@dataclass
class _Round:
    items: list[_Item] = field(default_factory=list)
    arrived: int = 0
    due: bool = False  # no entry came for `linger` seconds: send what there is
    timer: asyncio.TimerHandle | None = None


class OrgBatcher:
    """Submits one organisation's device entries in batches, as `ledger`'s identity (any
    identity of that organisation: the org's gateway).

    A round's entries go as soon as a batch is full, every one of the `devices` has handed
    in its entry, or none came for `linger` seconds; at most `max_in_flight` batches of the
    org are being endorsed and committed at once (more would only share the same CPUs and
    run into the peers' endorsement timeout), and entries arriving meanwhile fill the next
    batches. `say` reports each batch (progress for long rounds) and each failed one.
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        devices: int,
        limits: BatchLimits | None = None,
        retry: Retry | None = None,
        linger: float = 0.2,
        max_in_flight: int = 2,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.ledger = ledger
        self.devices = devices
        self.limits = limits or BatchLimits()
        self.retry = retry or Retry()
        self.linger = linger
        self.max_in_flight = max_in_flight
        self.say = say
        self._rounds: dict[tuple[str, int], _Round] = {}
        self._sending: set[asyncio.Task[None]] = set()

    async def submit(self, task: str, round_no: int, worker: str, entry: fl.BatchEntry) -> dict:
        """Submit `worker`'s signed `entry` with the others; its update record once
        committed. Raises `EntryRefused`, or the gateway error that failed its batch."""
        loop = asyncio.get_running_loop()
        key = (task, round_no)
        pending = self._rounds.setdefault(key, _Round())
        item = _Item(worker, entry, loop.create_future())
        pending.items.append(item)
        pending.arrived += 1
        pending.due = False
        if pending.timer is not None:
            pending.timer.cancel()
        pending.timer = loop.call_later(self.linger, self._due, key)
        self._flush()
        return await item.done

    def _due(self, key: tuple[str, int]) -> None:
        self._rounds[key].due = True
        self._flush()

    def _flush(self) -> None:
        """Start sending every ready batch there is a slot for."""
        for key, pending in self._rounds.items():
            while pending.items and len(self._sending) < self.max_in_flight:
                first = next(_batches([i.entry for i in pending.items], self.limits))
                whole = len(first) == len(pending.items)
                if whole and not (pending.due or pending.arrived >= self.devices):
                    break  # a partial batch while more entries may come
                batch, pending.items = pending.items[: len(first)], pending.items[len(first) :]
                sending = asyncio.create_task(self._send(key, batch))
                self._sending.add(sending)
                sending.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._flush()

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
                self._report(round_no, items, f"failed: {refused.check}: {refused.message}")
                for i in items:
                    _settle(i, EntryRefused(i.worker, refused) if refused.check == "batch" else exc)
                return
            except Exception as exc:  # noqa: BLE001 - every device hears of it
                self._report(round_no, items, f"failed: {type(exc).__name__}: {exc}")
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
            elapsed = time.perf_counter() - started
            self._report(
                round_no,
                items,
                f"{len(records)} recorded, {len(result['refused'])} refused ({elapsed:.1f}s)",
            )
            return

    def _report(self, round_no: int, items: list[_Item], what: str) -> None:
        if self.say is not None:
            self.say(
                f"{self.ledger.msp_id}: round {round_no}: a batch of {len(items)} devices: {what}"
            )


def _settle(item: _Item, outcome: dict | BaseException) -> None:
    if item.done.done():
        return
    if isinstance(outcome, BaseException):
        item.done.set_exception(outcome)
    else:
        item.done.set_result(outcome)


class DeviceLedger(_Identity):
    """One device's `Ledger`: its certificate (PEM, from its organisation's CA) and signer
    (``signer(sha256 digest) -> DER signature``, e.g. `fedfabric.gateway.signers`); its
    update goes through `batcher`, and queries through the batcher's ledger. A device
    submits nothing else (its organisation's admin registers it and drives rounds)."""

    def __init__(self, batcher: OrgBatcher, certificate: bytes, signer: Signer) -> None:
        if not isinstance(batcher.ledger, _Calls):
            raise TypeError("the batcher's ledger must be an FLLedger or a MemoryFLLedger")
        self.batcher = batcher
        self._queries: _Calls = batcher.ledger
        self._identify(batcher.ledger.msp_id, certificate)
        cert = x509.load_pem_x509_certificate(certificate)
        self._der = cert.public_bytes(serialization.Encoding.DER)
        self._sign = signer

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

    async def reach(self, height: int) -> None:
        """As the organisation's gateway ledger waits (`Ledger.reach`)."""
        await self.batcher.ledger.reach(height)

    @property
    def last_steps(self) -> Mapping[str, float]:
        """Nothing of its own: its updates go in its organisation's batches."""
        return {}

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
