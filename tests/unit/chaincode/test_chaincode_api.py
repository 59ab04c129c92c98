"""The contract API and the memory stub: routing, conversion, hooks, errors, key rules."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import fedfabric.chaincode as chaincode
import fedfabric.chaincode.testing as testing
from fedfabric.chaincode import ChaincodeError, ClientIdentity, Context, Contract, evaluate, submit
from fedfabric.chaincode.testing import MemoryLedger, fake_identity, invoke


@dataclasses.dataclass
class Asset:
    id: str
    size: int


class Assets(Contract):
    name = "assets"

    def __init__(self, settings=None):
        super().__init__(settings)
        self.calls: list[str] = []

    async def before_transaction(self, ctx: Context) -> None:
        self.calls.append(f"before {ctx.stub.function}")

    async def after_transaction(self, ctx: Context, result) -> None:
        self.calls.append(f"after {result!r}")

    @submit
    async def Put(self, ctx: Context, key: str, value: int) -> None:
        self.calls.append("Put")
        await ctx.stub.put_state(key, str(value).encode())

    @evaluate
    async def Get(self, ctx: Context, key: str) -> int:
        raw = await ctx.stub.get_state(key)
        if not raw:
            raise ChaincodeError(f"asset {key} does not exist", status=404)
        return int(raw)

    @evaluate
    def Types(
        self, ctx: Context, f: float, b: bool, raw: bytes, d: dict, items: list, asset: Asset
    ) -> dict:
        return {
            "f": f,
            "b": b,
            "raw": raw.hex(),
            "d": d,
            "items": items,
            "asset": dataclasses.asdict(asset),
        }

    @evaluate
    async def AsAsset(self, ctx: Context, id: str) -> Asset:
        return Asset(id=id, size=3)

    @evaluate
    async def Flag(self, ctx: Context) -> bool:
        return True

    @evaluate
    async def Text(self, ctx: Context) -> str:
        return "héllo"

    def helper(self) -> None:
        """Not a transaction: not decorated."""


class Other(Contract):
    @evaluate
    async def Get(self, ctx: Context, key: str) -> str:
        return f"other {key}"

    async def unknown_transaction(self, ctx: Context) -> str:
        return f"no such function {ctx.stub.function}"


# -- public surface -------------------------------------------------------------------------


def test_public_names_are_sorted_and_resolve():
    for module in (chaincode, testing):
        assert module.__all__ == sorted(module.__all__)
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_the_contract_api_imports_no_grpc():
    code = (
        "import sys, fedfabric.chaincode, fedfabric.chaincode.testing; "
        "sys.exit('grpc' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# -- routing --------------------------------------------------------------------------------


async def test_default_and_named_contract_routing():
    ledger = MemoryLedger()
    ledger.put("a", b"7")
    contracts = [Assets(), Other()]

    default = await invoke(contracts, "Get", "a", ledger=ledger)
    named = await invoke(contracts, "Other:Get", "a", ledger=ledger)

    assert (default.status, default.payload) == (200, b"7")
    assert (named.status, named.payload) == (200, b"other a")


async def test_unknown_contract_is_refused():
    result = await invoke(Assets(), "nope:Get", "a")

    assert (result.status, result.message) == (500, 'contract "nope" not found')


async def test_unknown_function_is_refused_by_default():
    result = await invoke(Assets(), "Missing")

    assert result.status == 500
    assert result.message == 'function "Missing" is not a transaction of contract "assets"'


async def test_unknown_function_hook_can_answer():
    result = await invoke([Assets(), Other()], "Other:Missing")

    assert (result.status, result.payload) == (200, b"no such function Other:Missing")


async def test_undecorated_methods_are_not_transactions():
    assert (await invoke(Assets(), "helper")).status == 500


async def test_wrong_argument_count_is_refused():
    result = await invoke(Assets(), "Put", "a")

    assert (result.status, result.message) == (500, "Put expects 2 argument(s), got 1")


# -- conversion -----------------------------------------------------------------------------


async def test_arguments_are_converted_from_type_hints():
    result = await invoke(
        Assets(), "Types", "1.5", "true", b"\x00\xff", '{"x":1}', "[1,2]", '{"id":"a1","size":2}'
    )

    assert result.status == 200, result.message
    assert json.loads(result.payload) == {
        "f": 1.5,
        "b": True,
        "raw": "00ff",
        "d": {"x": 1},
        "items": [1, 2],
        "asset": {"id": "a1", "size": 2},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("1.5", "yes", b"", "{}", "[]", "{}"), "argument b: cannot convert b'yes' to bool"),
        (("x", "true", b"", "{}", "[]", "{}"), "argument f: cannot convert b'x' to float"),
        (("1", "true", b"", "[]", "[]", "{}"), "argument d: cannot convert b'[]' to dict"),
        (("1", "true", b"", "{}", "[]", '{"id":"a"}'), "argument asset: cannot convert"),
    ],
)
async def test_bad_arguments_name_the_parameter(args, message):
    result = await invoke(Assets(), "Types", *args)

    assert result.status == 500
    assert result.message.startswith(message)


@pytest.mark.parametrize(
    ("function", "payload"),
    [
        ("AsAsset", b'{"id":"x","size":3}'),
        ("Flag", b"true"),
        ("Text", "héllo".encode()),
        ("Put", b""),
    ],
)
async def test_results_are_converted_to_bytes(function, payload):
    args = ("x",) if function == "AsAsset" else ("k", 1) if function == "Put" else ()

    result = await invoke(Assets(), function, *args)

    assert (result.status, result.payload) == (200, payload)


def test_unsupported_type_hints_fail_when_served():
    class Bad(Contract):
        @submit
        async def Put(self, ctx: Context, value: set) -> None: ...

    with pytest.raises(TypeError, match=r"Bad.Put\(value\): unsupported type"):
        _router([Bad()])


def _router(contracts):
    from fedfabric.chaincode._router import Router

    return Router(contracts)


# -- hooks and errors -----------------------------------------------------------------------


async def test_hooks_run_around_the_transaction():
    contract = Assets()

    await invoke(contract, "Put", "a", 1)

    assert contract.calls == ["before Put", "Put", "after None"]


async def test_a_refusing_before_hook_stops_the_transaction():
    class Guarded(Assets):
        async def before_transaction(self, ctx: Context) -> None:
            if ctx.client_identity.role != "admin":
                raise ChaincodeError("admins only", status=403)

    client = await invoke(Guarded(), "Put", "a", 1)
    admin = await invoke(Guarded(), "Put", "a", 1, creator=fake_identity(role="admin"))

    assert (client.status, client.message, client.rwset.writes) == (403, "admins only", ())
    assert admin.status == 200


async def test_chaincode_error_carries_status_message_payload():
    result = await invoke(Assets(), "Get", "missing")

    assert (result.status, result.message, result.payload) == (
        404,
        "asset missing does not exist",
        b"",
    )


def test_chaincode_error_status_must_be_an_error():
    with pytest.raises(ValueError, match="400-599"):
        ChaincodeError("fine", status=200)


async def test_metadata_describes_the_contracts():
    result = await invoke([Assets(), Other()], "org.hyperledger.fabric:GetMetadata")

    metadata = json.loads(result.payload)
    assert metadata["default_contract"] == "assets"
    assert sorted(metadata["contracts"]) == ["Other", "assets"]
    put = next(t for t in metadata["contracts"]["assets"]["transactions"] if t["name"] == "Put")
    assert put == {
        "name": "Put",
        "tag": ["submit"],
        "parameters": [
            {"name": "key", "schema": {"type": "string"}},
            {"name": "value", "schema": {"type": "integer"}},
        ],
    }


def test_contract_name_and_settings():
    contract = Other({"org": "Org1MSP"})

    assert (Assets.name, Other.name) == ("assets", "Other")
    assert contract.settings["org"] == "Org1MSP"
    with pytest.raises(TypeError):
        contract.settings["org"] = "x"  # type: ignore[index]


# -- memory stub and read/write sets ----------------------------------------------------------


class Ledgerish(Contract):
    @submit
    async def Swap(self, ctx: Context, a: str, b: str) -> list:
        va, vb = await ctx.stub.get_state(a), await ctx.stub.get_state(b)
        await ctx.stub.put_state(b, va)
        await ctx.stub.put_state(a, vb)
        await ctx.stub.put_state(a, vb + b"!")  # last write wins
        return [va.decode(), (await ctx.stub.get_state(a)).decode()]

    @submit
    async def Bad(self, ctx: Context, which: str) -> None:
        if which == "put":
            await ctx.stub.put_state("", b"v")
        elif which == "composite":
            ctx.stub.create_composite_key("type", ["a\x00b"])
        elif which == "range":
            ctx.stub.get_state_by_range("\x00x", "")
        elif which == "event":
            ctx.stub.set_event("", b"")

    @evaluate
    async def Keys(self, ctx: Context, object_type: str) -> list:
        return [
            ctx.stub.split_composite_key(k)
            async for k, _ in ctx.stub.get_state_by_partial_composite_key(object_type, [])
        ]

    @evaluate
    async def History(self, ctx: Context, key: str) -> list:
        return [[m.value.decode(), m.is_delete] async for m in ctx.stub.get_history_for_key(key)]


async def test_reads_see_committed_state_and_writes_are_sorted():
    ledger = MemoryLedger()
    ledger.put("x", b"1")
    ledger.put("y", b"2")

    result = await invoke(Ledgerish(), "Swap", "y", "x", ledger=ledger, commit=False)

    assert json.loads(result.payload) == ["2", "2"]  # own writes are invisible
    assert result.rwset.reads == (("x", (0, 0)), ("y", (1, 0)))
    assert result.rwset.writes == (("x", b"2"), ("y", b"1!"))


async def test_a_transaction_is_deterministic():
    ledger = MemoryLedger()
    ledger.put("x", b"1")
    runs = [
        await invoke(Ledgerish(), "Swap", "x", "y", ledger=ledger, commit=False) for _ in range(2)
    ]

    assert runs[0] == runs[1]


async def test_successful_submits_are_committed():
    ledger = MemoryLedger()
    ledger.put("x", b"1")

    await invoke(Ledgerish(), "Swap", "x", "y", ledger=ledger)
    await invoke(Assets(), "Get", "x", ledger=ledger)  # evaluate: nothing to commit

    assert (ledger.get("x"), ledger.get("y")) == (b"!", b"1")
    history = await invoke(Ledgerish(), "History", "x", ledger=ledger)
    assert json.loads(history.payload) == [["!", False], ["1", False]]


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("put", "key must not be an empty string"),
        ("composite", "input contains unicode U+0000 starting at position [1]"),
        ("range", "first character of the key [\x00x] contains a null character"),
        ("event", "event name can not be empty string"),
    ],
)
async def test_key_rules(which, message):
    result = await invoke(Ledgerish(), "Bad", which)

    assert result.status == 500
    assert result.message.startswith(message)


async def test_partial_composite_key_range_ends_at_u10ffff():
    ledger = MemoryLedger()
    key = chaincode.Stub.create_composite_key("asset", ["alice", "a1"])
    ledger.put(key, b"v")
    ledger.put("plain", b"v")

    result = await invoke(Ledgerish(), "Keys", "asset", ledger=ledger)

    assert key == "\x00asset\x00alice\x00a1\x00"
    assert json.loads(result.payload) == [["asset", ["alice", "a1"]]]
    assert result.rwset.range_queries == (("\x00asset\x00", "\x00asset\x00\U0010ffff"),)


# -- identities -----------------------------------------------------------------------------


def test_client_identity_reads_msp_role_and_attributes():
    identity = ClientIdentity(
        fake_identity("Org2MSP", role="admin", name="boss", attributes={"team": "ml"})
    )

    assert (identity.msp_id, identity.role, identity.id) == ("Org2MSP", "admin", "CN=boss,OU=admin")
    assert identity.organizational_units == ("admin",)
    assert (identity.attribute("team"), identity.attribute("nope")) == ("ml", None)
    assert identity.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")


def test_a_creator_that_is_not_x509_is_refused():
    with pytest.raises(ChaincodeError, match="creator is not a serialized X.509 identity"):
        ClientIdentity(b"\x0a\x03Org\x12\x03xyz")
