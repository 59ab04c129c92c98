"""Per-call timeouts merge with the gateway's, step by step; None means no deadline."""

from collections.abc import AsyncIterator

import pytest
from gateway_fakes import SERVER_NAME, FakePeer, PeerServer, TlsMaterial, User

from fedfabric.gateway import Gateway, Timeouts, connect

GATEWAY_TIMEOUTS = Timeouts(evaluate=700, endorse=800, submit=900, commit_status=1000)


@pytest.fixture
async def slow_gateway(
    peer_server: PeerServer, tls: TlsMaterial, user: User
) -> AsyncIterator[Gateway]:
    async with connect(
        identity=user.identity,
        signer=user.signer,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
        timeouts=GATEWAY_TIMEOUTS,
    ) as connected:
        yield connected


def deadlines(peer: FakePeer, *methods: str) -> list[float | None]:
    """The deadline each call carried, in seconds, or None; gRPC encodes a deadline with a
    few significant digits, so each is compared to within 2 %."""
    return [
        None if peer.deadlines[m] is None else pytest.approx(peer.deadlines[m], rel=0.02)
        for m in methods
    ]


async def test_a_per_call_timeout_overrides_only_its_own_step(
    slow_gateway: Gateway, peer: FakePeer
) -> None:
    contract = slow_gateway.get_network("mychannel").get_contract("fl")

    await contract.submit("Put", ["k"], timeouts=Timeouts(endorse=300))

    assert [300, 900, 1000] == deadlines(peer, "Endorse", "Submit", "CommitStatus")


async def test_gateway_timeouts_left_out_keep_the_built_in_ones(
    peer_server: PeerServer, peer: FakePeer, tls: TlsMaterial, user: User
) -> None:
    async with connect(
        identity=user.identity,
        signer=user.signer,
        endpoint=peer_server.endpoint,
        tls_root_cert=tls.ca_cert,
        server_name_override=SERVER_NAME,
        timeouts=Timeouts(submit=200),
    ) as gateway:
        await gateway.get_network("mychannel").get_contract("fl").submit("Put", ["k"])

    assert [30, 200, 60] == deadlines(peer, "Endorse", "Submit", "CommitStatus")


async def test_none_means_no_deadline(slow_gateway: Gateway, peer: FakePeer) -> None:
    contract = slow_gateway.get_network("mychannel").get_contract("fl")

    await contract.submit("Put", ["k"], timeouts=Timeouts(endorse=None, commit_status=None))
    await contract.evaluate("Get", timeout=None)

    assert [None, 900, None, None] == deadlines(
        peer, "Endorse", "Submit", "CommitStatus", "Evaluate"
    )
