"""Offline signing: build unsigned, sign the digest elsewhere, rebuild from bytes + signature."""

import hashlib

import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import chaincode_event_pb2
from gateway_fakes import FakePeer, User, verify

from fedfabric.gateway import Gateway


async def test_unsigned_proposal_cannot_be_sent_without_a_signer(
    offline_gateway: Gateway, peer: FakePeer
) -> None:
    proposal = offline_gateway.get_network("mychannel").get_contract("fl").new_proposal("Put")

    with pytest.raises(ValueError, match="no signer"):
        await proposal.endorse()

    assert peer.requests == []


async def test_offline_signing_round_trip_through_bytes(
    offline_gateway: Gateway, peer: FakePeer, user: User
) -> None:
    contract = offline_gateway.get_network("mychannel").get_contract("fl")
    unsigned_proposal = contract.new_proposal("Put", ["k", "v"])

    proposal = offline_gateway.new_signed_proposal(
        unsigned_proposal.bytes(), user.signer(unsigned_proposal.digest())
    )
    unsigned_transaction = await proposal.endorse()
    transaction = offline_gateway.new_signed_transaction(
        unsigned_transaction.bytes(), user.signer(unsigned_transaction.digest())
    )
    unsigned_commit = await transaction.submit()
    commit = offline_gateway.new_signed_commit(
        unsigned_commit.bytes(), user.signer(unsigned_commit.digest())
    )
    status = await commit.status()

    assert status.successful
    assert proposal.transaction_id == unsigned_proposal.transaction_id
    assert transaction.result == b"endorsed"
    (endorse,) = peer.received("Endorse")
    (submit,) = peer.received("Submit")
    (commit_request,) = peer.received("CommitStatus")
    assert endorse.proposed_transaction.proposal_bytes == (
        gateway_pb2.ProposedTransaction.FromString(
            unsigned_proposal.bytes()
        ).proposal.proposal_bytes
    )
    assert verify(
        user.creator,
        endorse.proposed_transaction.proposal_bytes,
        endorse.proposed_transaction.signature,
    )
    assert verify(
        user.creator, submit.prepared_transaction.payload, submit.prepared_transaction.signature
    )
    assert verify(user.creator, commit_request.request, commit_request.signature)


def test_digests_hash_exactly_the_signed_bytes(offline_gateway: Gateway) -> None:
    network = offline_gateway.get_network("mychannel")

    events = network.new_chaincode_events_request("fl", start_block=3)
    blocks = network.new_filtered_block_events_request()

    signed_events = gateway_pb2.SignedChaincodeEventsRequest.FromString(events.bytes())
    assert events.digest() == hashlib.sha256(signed_events.request).digest()
    envelope = common_pb2.Envelope.FromString(blocks.bytes())
    assert blocks.digest() == hashlib.sha256(envelope.payload).digest()
    assert (signed_events.signature, envelope.signature) == (b"", b"")


async def test_offline_signed_event_requests(
    offline_gateway: Gateway, peer: FakePeer, user: User
) -> None:
    network = offline_gateway.get_network("mychannel")
    unsigned_events = network.new_chaincode_events_request("fl")
    unsigned_blocks = network.new_filtered_block_events_request()

    events = offline_gateway.new_signed_chaincode_events_request(
        unsigned_events.bytes(), user.signer(unsigned_events.digest())
    )
    blocks = offline_gateway.new_signed_filtered_block_events_request(
        unsigned_blocks.bytes(), user.signer(unsigned_blocks.digest())
    )
    peer.chaincode_events = [
        gateway_pb2.ChaincodeEventsResponse(
            block_number=4, events=[chaincode_event_pb2.ChaincodeEvent(tx_id="tx1")]
        )
    ]
    async with events.events() as stream:
        first = await anext(stream)
    async with blocks.events() as stream:
        assert [block async for block in stream] == []

    assert (first.block_number, first.transaction_id) == (4, "tx1")
    (events_request,) = peer.received("ChaincodeEvents")
    assert verify(user.creator, events_request.request, events_request.signature)
    (envelope,) = peer.received("DeliverFiltered")
    assert verify(user.creator, envelope.payload, envelope.signature)
