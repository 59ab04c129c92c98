"""An in-memory ledger and a ``Stub`` over it that records the read/write set like a peer."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
from collections.abc import AsyncIterator

from fedfabric.chaincode._stub import KeyModification, Stub

Version = tuple[int, int]  # (block number, transaction number), as in Fabric's rwset


@dataclasses.dataclass(frozen=True)
class ReadWriteSet:
    """What a transaction read and wrote, sorted by key; ``None`` as a value is a delete.

    ``reads`` pairs each public key read with the version it had (``None``: absent).
    """

    reads: tuple[tuple[str, Version | None], ...] = ()
    writes: tuple[tuple[str, bytes | None], ...] = ()
    range_queries: tuple[tuple[str, str], ...] = ()
    private_writes: tuple[tuple[str, str, bytes | None], ...] = ()
    metadata_writes: tuple[tuple[str, str, str, bytes], ...] = ()


class MemoryLedger:
    """Committed world state, private data, key metadata and history, all in memory."""

    def __init__(self) -> None:
        self.state: dict[str, tuple[bytes, Version]] = {}
        self.private: dict[tuple[str, str], bytes] = {}
        self.metadata: dict[tuple[str, str], dict[str, bytes]] = {}
        self.history: dict[str, list[KeyModification]] = {}
        self.height = 0

    def get(self, key: str) -> bytes:
        """The committed value of ``key`` (``b""`` when absent)."""
        return self.state.get(key, (b"", None))[0]

    def put(self, key: str, value: bytes, *, tx_id: str = "setup") -> None:
        """Commit one write directly (to arrange a test's starting state)."""
        self.commit(ReadWriteSet(writes=((key, bytes(value)),)), tx_id=tx_id, timestamp=None)

    def commit(
        self, rwset: ReadWriteSet, *, tx_id: str, timestamp: datetime.datetime | None
    ) -> None:
        """Apply a transaction's writes as the next block."""
        version = (self.height, 0)
        self.height += 1
        for key, value in rwset.writes:
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = (value, version)
            self.history.setdefault(key, []).append(
                KeyModification(tx_id, value or b"", timestamp, value is None)
            )
        for collection, key, value in rwset.private_writes:
            if value is None:
                self.private.pop((collection, key), None)
            else:
                self.private[(collection, key)] = value
        for collection, key, metakey, value in rwset.metadata_writes:
            self.metadata.setdefault((collection, key), {})[metakey] = value


class MemoryStub(Stub):
    """``Stub`` over a ``MemoryLedger``; reads see committed state only, as on a peer."""

    def __init__(self, ledger: MemoryLedger, **kwargs) -> None:
        super().__init__(**kwargs)
        self.ledger = ledger
        self._reads: dict[str, Version | None] = {}
        self._writes: dict[str, bytes | None] = {}
        self._ranges: list[tuple[str, str]] = []
        self._private_writes: dict[tuple[str, str], bytes | None] = {}
        self._metadata_writes: dict[tuple[str, str, str], bytes] = {}

    def rwset(self) -> ReadWriteSet:
        """The read/write set recorded so far."""
        return ReadWriteSet(
            reads=tuple(sorted(self._reads.items())),
            writes=tuple(sorted(self._writes.items())),
            range_queries=tuple(self._ranges),
            private_writes=tuple(sorted((c, k, v) for (c, k), v in self._private_writes.items())),
            metadata_writes=tuple(
                sorted((c, k, m, v) for (c, k, m), v in self._metadata_writes.items())
            ),
        )

    async def _get_state(self, collection: str, key: str) -> bytes:
        if collection:
            return self.ledger.private.get((collection, key), b"")
        entry = self.ledger.state.get(key)
        self._reads.setdefault(key, entry[1] if entry else None)
        return entry[0] if entry else b""

    async def _get_state_multiple(self, collection: str, keys: list[str]) -> list[bytes]:
        return [await self._get_state(collection, key) for key in keys]

    async def _put_state(self, collection: str, key: str, value: bytes) -> None:
        if collection:
            self._private_writes[(collection, key)] = value
        else:
            self._writes[key] = value

    async def _del_state(self, collection: str, key: str) -> None:
        if collection:
            self._private_writes[(collection, key)] = None
        else:
            self._writes[key] = None

    def _scan(self, start: str, end: str) -> list[tuple[str, bytes]]:
        self._ranges.append((start, end))
        return [
            (k, v)
            for k, (v, _) in sorted(self.ledger.state.items())
            if start <= k and (not end or k < end)
        ]

    async def _range(
        self, collection: str, start: str, end: str
    ) -> AsyncIterator[tuple[str, bytes]]:
        for item in self._scan(start, end):
            yield item

    async def _range_page(
        self, collection: str, start: str, end: str, page_size: int, bookmark: str
    ) -> tuple[list[tuple[str, bytes]], str]:
        found = self._scan(bookmark or start, end)
        next_bookmark = found[page_size][0] if len(found) > page_size else ""
        return found[:page_size], next_bookmark

    async def _history(self, key: str) -> AsyncIterator[KeyModification]:
        for modification in reversed(self.ledger.history.get(key, [])):  # newest first
            yield modification

    async def _get_private_data_hash(self, collection: str, key: str) -> bytes:
        value = self.ledger.private.get((collection, key))
        return hashlib.sha256(value).digest() if value is not None else b""

    async def _get_state_metadata(self, collection: str, key: str) -> dict[str, bytes]:
        return dict(self.ledger.metadata.get((collection, key), {}))

    async def _put_state_metadata(
        self, collection: str, key: str, metakey: str, value: bytes
    ) -> None:
        self._metadata_writes[(collection, key, metakey)] = value
