"""Closing a gateway is orderly: a grace period, then a closed-gateway error, never a bare
CancelledError."""

import asyncio

import pytest
from gateway_fakes import FakePeer

from fedfabric.gateway import Gateway, GatewayClosedError, GatewayError

BOUND = 5.0  # seconds before a step counts as hung


async def started_commit_status(gateway: Gateway, peer: FakePeer) -> asyncio.Task:
    contract = gateway.get_network("mychannel").get_contract("fl")
    task = asyncio.create_task(contract.submit("Put", ["k"]))
    await asyncio.wait_for(peer.was_called("CommitStatus").wait(), BOUND)
    return task


async def test_a_call_in_flight_may_finish_during_the_grace_period(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.commit_status_gate = asyncio.Event()
    submit = await started_commit_status(gateway, peer)

    closing = asyncio.create_task(gateway.close(grace=None))
    await asyncio.sleep(0)  # close has started and is waiting for the call
    peer.commit_status_gate.set()

    assert await asyncio.wait_for(submit, BOUND) == b"endorsed"
    await asyncio.wait_for(closing, BOUND)


async def test_a_call_still_in_flight_after_the_grace_period_is_a_gateway_closed_error(
    gateway: Gateway, peer: FakePeer
) -> None:
    peer.hang_commit_status = True
    submit = await started_commit_status(gateway, peer)

    await asyncio.wait_for(gateway.close(grace=0), BOUND)

    with pytest.raises(GatewayClosedError, match="the gateway was closed") as info:
        await asyncio.wait_for(submit, BOUND)
    assert isinstance(info.value, GatewayError)


async def test_an_event_stream_open_at_close_ends_with_a_gateway_closed_error(
    gateway: Gateway,
) -> None:
    async with gateway.get_network("mychannel").chaincode_events("fl") as events:
        waiting = asyncio.create_task(anext(events))
        await asyncio.sleep(0)
        await asyncio.wait_for(gateway.close(grace=0), BOUND)
        with pytest.raises(GatewayClosedError):
            await asyncio.wait_for(waiting, BOUND)


async def test_a_call_after_close_is_a_gateway_closed_error(
    gateway: Gateway, peer: FakePeer
) -> None:
    await gateway.close()

    with pytest.raises(GatewayClosedError, match="Evaluate .*the gateway was closed"):
        await gateway.get_network("mychannel").get_contract("fl").evaluate("Get")
    assert peer.requests == []
