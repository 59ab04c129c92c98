"""Chaincode and block event streams: start positions, checkpoints, closing, Deliver statuses."""

import asyncio
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.orderer import ab_pb2
from fabric_protos.peer import chaincode_event_pb2, events_pb2
from gateway_fakes import SERVER_NAME, FakePeer, TlsMaterial, User, start_peer

from fedfabric.gateway import (
    ChaincodeEvent,
    DeliverError,
    Gateway,
    InMemoryCheckpointer,
    connect,
)

MAX_UINT64 = 2**64 - 1


def cc_event(tx_id: str, name: str = "UpdateSubmitted") -> chaincode_event_pb2.ChaincodeEvent:
    return chaincode_event_pb2.ChaincodeEvent(
        chaincode_id="fl", tx_id=tx_id, event_name=name, payload=tx_id.encode()
    )


def seek_info(envelope: common_pb2.Envelope) -> ab_pb2.SeekInfo:
    return ab_pb2.SeekInfo.FromString(common_pb2.Payload.FromString(envelope.payload).data)


def channel_header(envelope: common_pb2.Envelope) -> common_pb2.ChannelHeader:
    payload = common_pb2.Payload.FromString(envelope.payload)
    return common_pb2.ChannelHeader.FromString(payload.header.channel_header)


async def test_chaincode_events_are_flattened_in_block_order(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.chaincode_events = [
        gateway_pb2.ChaincodeEventsResponse(block_number=5, events=[cc_event("a"), cc_event("b")]),
        gateway_pb2.ChaincodeEventsResponse(block_number=9, events=[cc_event("c")]),
    ]

    async with gateway.get_network("mychannel").chaincode_events("fl") as events:
        received = [await anext(events) for _ in range(3)]

    assert received == [
        ChaincodeEvent(5, "a", "fl", "UpdateSubmitted", b"a"),
        ChaincodeEvent(5, "b", "fl", "UpdateSubmitted", b"b"),
        ChaincodeEvent(9, "c", "fl", "UpdateSubmitted", b"c"),
    ]


async def test_leaving_the_context_closes_the_stream(gateway: Gateway, peer: FakePeer) -> None:
    peer.chaincode_events = [
        gateway_pb2.ChaincodeEventsResponse(block_number=1, events=[cc_event("a")])
    ]

    async with gateway.get_network("mychannel").chaincode_events("fl") as events:
        await anext(events)

    await asyncio.wait_for(peer.stream_closed.wait(), 5)  # the server saw the cancellation
    with pytest.raises(StopAsyncIteration):
        await anext(events)


async def test_chaincode_events_default_start_is_the_height_when_the_stream_starts(
    gateway: Gateway, peer: FakePeer, user: User
) -> None:
    peer.chaincode_events = [
        gateway_pb2.ChaincodeEventsResponse(block_number=1, events=[cc_event("a")])
    ]

    async with gateway.get_network("mychannel").chaincode_events("fl") as events:
        await anext(events)

    (signed,) = peer.received("ChaincodeEvents")
    request = gateway_pb2.ChaincodeEventsRequest.FromString(signed.request)
    assert (request.channel_id, request.chaincode_id) == ("mychannel", "fl")
    assert request.identity == user.creator
    assert request.start_position.specified.number == peer.height  # the next block to commit
    assert request.after_transaction_id == ""


async def test_an_unsigned_request_built_for_the_next_commit_says_so(gateway: Gateway) -> None:
    request = gateway.get_network("mychannel").new_chaincode_events_request("fl")

    signed = gateway_pb2.SignedChaincodeEventsRequest.FromString(request.bytes())
    start = gateway_pb2.ChaincodeEventsRequest.FromString(signed.request).start_position
    assert start.WhichOneof("Type") == "next_commit"


@pytest.mark.parametrize("kind", ["chaincode_events", "block_events", "filtered_block_events"])
async def test_a_stream_is_under_way_once_entered_before_the_first_anext(
    gateway: Gateway, peer: FakePeer, kind: str
) -> None:
    network = gateway.get_network("mychannel")
    stream = (
        network.chaincode_events("fl") if kind == "chaincode_events" else getattr(network, kind)()
    )
    method = {"chaincode_events": "ChaincodeEvents", "block_events": "Deliver"}.get(
        kind, "DeliverFiltered"
    )

    async with stream:
        await asyncio.wait_for(peer.was_called(method).wait(), 5)  # no anext(stream) yet


async def test_checkpoint_resumes_after_the_last_processed_event(gateway: Gateway) -> None:
    network = gateway.get_network("mychannel")
    checkpointer = InMemoryCheckpointer()
    await checkpointer.checkpoint_chaincode_event(ChaincodeEvent(12, "tx-b", "fl", "E", b""))

    request = network.new_chaincode_events_request("fl", start_block=3, checkpoint=checkpointer)

    signed = gateway_pb2.SignedChaincodeEventsRequest.FromString(request.bytes())
    parsed = gateway_pb2.ChaincodeEventsRequest.FromString(signed.request)
    assert parsed.start_position.specified.number == 12
    assert parsed.after_transaction_id == "tx-b"


async def test_unset_checkpoint_falls_back_to_start_block(gateway: Gateway) -> None:
    network = gateway.get_network("mychannel")

    request = network.new_chaincode_events_request(
        "fl", start_block=3, checkpoint=InMemoryCheckpointer()
    )

    signed = gateway_pb2.SignedChaincodeEventsRequest.FromString(request.bytes())
    parsed = gateway_pb2.ChaincodeEventsRequest.FromString(signed.request)
    assert parsed.start_position.specified.number == 3
    assert parsed.after_transaction_id == ""


async def test_block_events_seek_from_checkpoint_to_max_block(
    gateway: Gateway, peer: FakePeer, user: User
) -> None:
    peer.deliver_responses = [
        events_pb2.DeliverResponse(block=common_pb2.Block(header=common_pb2.BlockHeader(number=8))),
        events_pb2.DeliverResponse(status=common_pb2.SUCCESS),
    ]
    checkpointer = InMemoryCheckpointer()
    await checkpointer.checkpoint_block(7)

    async with gateway.get_network("mychannel").block_events(checkpoint=checkpointer) as blocks:
        received = [block.header.number async for block in blocks]

    assert received == [8]
    (envelope,) = peer.received("Deliver")
    info = seek_info(envelope)
    assert info.start.specified.number == 8
    assert info.stop.specified.number == MAX_UINT64
    assert info.behavior == ab_pb2.SeekInfo.BLOCK_UNTIL_READY
    header = channel_header(envelope)
    assert header.type == common_pb2.DELIVER_SEEK_INFO
    assert header.channel_id == "mychannel"
    assert header.tls_cert_hash == b""  # no mutual TLS
    payload = common_pb2.Payload.FromString(envelope.payload)
    signature_header = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
    assert signature_header.creator == user.creator


@pytest.mark.parametrize(
    ("method", "open_stream", "response"),
    [
        (
            "DeliverFiltered",
            lambda network: network.filtered_block_events(start_block=2),
            events_pb2.DeliverResponse(filtered_block=events_pb2.FilteredBlock(number=2)),
        ),
        (
            "DeliverWithPrivateData",
            lambda network: network.block_and_private_data_events(start_block=2),
            events_pb2.DeliverResponse(
                block_and_private_data=events_pb2.BlockAndPrivateData(
                    block=common_pb2.Block(header=common_pb2.BlockHeader(number=2))
                )
            ),
        ),
    ],
)
async def test_block_event_kinds_use_their_deliver_method(
    gateway: Gateway, peer: FakePeer, method, open_stream, response
) -> None:
    peer.deliver_responses = [response, events_pb2.DeliverResponse(status=common_pb2.SUCCESS)]

    async with open_stream(gateway.get_network("mychannel")) as stream:
        received = [item async for item in stream]

    assert received == [getattr(response, response.WhichOneof("Type"))]
    (envelope,) = peer.received(method)
    assert seek_info(envelope).start.specified.number == 2


async def test_deliver_failure_status_raises(gateway: Gateway, peer: FakePeer) -> None:
    peer.deliver_responses = [events_pb2.DeliverResponse(status=common_pb2.FORBIDDEN)]

    with pytest.raises(DeliverError) as raised:
        async with gateway.get_network("mychannel").block_events() as blocks:
            async for _ in blocks:
                pass

    assert raised.value.status == common_pb2.FORBIDDEN
    assert raised.value.status_name == "FORBIDDEN"
    assert str(raised.value) == "block events stream ended with status 403 (FORBIDDEN)"


async def test_mutual_tls_block_events_carry_the_client_cert_hash(
    tls: TlsMaterial, user: User
) -> None:
    server = await start_peer(tls, mutual_tls=True)
    server.peer.deliver_responses = [events_pb2.DeliverResponse(status=common_pb2.SUCCESS)]
    try:
        async with connect(
            identity=user.identity,
            signer=user.signer,
            endpoint=server.endpoint,
            tls_root_cert=tls.ca_cert,
            client_cert=tls.client_cert,
            client_key=tls.client_key,
            server_name_override=SERVER_NAME,
        ) as gateway:
            async with gateway.get_network("mychannel").block_events() as blocks:
                assert [block async for block in blocks] == []
    finally:
        await server.server.stop(grace=None)

    (envelope,) = server.peer.received("Deliver")
    client_der = x509.load_pem_x509_certificate(tls.client_cert).public_bytes(
        serialization.Encoding.DER
    )
    assert server.peer.client_cert_der == client_der
    assert channel_header(envelope).tls_cert_hash == hashlib.sha256(client_der).digest()
    assert seek_info(envelope).start.specified.number == server.peer.height
