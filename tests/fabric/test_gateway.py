"""fedfabric.gateway against real Fabric: issue 5's scenarios, one per test.

Every test uses the session network (3 orgs, policy OutOf(2, ...)) through the Transport
organisation's peer, unless it says otherwise. Calls that could hang are bounded by
``asyncio.timeout``; tests that stop nodes restart them and wait until every organisation
endorses again, so the tests after them see a whole network.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import proposal_pb2, transaction_pb2

from fedfabric.gateway import (
    CommitError,
    Contract,
    EndorseError,
    EvaluateError,
    FileCheckpointer,
    Gateway,
    GatewayError,
    Status,
    Transaction,
    connect,
    connect_profile,
    load_identity,
    load_private_key,
    signers,
)
from fedfabric.network import FabricNetwork
from fedfabric.network._crypto import issue_identity
from tests.fabric.conftest import BOUND, TIMEOUTS

ORGS = ("TransportMSP", "EnergyMSP", "HealthMSP")

SECRET = b"transient-secret-never-on-the-ledger"


# ------------------------------------------------------------------------------------ helpers
async def poll(attempt: Callable[[], Awaitable[Any]], *, what: str, timeout: float = 120.0) -> Any:
    """Retry ``attempt`` until it returns without ``GatewayError``; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except GatewayError as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {err}") from err
        await asyncio.sleep(0.5)


async def commit(transaction: Transaction) -> Status:
    """Submit an endorsed transaction and wait for its status."""
    return await (await transaction.submit()).status()


async def submit_for_status(
    contract: Contract, name: str, args: Sequence[str], **options: Any
) -> Status:
    """Submit with the split flow, returning the commit ``Status`` (transaction id, block)."""
    return await commit(await contract.new_proposal(name, args, **options).endorse())


def endorser_msp_ids(transaction: Transaction) -> set[str]:
    action = _action(gateway_pb2.PreparedTransaction.FromString(transaction.bytes()).envelope)
    return {
        identities_pb2.SerializedIdentity.FromString(e.endorser).mspid
        for e in action.action.endorsements
    }


def _action(envelope: common_pb2.Envelope) -> transaction_pb2.ChaincodeActionPayload:
    payload = common_pb2.Payload.FromString(envelope.payload)
    transaction = transaction_pb2.Transaction.FromString(payload.data)
    return transaction_pb2.ChaincodeActionPayload.FromString(transaction.actions[0].payload)


async def block(gateway: Gateway, channel: str, number: int) -> common_pb2.Block:
    """Committed block ``number``, read through the peer's Deliver service."""
    async with asyncio.timeout(BOUND):
        events = gateway.get_network(channel).block_events(start_block=number)
        async with events:
            return await anext(events)


def envelope_of(block_: common_pb2.Block, transaction_id: str) -> common_pb2.Envelope:
    for data in block_.data.data:
        envelope = common_pb2.Envelope.FromString(data)
        header = common_pb2.Payload.FromString(envelope.payload).header
        if common_pb2.ChannelHeader.FromString(header.channel_header).tx_id == transaction_id:
            return envelope
    raise AssertionError(f"transaction {transaction_id} not in block {block_.header.number}")


def peer_named(network: FabricNetwork, host: str) -> Any:
    return next(p for p in network.topology.peers if p.host == host)


def peer_of(network: FabricNetwork, msp_id: str) -> str:
    return next(
        p.host for p in network.topology.peers if network.topology.org(p.org).msp_id == msp_id
    )


def connect_as(
    network: FabricNetwork,
    *,
    cert: Path,
    key: Path,
    tls_root: Path | None = None,
    sign: bool = True,
    via: str = "transport",
) -> Gateway:
    """Connect to the peer of org ``via`` with a chosen Transport signing identity (Transport
    User1's TLS client pair)."""
    endpoint = network.endpoint(via)
    tls_user = network.identity("transport", "User1")
    return connect(
        identity=load_identity("TransportMSP", cert),
        signer=signers.new_private_key_signer(load_private_key(key)) if sign else None,
        endpoint=endpoint.address,
        tls_root_cert=(tls_root or endpoint.tls_root_cert).read_bytes(),
        client_cert=tls_user.tls_cert.read_bytes(),
        client_key=tls_user.tls_key.read_bytes(),
        server_name_override=endpoint.server_name,
        timeouts=TIMEOUTS,
    )


# ------------------------------------------------------------------------------------ fixtures


# ------------------------------------------------------------------------------------ round trips
async def test_submit_then_evaluate_round_trip(contract: Contract) -> None:
    assert await contract.submit("Put", ["round-trip", "value-1"]) == b"value-1"

    assert await contract.evaluate("Get", ["round-trip"]) == b"value-1"


async def test_submit_says_where_its_time_went_and_in_which_block(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    steps: dict[str, float] = {}

    await contract.submit(
        "Put", ["timed", "value-t"], sync_orgs=["TransportMSP", "EnergyMSP"], steps=steps
    )

    assert set(steps) == {"endorse", "order", "sync", "block"}
    assert steps["endorse"] > 0 and steps["order"] > 0 and steps["sync"] >= 0
    committed = await block(gateway, channel, int(steps["block"]))
    assert b"value-t" in committed.SerializeToString()


async def test_transient_data_reaches_the_chaincode(contract: Contract) -> None:
    assert await contract.evaluate("Transient", ["secret"], transient={"secret": SECRET}) == SECRET
    assert await contract.submit("Transient", ["secret"], transient={"secret": SECRET}) == SECRET


async def test_transient_data_is_not_recorded_on_the_ledger(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    status = await submit_for_status(
        contract, "Put", ["with-transient", "public"], transient={"secret": SECRET}
    )

    committed = await block(gateway, channel, status.block_number)
    envelope = envelope_of(committed, status.transaction_id)
    proposal_payload = proposal_pb2.ChaincodeProposalPayload.FromString(
        _action(envelope).chaincode_proposal_payload
    )
    assert status.successful
    assert dict(proposal_payload.TransientMap) == {}
    assert SECRET not in committed.SerializeToString()


async def test_split_flow_endorse_submit_then_commit_status(contract: Contract) -> None:
    proposal = contract.new_proposal("Put", ["split-flow", "value-2"])

    transaction = await proposal.endorse()
    submitted = await transaction.submit()
    status = await submitted.status()

    assert transaction.result == b"value-2"
    assert transaction.transaction_id == proposal.transaction_id == status.transaction_id
    assert status.successful and status.code_name == "VALID" and status.block_number > 0
    assert await contract.evaluate("Get", ["split-flow"]) == b"value-2"


async def test_offline_signing_with_a_separate_signer(network: FabricNetwork, channel: str) -> None:
    files = network.identity("transport", "User2")
    sign = signers.new_private_key_signer(load_private_key(files.key))  # e.g. in an HSM
    async with connect_as(network, cert=files.cert, key=files.key, sign=False) as offline:
        contract = offline.get_network(channel).get_contract("kv")
        unsigned = contract.new_proposal("Put", ["offline", "signed-elsewhere"])
        with pytest.raises(ValueError, match="no signer"):
            await unsigned.endorse()

        proposal = offline.new_signed_proposal(unsigned.bytes(), sign(unsigned.digest()))
        endorsed = await proposal.endorse()
        transaction = offline.new_signed_transaction(endorsed.bytes(), sign(endorsed.digest()))
        submitted = await transaction.submit()
        status = await offline.new_signed_commit(
            submitted.bytes(), sign(submitted.digest())
        ).status()
        request = offline.get_network(channel).new_chaincode_events_request(
            "kv", start_block=status.block_number
        )
        events = offline.new_signed_chaincode_events_request(
            request.bytes(), sign(request.digest())
        ).events()
        async with asyncio.timeout(BOUND), events:
            event = await anext(events)

    assert status.successful and endorsed.result == b"signed-elsewhere"
    assert (event.transaction_id, event.payload) == (status.transaction_id, b"offline")


# ------------------------------------------------------------------------------------ endorsement
@pytest.mark.parametrize("orgs", [("TransportMSP", "HealthMSP"), ("EnergyMSP", "HealthMSP")])
async def test_endorsing_orgs_pinned_are_the_orgs_that_endorse(
    contract: Contract, orgs: tuple[str, str]
) -> None:
    transaction = await contract.new_proposal(
        "Put", ["pinned", "-".join(orgs)], endorsing_orgs=orgs
    ).endorse()

    assert endorser_msp_ids(transaction) == set(orgs)
    assert (await commit(transaction)).successful


async def test_endorsement_by_too_few_orgs_is_invalid_at_commit(contract: Contract) -> None:
    with pytest.raises(CommitError) as info:
        await contract.submit("Put", ["one-org", "x"], endorsing_orgs=["TransportMSP"])

    assert info.value.code_name == "ENDORSEMENT_POLICY_FAILURE" and info.value.code == 10
    assert len(info.value.transaction_id) == 64
    assert "ENDORSEMENT_POLICY_FAILURE" in str(info.value)


async def test_chaincode_error_message_reaches_the_caller_unchanged(contract: Contract) -> None:
    with pytest.raises(EndorseError) as endorse:
        await contract.submit("Get", ["no-such-key"])
    with pytest.raises(EvaluateError) as evaluate:
        await contract.evaluate("Get", ["no-such-key"])

    for err in (endorse.value, evaluate.value):
        assert "key no-such-key does not exist" in str(err)
        assert any("key no-such-key does not exist" in d.message for d in err.details)
        assert {d.msp_id for d in err.details} <= set(ORGS) and err.transaction_id


async def test_mvcc_conflict_between_concurrent_submits_is_a_commit_error(
    contract: Contract,
) -> None:
    # Both read version v of the key before either commits (a commit takes a 250 ms batch),
    # so whichever the orderer puts second is invalidated.
    results = await asyncio.gather(
        contract.submit("Increment", ["mvcc-counter"]),
        contract.submit("Increment", ["mvcc-counter"]),
        return_exceptions=True,
    )

    conflicts = [r for r in results if isinstance(r, CommitError)]
    assert [r for r in results if isinstance(r, bytes)] == [b"1"]
    assert len(conflicts) == 1 and conflicts[0].code_name == "MVCC_READ_CONFLICT"
    assert "MVCC_READ_CONFLICT" in str(conflicts[0]) and len(conflicts[0].transaction_id) == 64
    assert await contract.evaluate("Get", ["mvcc-counter"]) == b"1"


# ------------------------------------------------------------------------------------ events
async def test_chaincode_events_resume_exactly_once_after_the_listener_is_killed(
    gateway: Gateway, contract: Contract, channel: str, tmp_path: Path
) -> None:
    start = (await submit_for_status(contract, "Put", ["events-start", "x"])).block_number + 1
    statuses: list[Status] = []
    for batch in (["ev-0", "ev-1", "ev-2", "ev-3"], ["ev-4", "ev-5", "ev-6"]):  # several per block
        statuses += await asyncio.gather(
            *(submit_for_status(contract, "Put", [key, "v"]) for key in batch)
        )
    network = gateway.get_network(channel)
    checkpoint_file = tmp_path / "chaincode-events.json"
    seen: list[Any] = []
    killed = asyncio.Event()

    async def listener(checkpointer: FileCheckpointer, stop_after: int) -> None:
        async with network.chaincode_events(
            "kv", start_block=start, checkpoint=checkpointer
        ) as events:
            async for event in events:
                seen.append(event)
                await checkpointer.checkpoint_chaincode_event(event)
                if len(seen) == stop_after:
                    killed.set()
                    await asyncio.Event().wait()  # still streaming when the kill comes

    first = asyncio.create_task(listener(FileCheckpointer(checkpoint_file), stop_after=3))
    async with asyncio.timeout(BOUND):
        await killed.wait()
    first.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await first
    killed.clear()
    second = asyncio.create_task(
        listener(FileCheckpointer(checkpoint_file), stop_after=len(statuses))
    )
    async with asyncio.timeout(BOUND):
        await killed.wait()
    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second

    assert sorted(e.transaction_id for e in seen) == sorted(s.transaction_id for s in statuses)
    assert sorted(e.payload for e in seen) == [f"ev-{i}".encode() for i in range(7)]
    assert [e.block_number for e in seen] == sorted(e.block_number for e in seen)
    assert json.loads(checkpoint_file.read_text())["transactionId"] == seen[-1].transaction_id


@pytest.mark.parametrize("kind", ["block_events", "filtered_block_events"])
async def test_block_events_resume_exactly_once_after_the_stream_is_closed(
    gateway: Gateway, contract: Contract, channel: str, tmp_path: Path, kind: str
) -> None:
    statuses = [await submit_for_status(contract, "Put", [f"{kind}-{i}", "v"]) for i in range(4)]
    first, last = statuses[0].block_number, statuses[-1].block_number
    open_stream = getattr(gateway.get_network(channel), kind)
    checkpoint_file = tmp_path / "block-events.json"
    received: list[int] = []

    def number(b: Any) -> int:
        return b.header.number if kind == "block_events" else b.number

    for stop_after in (2, last - first + 1):  # closed after two blocks, then resumed
        checkpointer = FileCheckpointer(checkpoint_file)
        async with (
            asyncio.timeout(BOUND),
            open_stream(start_block=first, checkpoint=checkpointer) as blocks,
        ):
            async for b in blocks:
                received.append(number(b))
                await checkpointer.checkpoint_block(number(b))
                if len(received) == stop_after:
                    break

    assert received == list(range(first, last + 1))
    assert json.loads(checkpoint_file.read_text()) == {"blockNumber": last + 1, "transactionId": ""}


# ------------------------------------------------------------------------------------ bad input
async def test_wrong_channel_is_a_clear_error(gateway: Gateway) -> None:
    contract = gateway.get_network("no-such-channel").get_contract("kv")

    async with asyncio.timeout(BOUND):
        with pytest.raises(EvaluateError, match="no-such-channel") as evaluate:
            await contract.evaluate("Get", ["k"])
        with pytest.raises(EndorseError, match="no-such-channel") as endorse:
            await contract.submit("Put", ["k", "v"])

    assert evaluate.value.code == grpc.StatusCode.UNAVAILABLE  # Fabric's choice of code
    assert endorse.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_unknown_chaincode_is_a_clear_error(gateway: Gateway, channel: str) -> None:
    contract = gateway.get_network(channel).get_contract("no-such-chaincode")

    async with asyncio.timeout(BOUND):
        with pytest.raises(EvaluateError, match="no-such-chaincode") as evaluate:
            await contract.evaluate("Get", ["k"])
        with pytest.raises(
            EndorseError, match="No metadata was found for chaincode no-such-chaincode"
        ) as endorse:
            await contract.submit("Put", ["k", "v"])

    assert evaluate.value.code == endorse.value.code == grpc.StatusCode.FAILED_PRECONDITION


async def test_corrupt_key_file_is_named_before_any_call(
    network: FabricNetwork, tmp_path: Path
) -> None:
    corrupt = tmp_path / "priv_sk"
    corrupt.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    profile = json.loads(network.profile("transport").read_text())
    profile["users"]["User1"]["key_path"] = str(corrupt)
    profile_path = tmp_path / "transport.json"
    profile_path.write_text(json.dumps(profile))

    with pytest.raises(ValueError, match=f"{corrupt}: not a readable unencrypted PEM private key"):
        connect_profile(profile_path, "User1")


async def test_key_not_matching_the_certificate_is_refused_by_the_peer(
    network: FabricNetwork, channel: str
) -> None:
    user = network.identity("transport", "User1")
    other_key = network.identity("energy", "User1").key
    async with connect_as(network, cert=user.cert, key=other_key) as gw:
        contract = gw.get_network(channel).get_contract("kv")
        async with asyncio.timeout(BOUND):
            with pytest.raises(EndorseError) as info:
                await contract.submit("Put", ["wrong-key", "v"])

    assert "access denied" in str(info.value)
    assert [d.msp_id for d in info.value.details] == ["TransportMSP"]


async def test_expired_certificate_is_refused_by_every_org_and_nothing_commits(
    network: FabricNetwork, channel: str, contract: Contract
) -> None:
    past = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    folder = issue_identity(
        network.layout.crypto_dir,
        network.topology.org("transport"),
        "Expired",
        not_before=past,
        not_after=past + dt.timedelta(days=1),
    )
    cert = next((folder / "msp" / "signcerts").glob("*.pem"))
    refusals: dict[str, list[GatewayError]] = {}
    for org, msp_id in zip(("transport", "energy", "health"), ORGS, strict=True):
        async with connect_as(
            network, cert=cert, key=folder / "msp" / "keystore" / "priv_sk", via=org
        ) as gw:
            expired = gw.get_network(channel).get_contract("kv")
            async with asyncio.timeout(BOUND):
                with pytest.raises(EndorseError) as endorse:
                    await expired.submit("Put", ["expired", org])
                with pytest.raises(EvaluateError) as evaluate:
                    await expired.evaluate("Get", ["expired"])
        refusals[msp_id] = [endorse.value, evaluate.value]

    # Each org's own peer refuses the identity itself (Fabric versions word it differently:
    # "client identity expired", "creator org unknown, creator is malformed").
    for msp_id, errors in refusals.items():
        for err in errors:
            assert msp_id in {d.msp_id for d in err.details}, err
            assert any(w in str(err) for w in ("identity", "creator")), err
    with pytest.raises(EvaluateError, match="does not exist"):
        await contract.evaluate("Get", ["expired"])


async def test_wrong_tls_root_fails_the_handshake_without_hanging(
    network: FabricNetwork, channel: str
) -> None:
    user = network.identity("transport", "User1")
    wrong_root = network.endpoint("energy").tls_root_cert
    async with connect_as(network, cert=user.cert, key=user.key, tls_root=wrong_root) as gw:
        contract = gw.get_network(channel).get_contract("kv")
        async with asyncio.timeout(BOUND):
            with pytest.raises(EvaluateError) as evaluate:
                await contract.evaluate("Get", ["k"])
            with pytest.raises(EndorseError) as endorse:
                await contract.submit("Put", ["k", "v"])
            with pytest.raises(GatewayError) as events:
                await anext(gw.get_network(channel).chaincode_events("kv"))

    for err in (evaluate.value, endorse.value, events.value):
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert "CERTIFICATE_VERIFY_FAILED" in str(err)


# ------------------------------------------------------------------------------------ nodes down
async def test_one_orgs_peer_down_still_commits(network: FabricNetwork, contract: Contract) -> None:
    health = peer_of(network, "HealthMSP")
    await network.stop_node(health)
    try:
        async with asyncio.timeout(BOUND):
            result = await contract.submit("Put", ["health-down", "committed"])
    finally:
        await network.start_node(health)
        await network.wait_endorsable("kv")

    assert result == b"committed"
    assert await contract.evaluate("Get", ["health-down"]) == b"committed"


async def test_submit_with_sync_orgs_returns_once_each_org_has_the_block(
    network: FabricNetwork, contract: Contract
) -> None:
    health = peer_of(network, "HealthMSP")
    await network.stop_node(health)  # Health cannot get the block while it is down
    try:
        submit = asyncio.create_task(
            contract.submit(
                "Put",
                ["synced", "yes"],
                endorsing_orgs=["TransportMSP", "EnergyMSP"],
                sync_orgs=["TransportMSP", "EnergyMSP", "HealthMSP"],
                sync_timeout=3 * BOUND,
            )
        )
        async with asyncio.timeout(BOUND):
            while True:  # until it is committed at Transport
                with contextlib.suppress(EvaluateError):
                    if await contract.evaluate("Get", ["synced"]) == b"yes":
                        break
                await asyncio.sleep(0.1)
        await asyncio.sleep(2)
        assert not submit.done()  # still waiting for Health
        height_at_transport = await network.height(
            peer_named(network, peer_of(network, "TransportMSP"))
        )
    finally:
        await network.start_node(health)
    async with asyncio.timeout(BOUND):
        assert await submit == b"yes"
    assert await network.height(peer_named(network, health)) >= height_at_transport
    await network.wait_endorsable("kv")


async def test_an_org_that_stays_behind_delays_a_synced_submit_only_by_its_timeout(
    network: FabricNetwork, contract: Contract
) -> None:
    health = peer_of(network, "HealthMSP")
    await network.stop_node(health)  # a member whose peer is down cannot stall everyone
    try:
        started = time.monotonic()
        async with asyncio.timeout(BOUND):
            result = await contract.submit(
                "Put",
                ["synced-or-not", "committed"],
                endorsing_orgs=["TransportMSP", "EnergyMSP"],
                sync_orgs=["TransportMSP", "EnergyMSP", "HealthMSP"],
                sync_timeout=2.0,
            )
        waited = time.monotonic() - started
        assert await contract.evaluate("Get", ["synced-or-not"]) == b"committed"
    finally:
        await network.start_node(health)
        await network.wait_endorsable("kv")

    assert result == b"committed" and waited >= 2.0


async def test_policy_unsatisfiable_is_an_endorse_error_with_per_peer_details(
    network: FabricNetwork, contract: Contract
) -> None:
    down = [peer_of(network, "EnergyMSP"), peer_of(network, "HealthMSP")]
    await network.wait_endorsable("kv")  # the gateway believes all three orgs are up
    for host in down:  # crash both at once: gossip has not yet told the gateway they are gone
        network.kill_node(host)
    try:
        async with asyncio.timeout(BOUND):
            first = await endorse_error(contract.submit("Put", ["two-down", "x"]))
        async with asyncio.timeout(60):
            later = await endorse_error(contract.submit("Put", ["two-down", "x"]))
            while later.code != grpc.StatusCode.FAILED_PRECONDITION:
                await asyncio.sleep(0.5)
                later = await endorse_error(contract.submit("Put", ["two-down", "x"]))
    finally:
        for host in down:
            await network.start_node(host)
        await network.wait_endorsable("kv")

    # First the gateway tries the crashed peers it still plans with (one or both, depending on
    # what its discovery knows at that instant) and reports what each one did...
    assert first.code == grpc.StatusCode.ABORTED and first.transaction_id
    assert first.details and {d.msp_id for d in first.details} <= {"EnergyMSP", "HealthMSP"}
    assert all(any(w in d.message for w in CONNECTION_FAILURES) for d in first.details), (
        first.details
    )
    # ...then drops them from its plan: the policy cannot be met (as anchors.md records).
    assert (
        "no combination of peers can be derived which satisfy the endorsement policy"
        in later.grpc_message
    )


# How a crashed peer's failure reads: refused (already gone) or reset / EOF / closing (it
# died with the gateway's connection open).
CONNECTION_FAILURES = (
    "connection refused",
    "connection reset",
    "EOF",
    "transport is closing",
    "Unavailable",
    "unavailable",
)


async def endorse_error(call: Awaitable[Any]) -> EndorseError:
    with pytest.raises(EndorseError) as info:
        await call
    return info.value


async def test_stopped_gateway_peer_is_a_clear_unavailable_error(
    network: FabricNetwork, contract: Contract, gateway: Gateway, channel: str
) -> None:
    transport = peer_of(network, "TransportMSP")
    await network.stop_node(transport)
    try:
        async with asyncio.timeout(BOUND):
            with pytest.raises(EndorseError) as endorse:
                await contract.submit("Put", ["gateway-down", "x"])
            with pytest.raises(EvaluateError) as evaluate:
                await contract.evaluate("Get", ["round-trip"])
            with pytest.raises(GatewayError) as events:
                await anext(gateway.get_network(channel).chaincode_events("kv"))
    finally:
        await network.start_node(transport)
        await poll(lambda: contract.evaluate("Get", ["round-trip"]), what="the peer to be back")
        await network.wait_endorsable("kv")

    # Refused, or reset when the stop cut a connection the channel had open: either way the
    # client is told the peer cannot be reached, not something misleading.
    for err in (endorse.value, evaluate.value, events.value):
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert any(w in str(err).lower() for w in ("connection refused", "connection reset")), err
