"""Checkpointer semantics (fabric-protocol.md §4) and crash safety of the file checkpointer."""

import json
import os
from pathlib import Path

import pytest

from fedfabric.gateway import ChaincodeEvent, FileCheckpointer, InMemoryCheckpointer

EVENT = ChaincodeEvent(
    block_number=41, transaction_id="tx-41-b", chaincode_name="fl", event_name="E", payload=b""
)


@pytest.fixture(params=["memory", "file"])
def checkpointer(request, tmp_path: Path) -> InMemoryCheckpointer:
    if request.param == "memory":
        return InMemoryCheckpointer()
    return FileCheckpointer(tmp_path / "checkpoint.json")


def test_new_checkpointer_is_at_the_zero_position(checkpointer: InMemoryCheckpointer) -> None:
    assert (checkpointer.block_number, checkpointer.transaction_id) == (0, "")


async def test_checkpoint_block_moves_to_the_start_of_the_next_block(
    checkpointer: InMemoryCheckpointer,
) -> None:
    await checkpointer.checkpoint_transaction(7, "tx-7")

    await checkpointer.checkpoint_block(7)

    assert (checkpointer.block_number, checkpointer.transaction_id) == (8, "")


async def test_checkpoint_transaction_keeps_block_and_transaction(
    checkpointer: InMemoryCheckpointer,
) -> None:
    await checkpointer.checkpoint_transaction(7, "tx-7")

    assert (checkpointer.block_number, checkpointer.transaction_id) == (7, "tx-7")


async def test_checkpoint_chaincode_event_records_its_block_and_transaction(
    checkpointer: InMemoryCheckpointer,
) -> None:
    await checkpointer.checkpoint_chaincode_event(EVENT)

    assert (checkpointer.block_number, checkpointer.transaction_id) == (41, "tx-41-b")


async def test_file_checkpointer_writes_fabric_gateway_json_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    checkpointer = FileCheckpointer(path)

    await checkpointer.checkpoint_chaincode_event(EVENT)

    assert json.loads(path.read_text()) == {"blockNumber": 41, "transactionId": "tx-41-b"}
    reloaded = FileCheckpointer(path)
    assert (reloaded.block_number, reloaded.transaction_id) == (41, "tx-41-b")


async def test_file_checkpointer_fsyncs_before_renaming(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (calls.append("replace"), real_replace(src, dst))[1]
    )
    checkpointer = FileCheckpointer(tmp_path / "checkpoint.json")

    await checkpointer.checkpoint_block(3)

    assert calls == ["fsync", "replace", "fsync"]  # file data, rename, directory entry


async def test_crash_while_saving_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.json"
    checkpointer = FileCheckpointer(path)
    await checkpointer.checkpoint_transaction(5, "tx-5")

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await checkpointer.checkpoint_transaction(6, "tx-6")

    assert json.loads(path.read_text()) == {"blockNumber": 5, "transactionId": "tx-5"}
    assert (checkpointer.block_number, checkpointer.transaction_id) == (5, "tx-5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json"]


@pytest.mark.parametrize(
    ("content", "state"),
    [
        ("", (0, "")),
        ("{}", (0, "")),
        ('{"blockNumber":"6"}', (6, "")),
        ('{"blockNumber":"6","transactionId":"tx-6"}', (6, "tx-6")),
        ('{"blockNumber":6,"transactionId":"tx-6"}', (6, "tx-6")),
    ],
)
def test_file_checkpointer_reads_what_the_node_and_go_clients_write(
    tmp_path: Path, content: str, state: tuple[int, str]
) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(content)

    checkpointer = FileCheckpointer(path)

    assert (checkpointer.block_number, checkpointer.transaction_id) == state


def test_file_checkpointer_creates_its_file_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"

    FileCheckpointer(path)

    assert path.exists()


def test_file_checkpointer_with_a_bad_path_fails_at_construction(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        FileCheckpointer(tmp_path / "no-such-folder" / "checkpoint.json")


def test_file_checkpointer_names_a_file_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text("[1, 2]")

    with pytest.raises(ValueError, match=f"{path}: not a checkpoint file"):
        FileCheckpointer(path)
