"""Real-Fabric tests: the session `network` fixture is in tests/conftest.py; the gateway
fixtures the gateway tests share are here."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fedfabric.gateway import Contract, Gateway, Timeouts, connect_org
from fedfabric.network import FabricNetwork

TIMEOUTS = Timeouts(evaluate=15, endorse=15, submit=15, commit_status=30)
BOUND = 20.0  # seconds any single scenario step may take before the test calls it a hang


@pytest.fixture(scope="module")
async def gateway(network: FabricNetwork) -> AsyncIterator[Gateway]:
    async with connect_org(
        network.layout.profiles_dir, "transport", "User1", timeouts=TIMEOUTS
    ) as gw:
        await network.wait_endorsable("kv")
        yield gw


@pytest.fixture
def channel(network: FabricNetwork) -> str:
    return network.topology.channel


@pytest.fixture
def contract(gateway: Gateway, channel: str) -> Contract:
    return gateway.get_network(channel).get_contract("kv")
