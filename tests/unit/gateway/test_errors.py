"""gRPC errors become step errors carrying the transaction id, code and per-peer details."""

import grpc
import grpc.aio
import pytest
from fabric_protos.gateway import gateway_pb2
from gateway_fakes import Failure, FakePeer

from fedfabric.gateway import (
    CommitError,
    CommitStatusError,
    DeliverError,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    Gateway,
    GatewayError,
    SubmitError,
    TransactionError,
)

CHAINCODE_MESSAGE = "update rejected: norm 12.5 exceeds bound 10.0 (round 3)"
PEER_DETAILS = [
    gateway_pb2.ErrorDetail(
        address="peer0.org1.example.com:7051",
        msp_id="Org1MSP",
        message=f"chaincode response 500, {CHAINCODE_MESSAGE}",
    ),
    gateway_pb2.ErrorDetail(
        address="peer0.org2.example.com:9051", msp_id="Org2MSP", message="unavailable"
    ),
]


def test_error_tree() -> None:
    for step_error in (EvaluateError, EndorseError, SubmitError, CommitStatusError):
        assert issubclass(step_error, TransactionError)
    assert issubclass(TransactionError, GatewayError)
    assert issubclass(DeliverError, GatewayError)
    assert not issubclass(CommitError, GatewayError)


async def test_endorse_failure_carries_details_from_the_status_trailer(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.failures["Endorse"] = Failure(
        grpc.StatusCode.ABORTED,
        "failed to endorse transaction, see attached details for more info",
        PEER_DETAILS,
    )
    contract = gateway.get_network("mychannel").get_contract("fl")

    with pytest.raises(EndorseError) as raised:
        await contract.submit("SubmitUpdate", ["round-3"])

    error = raised.value
    (request,) = peer.received("Endorse")
    assert error.transaction_id == request.transaction_id
    assert error.code == grpc.StatusCode.ABORTED
    assert error.grpc_message == (
        "failed to endorse transaction, see attached details for more info"
    )
    assert error.details == [
        ErrorDetail(
            "peer0.org1.example.com:7051", "Org1MSP", f"chaincode response 500, {CHAINCODE_MESSAGE}"
        ),
        ErrorDetail("peer0.org2.example.com:9051", "Org2MSP", "unavailable"),
    ]
    assert str(error) == (
        f"endorse failed for transaction {request.transaction_id}: ABORTED: "
        "failed to endorse transaction, see attached details for more info\n"
        f"  - peer0.org1.example.com:7051 (Org1MSP): chaincode response 500, {CHAINCODE_MESSAGE}\n"
        "  - peer0.org2.example.com:9051 (Org2MSP): unavailable"
    )
    assert isinstance(error.__cause__, grpc.aio.AioRpcError)
    assert peer.received("Submit") == []


async def test_chaincode_message_reaches_the_caller_unchanged(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.failures["Evaluate"] = Failure(grpc.StatusCode.UNKNOWN, CHAINCODE_MESSAGE)

    with pytest.raises(EvaluateError) as raised:
        await gateway.get_network("mychannel").get_contract("fl").evaluate("Get")

    assert raised.value.grpc_message == CHAINCODE_MESSAGE
    assert CHAINCODE_MESSAGE in str(raised.value)
    assert raised.value.details == []


async def test_submit_failure_is_a_submit_error(gateway: Gateway, peer: FakePeer) -> None:
    peer.failures["Submit"] = Failure(
        grpc.StatusCode.UNAVAILABLE,
        "no orderers available",
        [gateway_pb2.ErrorDetail(address="orderer:7050", msp_id="OrdererMSP", message="down")],
    )

    with pytest.raises(SubmitError) as raised:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put")

    (request,) = peer.received("Submit")
    assert raised.value.transaction_id == request.transaction_id
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details == [ErrorDetail("orderer:7050", "OrdererMSP", "down")]


async def test_commit_status_timeout_is_a_commit_status_error(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.hang_commit_status = True
    proposal = gateway.get_network("mychannel").get_contract("fl").new_proposal("Put")
    commit = await (await proposal.endorse()).submit()

    with pytest.raises(CommitStatusError) as raised:
        await commit.status(timeout=0.2)

    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.transaction_id == proposal.transaction_id


async def test_event_stream_failure_is_a_gateway_error(gateway: Gateway, peer: FakePeer) -> None:
    peer.failures["ChaincodeEvents"] = Failure(
        grpc.StatusCode.PERMISSION_DENIED, "access denied", PEER_DETAILS[1:]
    )

    with pytest.raises(GatewayError) as raised:
        async with gateway.get_network("mychannel").chaincode_events("fl") as events:
            await anext(events)

    assert type(raised.value) is GatewayError
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details == [
        ErrorDetail("peer0.org2.example.com:9051", "Org2MSP", "unavailable")
    ]
    assert str(raised.value) == (
        "PERMISSION_DENIED: access denied\n  - peer0.org2.example.com:9051 (Org2MSP): unavailable"
    )
    assert isinstance(raised.value.__cause__, grpc.aio.AioRpcError)
