"""Proposal and transaction structure, and the submit / evaluate flows, against the fake peer."""

import hashlib

import pytest
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import (
    chaincode_pb2,
    proposal_pb2,
    proposal_response_pb2,
    transaction_pb2,
)
from gateway_fakes import FakePeer, User, proposal_hash, verify

from fedfabric.gateway import CommitError, Gateway, Status, Timeouts

CHANNEL = "mychannel"
CHAINCODE = "fl"


def parse_proposal(proposed_bytes: bytes):
    proposed = gateway_pb2.ProposedTransaction.FromString(proposed_bytes)
    proposal = proposal_pb2.Proposal.FromString(proposed.proposal.proposal_bytes)
    header = common_pb2.Header.FromString(proposal.header)
    return (
        proposed,
        proposal,
        common_pb2.ChannelHeader.FromString(header.channel_header),
        common_pb2.SignatureHeader.FromString(header.signature_header),
        proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload),
    )


def test_proposal_headers_follow_fabric(gateway: Gateway, user: User) -> None:
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE)

    proposal = contract.new_proposal("SubmitUpdate", ["round-1", b"\x00\x01"])

    proposed, _, channel_header, signature_header, _ = parse_proposal(proposal.bytes())
    assert channel_header.type == common_pb2.ENDORSER_TRANSACTION
    assert (channel_header.version, channel_header.epoch) == (0, 0)
    assert channel_header.channel_id == CHANNEL
    assert channel_header.timestamp.seconds > 0
    assert channel_header.tls_cert_hash == b""
    extension = proposal_pb2.ChaincodeHeaderExtension.FromString(channel_header.extension)
    assert extension.chaincode_id == chaincode_pb2.ChaincodeID(name=CHAINCODE)
    assert signature_header.creator == user.creator
    assert len(signature_header.nonce) == 24
    expected_id = hashlib.sha256(signature_header.nonce + user.creator).hexdigest()
    assert channel_header.tx_id == proposal.transaction_id == proposed.transaction_id
    assert proposal.transaction_id == expected_id
    assert proposed.proposal.signature == b""


def test_proposal_payload_carries_function_arguments_and_transient_data(
    gateway: Gateway,
) -> None:
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE, "FLContract")

    proposal = contract.new_proposal(
        "SubmitUpdate",
        ["round-1", b"\xff"],
        transient={"secret": b"s3"},
        endorsing_orgs=["Org2MSP"],
    )

    proposed, _, _, _, payload = parse_proposal(proposal.bytes())
    spec = chaincode_pb2.ChaincodeInvocationSpec.FromString(payload.input).chaincode_spec
    assert spec.type == chaincode_pb2.ChaincodeSpec.UNDEFINED
    assert spec.chaincode_id.name == CHAINCODE
    assert list(spec.input.args) == [b"FLContract:SubmitUpdate", b"round-1", b"\xff"]
    assert dict(payload.TransientMap) == {"secret": b"s3"}
    assert list(proposed.endorsing_organizations) == ["Org2MSP"]


def test_proposal_digest_is_sha256_of_proposal_bytes(gateway: Gateway) -> None:
    proposal = gateway.get_network(CHANNEL).get_contract(CHAINCODE).new_proposal("Get")

    proposed, *_ = parse_proposal(proposal.bytes())

    assert proposal.digest() == hashlib.sha256(proposed.proposal.proposal_bytes).digest()


async def test_submit_runs_endorse_submit_commit_status_with_valid_signatures(
    gateway: Gateway, peer: FakePeer, user: User
) -> None:
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE)

    result = await contract.submit("SubmitUpdate", ["round-1"], transient={"k": b"v"})

    assert result == peer.chaincode_payload
    assert [name for name, _ in peer.requests] == ["Endorse", "Submit", "CommitStatus"]
    (endorse,) = peer.received("Endorse")
    (submit,) = peer.received("Submit")
    (status,) = peer.received("CommitStatus")
    signed_proposal = endorse.proposed_transaction
    assert verify(user.creator, signed_proposal.proposal_bytes, signed_proposal.signature)
    envelope = submit.prepared_transaction
    assert envelope.payload == peer.prepare(signed_proposal).payload  # forwarded byte for byte
    assert verify(user.creator, envelope.payload, envelope.signature)
    assert verify(user.creator, status.request, status.signature)
    request = gateway_pb2.CommitStatusRequest.FromString(status.request)
    assert (request.transaction_id, request.channel_id) == (endorse.transaction_id, CHANNEL)
    assert request.identity == user.creator
    assert (submit.transaction_id, submit.channel_id) == (endorse.transaction_id, CHANNEL)


async def test_submitted_transaction_passes_the_committers_proposal_hash_check(
    gateway: Gateway, peer: FakePeer
) -> None:
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE)

    await contract.submit("SubmitUpdate", ["round-1"], transient={"secret": b"s3"})

    (endorse,) = peer.received("Endorse")
    (submit,) = peer.received("Submit")
    proposal = proposal_pb2.Proposal.FromString(endorse.proposed_transaction.proposal_bytes)
    payload = common_pb2.Payload.FromString(submit.prepared_transaction.payload)
    (action,) = transaction_pb2.Transaction.FromString(payload.data).actions
    action_payload = transaction_pb2.ChaincodeActionPayload.FromString(action.payload)
    response_payload = proposal_response_pb2.ProposalResponsePayload.FromString(
        action_payload.action.proposal_response_payload
    )
    # GetProposalHash2, as the committer computes it from the transaction:
    committed_hash = hashlib.sha256(
        payload.header.channel_header + action.header + action_payload.chaincode_proposal_payload
    ).digest()
    assert committed_hash == response_payload.proposal_hash == proposal_hash(proposal)
    proposal_header = common_pb2.Header.FromString(proposal.header)
    assert action.header == proposal_header.signature_header
    committed_cpp = proposal_pb2.ChaincodeProposalPayload.FromString(
        action_payload.chaincode_proposal_payload
    )
    assert dict(committed_cpp.TransientMap) == {}
    in_proposal = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
    assert dict(in_proposal.TransientMap) == {"secret": b"s3"}
    assert committed_cpp.input == in_proposal.input


async def test_evaluate_returns_payload_and_targets_endorsing_orgs(
    gateway: Gateway, peer: FakePeer
) -> None:
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE)

    result = await contract.evaluate("Get", ["k"], endorsing_orgs=["Org1MSP"])

    assert result == b"evaluated"
    (request,) = peer.received("Evaluate")
    assert list(request.target_organizations) == ["Org1MSP"]
    assert request.channel_id == CHANNEL


async def test_split_flow_exposes_each_step(gateway: Gateway, peer: FakePeer) -> None:
    proposal = gateway.get_network(CHANNEL).get_contract(CHAINCODE).new_proposal("Put")

    transaction = await proposal.endorse()
    commit = await transaction.submit()
    status = await commit.status()

    assert transaction.result == b"endorsed"
    assert transaction.transaction_id == commit.transaction_id == proposal.transaction_id
    assert status == Status(proposal.transaction_id, transaction_pb2.VALID, peer.commit_block)
    assert status.successful
    assert status.code_name == "VALID"


async def test_invalid_transaction_raises_commit_error(gateway: Gateway, peer: FakePeer) -> None:
    peer.commit_code = transaction_pb2.MVCC_READ_CONFLICT
    contract = gateway.get_network(CHANNEL).get_contract(CHAINCODE)

    with pytest.raises(CommitError) as raised:
        await contract.submit("Put")

    (endorse,) = peer.received("Endorse")
    assert raised.value.transaction_id == endorse.transaction_id
    assert raised.value.code == 11
    assert raised.value.code_name == "MVCC_READ_CONFLICT"
    assert str(raised.value) == (
        f"transaction {endorse.transaction_id} failed to commit with status code 11 "
        "(MVCC_READ_CONFLICT)"
    )


async def test_large_messages_pass_the_raised_grpc_limits(gateway: Gateway, peer: FakePeer) -> None:
    peer.evaluate_payload = bytes(8 * 1024 * 1024)  # above gRPC's 4 MiB default

    result = (
        await gateway.get_network(CHANNEL)
        .get_contract(CHAINCODE)
        .evaluate("Get", [bytes(6 * 1024 * 1024)])
    )

    assert len(result) == 8 * 1024 * 1024


async def test_invalid_commit_status_is_not_an_error_in_the_split_flow(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.commit_code = transaction_pb2.ENDORSEMENT_POLICY_FAILURE
    proposal = gateway.get_network(CHANNEL).get_contract(CHAINCODE).new_proposal("Put")

    status = await (await (await proposal.endorse()).submit()).status(timeout=5)

    assert not status.successful
    assert status.code_name == "ENDORSEMENT_POLICY_FAILURE"


def test_default_timeouts() -> None:
    steps = ("evaluate", "endorse", "submit", "commit_status")

    assert [Timeouts().seconds(step) for step in steps] == [30, 30, 30, 60]
