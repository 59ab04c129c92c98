"""fedfabric.gateway against real Fabric: issue 13's parity features and what goes past the
official clients, one scenario per test.

Tests use the session network (3 orgs, OutOf(2, ...)) through the Transport organisation's
peer; the failover test starts its own small network with two peers in one organisation.
Calls that could hang are bounded by ``asyncio.timeout``; tests that stop nodes restart them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import common_pb2
from fabric_protos.peer import events_pb2, transaction_pb2

from fedfabric.gateway import (
    CallOptions,
    ChaincodeEvent,
    CommitError,
    Contract,
    EndorseError,
    EvaluateError,
    FileCheckpointer,
    Gateway,
    GatewayClosedError,
    Reconnect,
    X509Identity,
    connect,
    connect_org,
    load_identity,
    load_private_key,
    signers,
)
from fedfabric.gateway.pkcs11 import HSMSigner
from fedfabric.network import FabricNetwork, _crypto, parse_topology
from tests.conftest import PORT_SHIFT, release, topology_data
from tests.fabric.conftest import BOUND, TIMEOUTS
from tests.fixtures.softhsm import LIBRARY, PIN, TOKEN, generate_key, init_token


def transport_gateway(network: FabricNetwork, signer, identity=None, **options) -> Gateway:
    """A gateway to Transport's peer as User1 (or ``identity``) with a chosen signer."""
    endpoint = network.endpoint("transport")
    user = network.identity("transport", "User1")
    return connect(
        identity=identity or load_identity("TransportMSP", user.cert),
        signer=signer,
        endpoint=options.pop("endpoint", endpoint.address),
        tls_root_cert=endpoint.tls_root_cert.read_bytes(),
        client_cert=user.tls_cert.read_bytes(),
        client_key=user.tls_key.read_bytes(),
        server_name_override=options.pop("server_name_override", endpoint.server_name),
        timeouts=TIMEOUTS,
        **options,
    )


# ------------------------------------------------------------------------------------ bugs
async def test_events_committed_after_the_stream_starts_are_not_lost(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    async with asyncio.timeout(BOUND):
        async with gateway.get_network(channel).chaincode_events("kv") as events:
            status = await (await contract.submit_async("Put", ["after-start", "v"])).status()
            event = await anext(events)  # the first anext comes after the commit

    assert (event.transaction_id, event.payload) == (status.transaction_id, b"after-start")


# ------------------------------------------------------------------------------------ official API
async def test_submit_async_returns_the_result_before_the_commit(contract: Contract) -> None:
    async with asyncio.timeout(BOUND):
        submitted = await contract.submit_async("Put", ["submit-async", "value-a"])
        result = submitted.result
        status = await submitted.status()

    assert result == b"value-a" and status.successful
    assert status.transaction_id == submitted.transaction_id
    assert await contract.evaluate("Get", ["submit-async"]) == b"value-a"


async def test_a_commit_error_keeps_the_chaincode_result(contract: Contract) -> None:
    with pytest.raises(CommitError) as info:
        await contract.submit("Put", ["one-org-result", "kept"], endorsing_orgs=["TransportMSP"])

    assert info.value.result == b"kept" and info.value.code_name == "ENDORSEMENT_POLICY_FAILURE"


async def test_unsigned_requests_recreated_from_bytes_run_every_step(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    built = contract.new_proposal("Put", ["recreated", "from-bytes"])

    async with asyncio.timeout(BOUND):
        transaction = await gateway.new_proposal(built.bytes()).endorse()
        submitted = await gateway.new_transaction(transaction.bytes()).submit()
        status = await gateway.new_commit(submitted.bytes()).status()
        network = gateway.get_network(channel)
        request = network.new_filtered_block_events_request(start_block=status.block_number)
        async with gateway.new_filtered_block_events_request(request.bytes()).events() as blocks:
            filtered = await anext(blocks)

    assert status.successful and status.transaction_id == built.transaction_id
    assert status.transaction_id in [t.txid for t in filtered.filtered_transactions]


async def test_typed_block_streams_give_each_kind_of_block(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    status = await (await contract.submit_async("Put", ["typed-blocks", "v"])).status()
    network = gateway.get_network(channel)
    received = {}
    async with asyncio.timeout(BOUND):
        for kind in ("block_events", "filtered_block_events", "block_and_private_data_events"):
            async with getattr(network, kind)(start_block=status.block_number) as blocks:
                received[kind] = await anext(blocks)

    assert isinstance(received["block_events"], common_pb2.Block)
    assert received["block_events"].header.number == status.block_number
    assert isinstance(received["filtered_block_events"], events_pb2.FilteredBlock)
    assert received["filtered_block_events"].number == status.block_number
    assert isinstance(received["block_and_private_data_events"], events_pb2.BlockAndPrivateData)
    assert received["block_and_private_data_events"].block.header.number == status.block_number


async def test_an_async_signer_signs_every_step(network: FabricNetwork, channel: str) -> None:
    sign = signers.new_private_key_signer(
        load_private_key(network.identity("transport", "User1").key)
    )
    calls: list[bytes] = []

    async def remote(digest: bytes) -> bytes:
        await asyncio.sleep(0)
        calls.append(digest)
        return sign(digest)

    async with transport_gateway(network, remote) as gw, asyncio.timeout(BOUND):
        contract = gw.get_network(channel).get_contract("kv")
        result = await contract.submit("Put", ["async-signer", "signed-later"])
        async with gw.get_network(channel).chaincode_events("kv", start_block=0) as events:
            await anext(events)

    assert result == b"signed-later" and len(calls) >= 4


async def test_per_call_grpc_options_on_calls_and_streams(
    contract: Contract, gateway: Gateway, channel: str
) -> None:
    options = CallOptions(metadata=[("x-request-id", "issue-13")], wait_for_ready=True)
    async with asyncio.timeout(BOUND):
        submitted = await contract.submit_async("Put", ["call-options", "v"], call_options=options)
        status = await submitted.status(call_options=options)
        value = await contract.evaluate("Get", ["call-options"], call_options=options)
        events = gateway.get_network(channel).chaincode_events(
            "kv", start_block=status.block_number, call_options=options
        )
        async with events:
            event = await anext(events)

    assert value == b"v" and event.transaction_id == status.transaction_id


async def test_per_call_compression_reaches_the_peer(contract: Contract) -> None:
    gzip = CallOptions(compression=grpc.Compression.Gzip)

    # Fabric's peers register no gzip decompressor: the refusal shows the request went gzipped.
    with pytest.raises(EvaluateError) as info:
        await contract.evaluate("Get", ["call-options"], call_options=gzip)

    assert info.value.code == grpc.StatusCode.UNIMPLEMENTED and "gzip" in str(info.value)


async def test_closing_the_gateway_ends_calls_in_flight_with_a_closed_error(
    network: FabricNetwork, channel: str
) -> None:
    sign = signers.new_private_key_signer(
        load_private_key(network.identity("transport", "User1").key)
    )
    gw = transport_gateway(network, sign)
    events = gw.get_network(channel).chaincode_events("kv")
    async with asyncio.timeout(BOUND):
        await events.start()
        waiting = asyncio.create_task(anext(events))
        await gw.close(grace=0)
        with pytest.raises(GatewayClosedError, match="the gateway was closed"):
            await waiting
        with pytest.raises(GatewayClosedError):
            await gw.get_network(channel).get_contract("kv").evaluate("Get", ["k"])


# ------------------------------------------------------------------------------------ beyond
async def test_ledger_queries_read_blocks_and_transactions_through_qscc(
    gateway: Gateway, contract: Contract, channel: str
) -> None:
    network = gateway.get_network(channel)
    valid = await (await contract.submit_async("Put", ["ledger-query", "v"])).status()
    with pytest.raises(CommitError) as invalid:
        await contract.submit("Put", ["ledger-invalid", "x"], endorsing_orgs=["TransportMSP"])

    async with asyncio.timeout(BOUND):
        height = await network.height()
        info = await network.get_chain_info()
        block = await network.get_block(valid.block_number)
        by_tx = await network.get_block_by_transaction_id(valid.transaction_id)
        processed = await network.get_transaction(valid.transaction_id)
        refused = await network.get_transaction(invalid.value.transaction_id)
        elsewhere = await network.get_block(valid.block_number, organization="HealthMSP")
        with pytest.raises(EvaluateError):
            await network.get_transaction("no-such-transaction")

    assert height > valid.block_number and info.height >= height
    assert block.header.number == by_tx.header.number == valid.block_number
    assert elsewhere.header.data_hash == block.header.data_hash
    assert processed.validationCode == transaction_pb2.VALID
    assert refused.validationCode == transaction_pb2.ENDORSEMENT_POLICY_FAILURE
    payload = common_pb2.Payload.FromString(processed.transactionEnvelope.payload)
    header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
    assert header.tx_id == valid.transaction_id


async def test_the_chaincodes_own_status_and_message_are_fields(contract: Contract) -> None:
    with pytest.raises(EndorseError) as endorse:
        await contract.submit("Get", ["no-such-key-13"])
    with pytest.raises(EvaluateError) as evaluate:
        await contract.evaluate("Get", ["no-such-key-13"])

    for err in (endorse.value, evaluate.value):
        assert err.chaincode_status == 500, err
        assert err.chaincode_message is not None
        assert "no-such-key-13 does not exist" in err.chaincode_message
    assert any(d.chaincode_status == 500 for d in endorse.value.details)


async def test_a_self_healing_stream_delivers_every_event_once_across_a_peer_restart(
    network: FabricNetwork, gateway: Gateway, contract: Contract, channel: str, tmp_path: Path
) -> None:
    transport = next(
        p.host
        for p in network.topology.peers
        if network.topology.org(p.org).msp_id == "TransportMSP"
    )
    start = (await (await contract.submit_async("Put", ["heal-start", "x"])).status()).block_number
    checkpointer = FileCheckpointer(tmp_path / "healing.json")
    seen: list[ChaincodeEvent] = []
    expected: list[str] = []
    reconnect = Reconnect(initial=0.2, maximum=2.0)
    async with connect_org(
        network.layout.profiles_dir, "energy", "User1", timeouts=TIMEOUTS
    ) as energy:
        other = energy.get_network(channel).get_contract("kv")

        async def put(key: str) -> None:
            status = await (
                await other.submit_async(
                    "Put", [key, "v"], endorsing_orgs=["EnergyMSP", "HealthMSP"]
                )
            ).status()
            assert status.successful
            expected.append(status.transaction_id)

        stream = gateway.get_network(channel).chaincode_events(
            "kv", start_block=start + 1, checkpoint=checkpointer, reconnect=reconnect
        )
        async with stream:
            for key in ("heal-0", "heal-1"):
                await put(key)
            async with asyncio.timeout(BOUND):
                for _ in range(2):
                    seen.append(await anext(stream))
                    await checkpointer.checkpoint_chaincode_event(seen[-1])
            network.kill_node(transport)  # mid-stream
            try:
                for key in ("heal-2", "heal-3", "heal-4"):  # committed while it is down
                    await put(key)
            finally:
                await network.start_node(transport)
            async with asyncio.timeout(90):
                while len(seen) < 5:
                    seen.append(await anext(stream))
                    await checkpointer.checkpoint_chaincode_event(seen[-1])
    await network.wait_endorsable("kv")

    assert [e.transaction_id for e in seen] == expected
    assert [e.payload for e in seen] == [f"heal-{i}".encode() for i in range(5)]
    assert checkpointer.transaction_id == expected[-1]


async def test_an_hsm_signer_submits_with_p256_and_p384_identities(
    network: FabricNetwork, channel: str, tmp_path: Path
) -> None:
    init_token(tmp_path / "softhsm")
    org = network.topology.org("transport")
    ca = _crypto._load_ca(_crypto.org_dir(network.layout.crypto_dir, org) / "ca")
    results = {}
    for label, curve in (("hsm-p256", "secp256r1"), ("hsm-p384", "secp384r1")):
        generate_key(label, curve)
        with HSMSigner(LIBRARY, token_label=TOKEN, pin=PIN, key_label=label) as signer:
            cert = _crypto._issue(
                ca, signer.public_key(), _crypto._name(label, org=org.domain, ou="client")
            )
            identity = X509Identity("TransportMSP", cert.public_bytes(serialization.Encoding.PEM))
            async with transport_gateway(network, signer, identity) as gw:
                async with asyncio.timeout(BOUND):
                    contract = gw.get_network(channel).get_contract("kv")
                    results[label] = await contract.submit("Put", [label, curve])

    assert results == {"hsm-p256": b"secp256r1", "hsm-p384": b"secp384r1"}


# ------------------------------------------------------------------------------------ failover
@pytest.fixture(scope="module")
async def two_peer_network(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[FabricNetwork]:
    """One organisation with two peers, one orderer, the Python ``pykv`` chaincode; its ports
    sit 2500 above the session network's."""
    data = topology_data(PORT_SHIFT + 2500)
    data["orderer_org"]["orderers"] = data["orderer_org"]["orderers"][:1]
    org = data["organizations"][0]
    second = {k: v + 5 if k.endswith("port") else v for k, v in org["peers"][0].items()}
    org["peers"].append({**second, "name": "peer1"})
    data["organizations"] = [org]
    data["endorsement_policy"] = "OutOf(1, 'TransportMSP.peer')"
    data["chaincodes"] = [
        {
            "name": "pykv",
            "version": "1.0",
            "server": "python",
            "contract": "tests.fixtures.pykv:KeyValue",
        }
    ]
    net = FabricNetwork(parse_topology(data), tmp_path_factory.mktemp("two-peers"), release())
    try:
        await net.up()
        await net.deploy(["pykv"])
        await net.wait_endorsable("pykv")
        yield net
    finally:
        await net.clean()


async def test_a_gateway_with_two_endpoints_fails_over_when_the_first_peer_stops(
    two_peer_network: FabricNetwork,
) -> None:
    net = two_peer_network
    first, second = net.topology.peers
    user = net.identity("transport", "User1")
    endpoint = net.endpoint("transport")
    gw = connect(
        identity=load_identity("TransportMSP", user.cert),
        signer=signers.new_private_key_signer(load_private_key(user.key)),
        endpoint=[first.address, second.address],  # their TLS certificates name 127.0.0.1
        tls_root_cert=endpoint.tls_root_cert.read_bytes(),
        client_cert=user.tls_cert.read_bytes(),
        client_key=user.tls_key.read_bytes(),
        timeouts=TIMEOUTS,
    )
    async with gw:
        contract = gw.get_network(net.topology.channel).get_contract("pykv")
        async with asyncio.timeout(BOUND):
            assert await contract.submit("Put", ["failover", "before"]) == b"before"
        await net.stop_node(first.host)
        try:
            async with asyncio.timeout(BOUND):
                after = await contract.submit("Put", ["failover", "after"])
                value = await contract.evaluate("Get", ["failover"])
        finally:
            await net.start_node(first.host)

    assert (after, value) == (b"after", b"after")
