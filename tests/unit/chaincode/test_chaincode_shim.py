"""The shim over real gRPC on loopback, driven by a fake peer (tests/fixtures/fakepeer.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import pytest
from chaincode_sample_contract import Sample
from fabric_protos.ledger.queryresult import kv_query_result_pb2
from fabric_protos.peer import chaincode_pb2

from fedfabric.chaincode import ChaincodeServer, ServerTLS
from tests.fixtures.fakepeer import FakePeer, Msg, response_of

CCID = "sample_1.0:5f0e3f1a"
BIG = 100 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", BIG), ("grpc.max_receive_message_length", BIG)]


async def within(awaitable, seconds: float = 10):
    async with asyncio.timeout(seconds):
        return await awaitable


@pytest.fixture
async def server():
    async with ChaincodeServer(
        [Sample({"org": "Org1MSP"})], chaincode_id=CCID, address="127.0.0.1:0"
    ) as server:
        yield server


@pytest.fixture
async def peer(server):
    async with grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel:
        async with FakePeer(channel, batch=2) as peer:
            yield peer


async def test_registers_with_the_package_id(peer):
    assert peer.registered_name == CCID


async def test_put_state_is_sent_to_the_peer_and_completes(peer):
    done = await within(peer.execute("Put", "asset1", "blue", txid="tx1"))

    assert done.txid == "tx1" and done.channel_id == "mychannel"
    assert response_of(done).status == 200
    assert peer.writes["tx1"] == [("", "asset1", b"blue")]


async def test_get_state_and_delete(peer):
    peer.state["asset1"] = b"red"

    got = await within(peer.execute("sample:Get", "asset1", txid="tx1"))
    deleted = await within(peer.execute("Del", "asset1", txid="tx2"))

    assert response_of(got).payload == b"red"
    assert response_of(deleted).status == 200
    assert peer.writes["tx2"] == [("", "asset1", None)]


async def test_transaction_context_comes_from_the_signed_proposal(peer):
    done = await within(
        peer.execute(
            "Info", txid="tx1", creator=b"alice", transient={"secret": b"s", "price": b"1"}
        )
    )

    assert json.loads(response_of(done).payload) == {
        "tx_id": "tx1",
        "channel": "mychannel",
        "creator": "alice",
        "function": "Info",
        "transient": ["price", "secret"],
        "timestamp": "2023-11-14T22:13:20+00:00",
        "setting": "Org1MSP",
    }


async def test_transactions_run_concurrently(peer):
    peer.state.update({"slow": b"1", "fast": b"2"})
    peer.gates["slow"] = asyncio.Event()
    slow = peer.start("Get", "slow", txid="tx-slow")
    await within(peer.seen["slow"].wait())

    fast = await within(peer.execute("Get", "fast", txid="tx-fast"))
    assert response_of(fast).payload == b"2"
    assert not slow.done()

    peer.gates["slow"].set()
    assert response_of(await within(slow)).payload == b"1"


async def test_range_query_fetches_every_batch(peer):
    peer.state.update({f"k{i}": str(i).encode() for i in range(5)} | {"z": b"-"})

    done = await within(peer.execute("Range", "k", "l", txid="tx1"))

    assert json.loads(response_of(done).payload) == [[f"k{i}", str(i)] for i in range(5)]
    types = [t for tx, t in peer.requests if tx == "tx1"]
    assert types == ["GET_STATE_BY_RANGE", "QUERY_STATE_NEXT", "QUERY_STATE_NEXT"]
    assert peer.open_queries == []


async def test_empty_range_start_is_sent_as_u0001(peer):
    peer.state.update({"\x00composite\x00": b"hidden", "a": b"1"})

    done = await within(peer.execute("Range", "", "", txid="tx1"))

    assert json.loads(response_of(done).payload) == [["a", "1"]]


async def test_abandoned_range_query_is_closed(peer):
    peer.state.update({f"k{i}": b"v" for i in range(5)})

    done = await within(peer.execute("RangeFirst", "k", "", txid="tx1"))

    assert response_of(done).payload == b"k0"
    assert [t for _, t in peer.requests] == ["GET_STATE_BY_RANGE", "QUERY_STATE_CLOSE"]
    assert peer.open_queries == []


async def test_range_pagination_uses_query_metadata(peer):
    peer.state.update({f"k{i}": b"v" for i in range(5)})

    first = await within(peer.execute("Page", "k", "", "2", "", txid="tx1"))
    page1 = json.loads(response_of(first).payload)
    second = await within(peer.execute("Page", "k", "", "2", page1["bookmark"], txid="tx2"))

    assert page1 == {"keys": ["k0", "k1"], "bookmark": "k2"}
    assert json.loads(response_of(second).payload) == {"keys": ["k2", "k3"], "bookmark": "k4"}


async def test_partial_composite_key_query(peer):
    for owner, asset in [("alice", "a1"), ("alice", "a2"), ("alicex", "a3"), ("bob", "b1")]:
        peer.state[f"\x00asset\x00{owner}\x00{asset}\x00"] = b"v"

    done = await within(peer.execute("ByOwner", "alice", txid="tx1"))

    assert json.loads(response_of(done).payload) == [["alice", "a1"], ["alice", "a2"]]


async def test_history_for_key(peer):
    mod = kv_query_result_pb2.KeyModification(tx_id="t0", value=b"v0", is_delete=False)
    mod.timestamp.seconds = 1_700_000_000
    deleted = kv_query_result_pb2.KeyModification(tx_id="t1", is_delete=True)
    peer.history["k"] = [deleted, mod]

    done = await within(peer.execute("History", "k", txid="tx1"))

    assert json.loads(response_of(done).payload) == [
        {"tx": "t1", "value": "", "delete": True, "ts": None},
        {"tx": "t0", "value": "v0", "delete": False, "ts": "2023-11-14T22:13:20+00:00"},
    ]


async def test_private_data_uses_the_collection_field(peer):
    peer.private[("secrets", "k")] = b"hidden"

    put = await within(
        peer.execute("PutPrivate", "secrets", "k2", txid="tx1", transient={"value": b"new"})
    )
    got = await within(peer.execute("GetPrivate", "secrets", "k", txid="tx2"))

    assert response_of(put).status == 200
    assert peer.writes["tx1"] == [("secrets", "k2", b"new")]
    assert json.loads(response_of(got).payload) == {
        "value": "hidden",
        "hash": hashlib.sha256(b"hidden").hexdigest(),
    }


async def test_state_based_endorsement_metadata(peer):
    peer.metadata[("", "k")] = {"VALIDATION_PARAMETER": b"policy-bytes"}

    put = await within(peer.execute("SetPolicy", "k2", "new-policy", txid="tx1"))
    got = await within(peer.execute("GetPolicy", "k", txid="tx2"))

    assert response_of(put).status == 200
    [write] = peer.metadata_writes["tx1"]
    assert (write.key, write.collection) == ("k2", "")
    assert (write.metadata.metakey, write.metadata.value) == ("VALIDATION_PARAMETER", b"new-policy")
    assert response_of(got).payload == b"policy-bytes"


async def test_get_state_multiple_falls_back_to_get_state(peer):
    peer.state.update({"a": b"1", "b": b"2"})

    done = await within(peer.execute("Multi", '["a","b","c"]', txid="tx1"))

    assert json.loads(response_of(done).payload) == ["1", "2", ""]
    assert [t for _, t in peer.requests] == ["GET_STATE"] * 3


async def test_get_state_multiple_batches_when_the_peer_offers_it(server):
    params = chaincode_pb2.ChaincodeAdditionalParams(
        use_get_multiple_keys=True, max_size_get_multiple_keys=100
    )
    keys = [f"k{i:03}" for i in range(150)]
    async with grpc.aio.insecure_channel(server.address) as channel:
        async with FakePeer(channel, ready_payload=params.SerializeToString()) as peer:
            peer.state.update({k: k.encode() for k in keys})
            done = await within(peer.execute("Multi", json.dumps(keys), txid="tx1"))

    assert json.loads(response_of(done).payload) == keys
    assert [t for _, t in peer.requests] == ["GET_STATE_MULTIPLE"] * 2


async def test_requests_of_one_transaction_go_one_at_a_time(peer):
    peer.state.update({"a": b"1", "b": b"2"})
    peer.gates["a"] = asyncio.Event()
    task = peer.start("Gather", "a", "b", txid="tx1")
    await within(peer.seen["a"].wait())

    assert [t for _, t in peer.requests] == ["GET_STATE"]  # b waits for a's answer
    peer.gates["a"].set()
    assert json.loads(response_of(await within(task)).payload) == ["1", "2"]


async def test_peer_error_message_reaches_the_client_unchanged(peer):
    peer.errors["bad"] = "GET_STATE failed: transaction ID: tx1: ledger closed"

    done = await within(peer.execute("Get", "bad", txid="tx1"))

    assert response_of(done).status == 500
    assert response_of(done).message == "GET_STATE failed: transaction ID: tx1: ledger closed"


async def test_chaincode_error_sets_status_message_and_payload(peer):
    done = await within(peer.execute("Fail", "404", "asset a1 not found", txid="tx1"))

    response = response_of(done)
    assert (response.status, response.message, response.payload) == (
        404,
        "asset a1 not found",
        b"details",
    )


async def test_unexpected_exception_is_status_500_with_its_text(peer):
    done = await within(peer.execute("Crash", txid="tx1"))

    assert (response_of(done).status, response_of(done).message) == (500, "boom: something broke")


async def test_unknown_function_is_refused(peer):
    done = await within(peer.execute("sample:Nope", txid="tx1"))

    assert response_of(done).status == 500
    assert "Nope" in response_of(done).message


async def test_last_event_is_sent_with_completed(peer):
    done = await within(peer.execute("Emit", "AssetCreated", "a1", txid="tx1"))

    assert response_of(done).status == 200
    assert done.chaincode_event.event_name == "AssetCreated"
    assert done.chaincode_event.payload == b"a1"


async def test_no_event_leaves_the_field_unset(peer):
    done = await within(peer.execute("Put", "k", "v", txid="tx1"))

    assert not done.HasField("chaincode_event")


async def test_init_failure_is_answered_with_error(peer):
    done = await within(peer.execute("Fail", "500", "cannot init", txid="tx1", init=True))

    assert done.type == Msg.ERROR
    assert done.payload == b"cannot init"


async def test_init_with_a_client_error_status_completes(peer):
    done = await within(peer.execute("Fail", "403", "not allowed", txid="tx1", init=True))

    assert response_of(done).status == 403


async def test_empty_init_succeeds(peer):
    done = await within(peer.execute("", txid="tx1", init=True))

    assert response_of(done).status == 200


async def test_keepalive_is_echoed(peer):
    echoed = await within(peer.keepalive())

    assert (echoed.type, echoed.payload) == (Msg.KEEPALIVE, b"ping")


async def test_malformed_proposal_is_answered_with_error(peer):
    from fabric_protos.peer import proposal_pb2

    bad = proposal_pb2.SignedProposal(proposal_bytes=b"\xff\xff not a proposal")
    done = await within(peer.execute("Get", "k", txid="tx1", proposal=bad))

    assert done.type == Msg.ERROR
    assert done.payload.startswith(b"failed to create new ChaincodeStub")


async def test_large_messages_pass(peer):
    value = "x" * (5 * 1024 * 1024)

    done = await within(peer.execute("Put", "big", value, txid="tx1"))

    assert response_of(done).status == 200
    assert peer.writes["tx1"][0][2] == value.encode()


async def test_unexpected_message_type_ends_the_stream(peer):
    await peer.send_raw(Msg(type=Msg.PUT_STATE, txid="tx1", channel_id="mychannel"))

    error = await within(peer.next_unsolicited())
    await within(peer.closed.wait())

    assert error.type == Msg.ERROR
    assert b"PUT_STATE" in error.payload


async def test_handshake_out_of_order_is_refused(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        from fabric_protos.peer import chaincode_shim_pb2_grpc

        call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
        register = await within(call.read())
        await call.write(Msg(type=Msg.READY))
        error = await within(call.read())

    assert register.type == Msg.REGISTER
    assert error.type == Msg.ERROR
    assert error.payload == b"expected REGISTERED, got READY"


async def test_stream_end_cancels_transactions_in_flight(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        async with FakePeer(channel) as peer:
            peer.gates["k"] = asyncio.Event()
            task = peer.start("Get", "k", txid="tx1")
            await within(peer.seen["k"].wait())
            # leaving the block ends the stream while tx1 waits for its GET_STATE answer
        await within(peer.closed.wait())
    task.cancel()
    peer.gates["k"].set()


# -- TLS ------------------------------------------------------------------------------------


async def test_tls(tls_material):
    tls = ServerTLS(cert=tls_material.server_cert, key=tls_material.server_key)
    async with ChaincodeServer(
        [Sample()], chaincode_id=CCID, address="127.0.0.1:0", tls=tls
    ) as server:
        credentials = grpc.ssl_channel_credentials(root_certificates=tls_material.ca)
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            async with FakePeer(channel) as peer:
                done = await within(peer.execute("Put", "k", "v", txid="tx1"))

    assert response_of(done).status == 200


async def test_mutual_tls_accepts_a_client_certificate_from_the_ca(tls_material):
    tls = ServerTLS(
        cert=tls_material.server_cert, key=tls_material.server_key, client_ca=tls_material.ca
    )
    async with ChaincodeServer(
        [Sample()], chaincode_id=CCID, address="127.0.0.1:0", tls=tls
    ) as server:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_material.ca,
            private_key=tls_material.client_key,
            certificate_chain=tls_material.client_cert,
        )
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            async with FakePeer(channel) as peer:
                done = await within(peer.execute("Put", "k", "v", txid="tx1"))

    assert response_of(done).status == 200


@pytest.mark.parametrize("with_cert", [False, True], ids=["no-client-cert", "untrusted-ca"])
async def test_mutual_tls_refuses_other_clients(tls_material, with_cert):
    tls = ServerTLS(
        cert=tls_material.server_cert, key=tls_material.server_key, client_ca=tls_material.other_ca
    )
    if not with_cert:
        tls = ServerTLS(
            cert=tls_material.server_cert, key=tls_material.server_key, client_ca=tls_material.ca
        )
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_material.ca,
        private_key=tls_material.client_key if with_cert else None,
        certificate_chain=tls_material.client_cert if with_cert else None,
    )
    async with ChaincodeServer(
        [Sample()], chaincode_id=CCID, address="127.0.0.1:0", tls=tls
    ) as server:
        async with grpc.aio.secure_channel(server.address, credentials) as channel:
            from fabric_protos.peer import chaincode_shim_pb2_grpc

            call = chaincode_shim_pb2_grpc.ChaincodeStub(channel).Connect()
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await within(call.read())

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_stop_lets_running_transactions_finish_and_refuses_new_ones():
    server = ChaincodeServer([Sample()], chaincode_id=CCID, address="127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        async with FakePeer(channel) as peer:
            peer.gates["k"] = asyncio.Event()
            running = peer.start("Get", "k", txid="tx1")
            await within(peer.seen["k"].wait())

            stopping = asyncio.create_task(server.stop(grace=10))
            refused = await within(peer.execute("Get", "k2", txid="tx2"))
            peer.gates["k"].set()
            finished = await within(running)
            await within(stopping)
            await within(peer.closed.wait())

    assert (refused.type, refused.payload) == (Msg.ERROR, b"chaincode server is shutting down")
    assert response_of(finished).status == 200
