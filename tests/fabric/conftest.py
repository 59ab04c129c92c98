"""One real Fabric network (3 orgs, 3 Raft orderers) shared by the tests of a session.

Started once, with three chaincodes deployed: the Node reference chaincode ``kv``, its Python
twin ``pykv`` and the FL contract ``fl`` (every org validating privately with
`tests.fixtures.flval`); torn down (processes stopped, state deleted) at the end of the
session, also when tests fail. Tests that stop nodes restart them before they return.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fedfabric.network import FabricNetwork, FabricNotInstalledError, parse_topology
from tests.conftest import NODE_KV, release, topology_data
from tests.fixtures.flval import validation_settings

# Keep clear of a developer's own network on the default ports; two test sessions at once
# need different shifts (FEDFABRIC_TEST_PORT_SHIFT).
PORT_SHIFT = int(os.environ.get("FEDFABRIC_TEST_PORT_SHIFT", "20000"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    try:
        release().check()
    except FabricNotInstalledError as exc:
        if os.environ.get("FEDFABRIC_REQUIRE_FABRIC") == "1":
            raise pytest.UsageError(f"real Fabric is required (FEDFABRIC_REQUIRE_FABRIC=1) but "
                                    f"cannot run: {exc}") from exc
        skip = pytest.mark.skip(reason=f"real Fabric unavailable: {exc}")
        for item in items:
            if "tests/fabric/" in str(item.fspath):
                item.add_marker(skip)


def kv_topology(port_shift: int = PORT_SHIFT, validation_dir: Path | None = None):
    """The test topology; with `validation_dir`, each org's FL validation data is written there."""
    chaincodes = [
        {"name": "kv", "version": "1.0", "server": "node", "path": str(NODE_KV)},
        {"name": "pykv", "version": "1.0", "server": "python",
         "contract": "tests.fixtures.pykv:KeyValue"},
        {"name": "fl", "version": "1.0", "server": "python",
         "contract": "fedfabric.chaincode.fl:FLContract",
         "settings": validation_settings(validation_dir) if validation_dir else {}},
    ]
    return parse_topology(topology_data(port_shift, chaincodes=chaincodes))


@pytest.fixture(scope="session")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FabricNetwork]:
    topology = kv_topology(validation_dir=tmp_path_factory.mktemp("validation"))
    net = FabricNetwork(topology, tmp_path_factory.mktemp("fabric"), release())
    try:
        await net.up()
        await net.deploy(["kv", "pykv", "fl"])
        yield net
    finally:
        await net.clean()
