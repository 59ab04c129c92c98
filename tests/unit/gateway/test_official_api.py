"""The parts of the official clients' API added for parity (issue 13), against the fake peer."""

import asyncio

import grpc
import pytest
from fabric_protos.gateway import gateway_pb2
from gateway_fakes import (
    SERVER_NAME,
    Failure,
    FakePeer,
    PeerServer,
    TlsMaterial,
    User,
    start_peer,
    verify,
)

from fedfabric.gateway import (
    CallOptions,
    CommitError,
    CommitStatusError,
    EndorseError,
    FabricError,
    Gateway,
    GatewayError,
    SubmittedTransaction,
    connect,
)

CHAINCODE_REFUSAL = "chaincode response 403, asset k is not yours"


async def test_submit_async_returns_the_result_with_the_commit(
    gateway: Gateway, peer: FakePeer
) -> None:
    contract = gateway.get_network("mychannel").get_contract("fl")

    submitted = await contract.submit_async("Put", ["k"])

    assert isinstance(submitted, SubmittedTransaction)
    assert submitted.result == b"endorsed" and peer.received("CommitStatus") == []
    assert (await submitted.status()).block_number == peer.commit_block


async def test_submit_keeps_the_result_when_the_commit_status_step_fails(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.failures["CommitStatus"] = Failure(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow")

    with pytest.raises(CommitStatusError) as info:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put", ["k"])

    assert info.value.result == b"endorsed"


async def test_every_error_derives_from_one_root(gateway: Gateway, peer: FakePeer) -> None:
    peer.commit_code = 11  # MVCC_READ_CONFLICT

    with pytest.raises(FabricError) as info:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put", ["k"])

    assert isinstance(info.value, CommitError) and info.value.result == b"endorsed"
    assert issubclass(GatewayError, FabricError)


async def test_the_chaincodes_own_status_and_message_are_fields(
    gateway: Gateway, peer: FakePeer
) -> None:
    detail = gateway_pb2.ErrorDetail(
        address="peer0:7051", msp_id="Org1MSP", message=CHAINCODE_REFUSAL
    )
    peer.failures["Endorse"] = Failure(
        grpc.StatusCode.ABORTED, "failed to endorse transaction", [detail]
    )

    with pytest.raises(EndorseError) as info:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put", ["k"])

    assert (info.value.chaincode_status, info.value.chaincode_message) == (
        403,
        "asset k is not yours",
    )
    assert info.value.details[0].chaincode_status == 403


async def test_an_async_signer_is_awaited(
    peer_server: PeerServer, peer: FakePeer, tls: TlsMaterial, user: User
) -> None:
    signed: list[bytes] = []

    async def remote_signer(digest: bytes) -> bytes:
        await asyncio.sleep(0)  # e.g. a network HSM
        signed.append(digest)
        return user.signer(digest)  # type: ignore[return-value]

    async with connect(
        identity=user.identity,
        signer=remote_signer,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
    ) as gateway:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put", ["k"])

    (endorse,) = peer.received("Endorse")
    proposal = endorse.proposed_transaction
    assert verify(user.creator, proposal.proposal_bytes, proposal.signature)
    assert len(signed) == 3  # proposal, transaction, commit status request


async def test_per_call_options_reach_the_peer(gateway: Gateway, peer: FakePeer) -> None:
    options = CallOptions(
        metadata=[("x-request-id", "r-1")],
        wait_for_ready=True,
        compression=grpc.Compression.Gzip,
    )

    await (
        gateway.get_network("mychannel")
        .get_contract("fl")
        .submit("Put", ["k"], call_options=options)
    )

    for method in ("Endorse", "Submit", "CommitStatus"):
        assert peer.metadata[method]["x-request-id"] == "r-1"


async def test_unsigned_requests_are_recreated_from_their_bytes(
    gateway: Gateway, peer: FakePeer, user: User
) -> None:
    network = gateway.get_network("mychannel")
    built = network.get_contract("fl").new_proposal("Put", ["k"])

    proposal = gateway.new_proposal(built.bytes())
    transaction = gateway.new_transaction((await proposal.endorse()).bytes())
    commit = gateway.new_commit((await transaction.submit()).bytes())
    status = await commit.status()

    assert proposal.transaction_id == built.transaction_id == status.transaction_id
    (submit,) = peer.received("Submit")
    envelope = submit.prepared_transaction
    assert verify(user.creator, envelope.payload, envelope.signature)
    for kind in ("block", "filtered_block", "block_and_private_data"):
        request = getattr(network, f"new_{kind}_events_request")(start_block=1)
        again = getattr(gateway, f"new_{kind}_events_request")(request.bytes())
        assert type(again) is type(request) and again.bytes() == request.bytes()
    events = network.new_chaincode_events_request("fl", start_block=2)
    assert gateway.new_chaincode_events_request(events.bytes()).bytes() == events.bytes()


async def test_a_gateway_fails_over_to_the_next_endpoint(tls: TlsMaterial, user: User) -> None:
    first, second = await start_peer(tls), await start_peer(tls)
    await first.server.stop(grace=None)  # the first peer is gone
    try:
        async with connect(
            identity=user.identity,
            signer=user.signer,
            endpoint=[first.endpoint, second.endpoint],
            tls_root_cert=tls.ca_cert,
            server_name_override=SERVER_NAME,
        ) as gateway:
            contract = gateway.get_network("mychannel").get_contract("fl")
            assert await contract.submit("Put", ["k"]) == b"endorsed"
            assert await contract.evaluate("Get") == b"evaluated"
    finally:
        await second.server.stop(grace=None)

    assert len(second.peer.received("Endorse")) == 1
