"""Under load a gateway's submits travel in waves (`GatewayClient.submit_linger`): the
orderer then cuts fuller blocks. With few calls in flight nothing waits."""

import asyncio

import pytest
from gateway_fakes import FakePeer, PeerServer, TlsMaterial, User

from fedfabric.gateway import Gateway, connect
from fedfabric.gateway._client import WAVE_FROM

SERVER_NAME = "peer0.org1.example.com"
BOUND = 10.0


def gateway_for(peer_server: PeerServer, tls: TlsMaterial, user: User, linger: float) -> Gateway:
    return connect(
        identity=user.identity,
        signer=user.signer,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
        submit_linger=linger,
    )


async def submits_under_load(gateway: Gateway, peer: FakePeer, load: int) -> list[float]:
    """Hold `load` transactions in CommitStatus, then submit three more; when each of the
    three reached the peer's Submit, in seconds after the first."""
    contract = gateway.get_network("mychannel").get_contract("fl")
    peer.commit_status_gate = asyncio.Event()
    waiting = len(peer.received("CommitStatus"))  # the peer may have served others before
    held = [asyncio.create_task(contract.submit("Put", [f"held{i}"])) for i in range(load)]
    while len(peer.received("CommitStatus")) < waiting + load:
        await asyncio.sleep(0.005)
    before = len(peer.received("Submit"))
    for i in range(3):
        asyncio.create_task(contract.submit_async("Put", [f"late{i}"]))
        await asyncio.sleep(0.05)
    while len(peer.received("Submit")) < before + 3:
        await asyncio.sleep(0.005)
    peer.commit_status_gate.set()
    await asyncio.wait_for(asyncio.gather(*held), BOUND)
    arrived = [t for method, t in peer.arrived if method == "Submit"][before:]
    return [t - arrived[0] for t in arrived]


async def test_under_load_submits_wait_for_each_other_and_go_together(
    peer_server: PeerServer, tls: TlsMaterial, user: User, peer: FakePeer
) -> None:
    async with gateway_for(peer_server, tls, user, linger=0.2) as gateway:
        offsets = await submits_under_load(gateway, peer, WAVE_FROM)
    assert max(offsets) < 0.02  # submitted 50 and 100 ms apart, they arrive together


async def test_with_few_calls_in_flight_or_no_linger_nothing_waits(
    peer_server: PeerServer, tls: TlsMaterial, user: User, peer: FakePeer
) -> None:
    async with gateway_for(peer_server, tls, user, linger=0.2) as gateway:
        light = await submits_under_load(gateway, peer, WAVE_FROM - 4)
    async with gateway_for(peer_server, tls, user, linger=0) as gateway:
        unlingered = await submits_under_load(gateway, peer, WAVE_FROM)
    for offsets in (light, unlingered):
        assert offsets[1] > 0.04 and offsets[2] > 0.09  # one by one, as submitted


def test_a_negative_linger_is_refused(tls: TlsMaterial, user: User) -> None:
    with pytest.raises(ValueError, match="submit_linger must be >= 0 seconds, got -1"):
        connect(identity=user.identity, endpoint="127.0.0.1:1", tls_root_cert=tls.ca_cert,
                submit_linger=-1)  # fmt: skip
