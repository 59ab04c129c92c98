"""One real Fabric 3.1.5 network (3 orgs, 3 Raft orderers) shared by the tests of a session.

Started once, with the Node reference chaincode ``kv`` deployed; torn down (processes stopped,
state deleted) at the end of the session, also when tests fail. Tests that stop nodes restart
them before they return.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from fedfabric.network import FabricNetwork, FabricNotInstalledError, parse_topology
from tests.conftest import NODE_KV, fabric_release, topology_data

PORT_SHIFT = 20000  # keep clear of a developer's own network on the default ports


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        fabric_release().check()
    except FabricNotInstalledError as exc:
        if os.environ.get("FEDFABRIC_REQUIRE_FABRIC") == "1":
            raise
        skip = pytest.mark.skip(reason=f"real Fabric unavailable: {exc}")
        for item in items:
            if "tests/fabric/" in str(item.fspath):
                item.add_marker(skip)


def kv_topology(port_shift: int = PORT_SHIFT):
    chaincodes = [{"name": "kv", "version": "1.0", "server": "node", "path": str(NODE_KV)}]
    return parse_topology(topology_data(port_shift, chaincodes=chaincodes))


@pytest.fixture(scope="session")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FabricNetwork]:
    net = FabricNetwork(kv_topology(), tmp_path_factory.mktemp("fabric"), fabric_release())
    try:
        await net.up()
        await net.deploy(["kv"])
        yield net
    finally:
        await net.clean()
