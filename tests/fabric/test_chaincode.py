"""fedfabric's Python chaincode runtime beside the official Node one, on the same real network.

``kv`` is the Node reference contract (tests/fixtures/node-kv) and ``pykv`` its Python twin
(tests/fixtures/pykv.py); both run as chaincode-as-a-service behind the same three peers with
mutual TLS. Every test makes the same calls on both and expects the same results and errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fedfabric.gateway import CommitError, Contract, EndorseError, EvaluateError, connect_profile
from fedfabric.network import FabricNetwork

CHAINCODES = ("kv", "pykv")


@pytest.fixture
async def contracts(network: FabricNetwork) -> AsyncIterator[dict[str, Contract]]:
    async with connect_profile(network.profile("transport"), "User1") as gateway:
        channel = gateway.get_network(network.topology.channel)
        yield {name: channel.get_contract(name) for name in CHAINCODES}


async def on_both(contracts: dict[str, Contract], call) -> dict[str, object]:  # noqa: ANN001
    """Run ``call(contract, name)`` on both chaincodes; return the result or the error of each."""
    outcome: dict[str, object] = {}
    for name, contract in contracts.items():
        try:
            outcome[name] = await call(contract, name)
        except (EvaluateError, EndorseError, CommitError) as exc:
            outcome[name] = exc
    return outcome


def chaincode_messages(error: object) -> list[str]:
    assert isinstance(error, EvaluateError | EndorseError), error
    assert error.details, error
    return sorted({d.message for d in error.details})


async def test_put_returns_the_value_and_get_reads_it_back(contracts) -> None:
    async def put_get(contract: Contract, name: str) -> tuple[bytes, bytes]:
        put = await contract.submit("Put", [f"{name}-colour", "blue"])
        return put, await contract.evaluate("Get", [f"{name}-colour"])

    outcome = await on_both(contracts, put_get)

    assert outcome["kv"] == outcome["pykv"] == (b"blue", b"blue")


async def test_increment_counts_from_an_absent_key(contracts) -> None:
    async def count(contract: Contract, name: str) -> list[bytes]:
        return [await contract.submit("Increment", [f"{name}-counter"]) for _ in range(3)]

    outcome = await on_both(contracts, count)

    assert outcome["kv"] == outcome["pykv"] == [b"1", b"2", b"3"]


async def test_transient_data_reaches_the_contract_but_not_the_arguments(contracts) -> None:
    async def transient(contract: Contract, name: str) -> bytes:
        return await contract.evaluate("Transient", ["secret"], transient={"secret": b"s3cr3t"})

    outcome = await on_both(contracts, transient)

    assert outcome["kv"] == outcome["pykv"] == b"s3cr3t"


async def test_missing_key_is_the_same_error_from_both(contracts) -> None:
    async def get_missing(contract: Contract, name: str) -> bytes:
        return await contract.evaluate("Get", ["never-written"])

    outcome = await on_both(contracts, get_missing)

    assert chaincode_messages(outcome["kv"]) == chaincode_messages(outcome["pykv"])
    assert "key never-written does not exist" in chaincode_messages(outcome["pykv"])[0]


async def test_missing_transient_field_is_the_same_error_from_both(contracts) -> None:
    async def no_field(contract: Contract, name: str) -> bytes:
        return await contract.evaluate("Transient", ["absent"], transient={"other": b"x"})

    outcome = await on_both(contracts, no_field)

    assert chaincode_messages(outcome["kv"]) == chaincode_messages(outcome["pykv"])
    assert "no transient field absent" in chaincode_messages(outcome["pykv"])[0]


async def test_deleted_key_reads_as_missing(contracts) -> None:
    async def put_delete_get(contract: Contract, name: str) -> bytes:
        await contract.submit("Put", [f"{name}-gone", "x"])
        assert await contract.submit("Delete", [f"{name}-gone"]) == b""
        return await contract.evaluate("Get", [f"{name}-gone"])

    outcome = await on_both(contracts, put_delete_get)

    assert [m.replace("pykv-", "kv-") for m in chaincode_messages(outcome["pykv"])] == (
        chaincode_messages(outcome["kv"])
    )


async def test_refused_submit_is_an_endorse_error_from_both(contracts) -> None:
    async def wrong_arity(contract: Contract, name: str) -> bytes:
        return await contract.submit("Put", ["only-a-key"])

    outcome = await on_both(contracts, wrong_arity)

    for name in CHAINCODES:
        assert isinstance(outcome[name], EndorseError), outcome[name]
        assert {d.msp_id for d in outcome[name].details} == {"TransportMSP"}
        assert all("chaincode response 500" in m for m in chaincode_messages(outcome[name]))


async def test_unknown_function_is_refused_by_both(contracts) -> None:
    async def unknown(contract: Contract, name: str) -> bytes:
        return await contract.evaluate("NoSuchFunction", [])

    outcome = await on_both(contracts, unknown)

    for name in CHAINCODES:
        assert any("NoSuchFunction" in m for m in chaincode_messages(outcome[name]))
