"""Checkpointers: remember how far event processing got, to resume after a restart.

The state is ``(block_number, transaction_id)``: the block in which the next event is expected
and the id of the last processed transaction in it (``""`` when none of it was processed).
Pass a checkpointer as ``checkpoint=`` when opening an event stream to resume right after the
last event that was checkpointed; checkpoint only after an event is fully processed, so no event
is ever skipped (one may be seen twice if the process dies in between).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol


class Checkpoint(Protocol):
    """A position in the event stream to resume from."""

    @property
    def block_number(self) -> int:
        """The block in which the next event is expected."""
        ...

    @property
    def transaction_id(self) -> str:
        """The last processed transaction in that block, or ``""``."""
        ...


class _ChaincodeEventLike(Protocol):
    @property
    def block_number(self) -> int: ...

    @property
    def transaction_id(self) -> str: ...


class Checkpointer(Checkpoint, Protocol):
    """A ``Checkpoint`` that can be moved on: what an event consumer writes its progress to.

    ``InMemoryCheckpointer`` and ``FileCheckpointer`` implement it; so can a database row.
    """

    async def checkpoint_block(self, block_number: int) -> None:
        """Record that block ``block_number`` was completely processed."""
        ...

    async def checkpoint_transaction(self, block_number: int, transaction_id: str) -> None:
        """Record that ``transaction_id`` in ``block_number`` was processed."""
        ...

    async def checkpoint_chaincode_event(self, event: _ChaincodeEventLike) -> None:
        """Record that the chaincode event ``event`` was processed."""
        ...


class InMemoryCheckpointer:
    """A checkpointer that keeps its state in memory only (lost when the process ends)."""

    def __init__(self) -> None:
        self._block_number = 0
        self._transaction_id = ""

    @property
    def block_number(self) -> int:
        """The block in which the next event is expected."""
        return self._block_number

    @property
    def transaction_id(self) -> str:
        """The last processed transaction in ``block_number``, or ``""``."""
        return self._transaction_id

    async def checkpoint_block(self, block_number: int) -> None:
        """Record that block ``block_number`` was completely processed."""
        await self.checkpoint_transaction(block_number + 1, "")

    async def checkpoint_transaction(self, block_number: int, transaction_id: str) -> None:
        """Record that ``transaction_id`` in ``block_number`` was processed."""
        await self._store(block_number, transaction_id)

    async def checkpoint_chaincode_event(self, event: _ChaincodeEventLike) -> None:
        """Record that the chaincode event ``event`` was processed."""
        await self.checkpoint_transaction(event.block_number, event.transaction_id)

    async def _store(self, block_number: int, transaction_id: str) -> None:
        self._block_number = block_number
        self._transaction_id = transaction_id


class FileCheckpointer(InMemoryCheckpointer):
    """A checkpointer persisted as JSON ``{"blockNumber": n, "transactionId": "..."}``.

    It reads the files the official Node and Go clients write too: ``blockNumber`` as a number
    or a decimal string, either key absent, or an empty file (all meaning "nothing processed
    yet"). Like theirs, it creates ``path`` (empty) at construction if it does not exist, so a
    bad path fails at once (``OSError``); a file it cannot understand is a ``ValueError``
    naming it.

    Each checkpoint writes a temporary file next to ``path``, fsyncs it and renames it over
    ``path``, so after a crash the file holds either the old or the new state, never a mix.
    The in-memory state only moves once the new state is on disk.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._path = Path(path)
        self._lock = asyncio.Lock()
        with self._path.open("a"):  # create it now: a bad path fails here, not at a checkpoint
            pass
        self._block_number, self._transaction_id = _read_state(self._path)

    @property
    def path(self) -> Path:
        """The checkpoint file."""
        return self._path

    async def _store(self, block_number: int, transaction_id: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._write, block_number, transaction_id)
            await super()._store(block_number, transaction_id)

    def _write(self, block_number: int, transaction_id: str) -> None:
        data = json.dumps({"blockNumber": block_number, "transactionId": transaction_id})
        directory = self._path.parent
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{self._path.name}.")
        try:
            with os.fdopen(fd, "w") as temp:
                temp.write(data)
                temp.flush()
                os.fsync(temp.fileno())
            os.replace(temp_name, self._path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)


def _read_state(path: Path) -> tuple[int, str]:
    text = path.read_text()
    if not text.strip():
        return 0, ""
    try:
        state = json.loads(text)
        if not isinstance(state, dict):
            raise TypeError(f"a JSON object, not {type(state).__name__}")
        return int(state.get("blockNumber") or 0), str(state.get("transactionId") or "")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path}: not a checkpoint file: {err}") from err
