"""Shared test fixtures: topology data, and one real Fabric network per test session.

The network (3 orgs, 3 Raft orderers) is started once, when a test first asks for it, with
three chaincodes deployed: the Node reference chaincode ``kv``, its Python twin ``pykv`` and
the FL contract ``fl`` (every org validating privately with `tests.fixtures.flval`); it is
torn down (processes stopped, state deleted) at the end of the session, also when tests fail.
Tests that stop nodes restart them before they return.
"""

from __future__ import annotations

import copy
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedfabric.network import (
    DEFAULT_TOPOLOGY,
    FabricNetwork,
    FabricNotInstalledError,
    FabricRelease,
    fabric_release,
    parse_topology,
)
from tests.fixtures.flval import validation_settings

ROOT = Path(__file__).resolve().parent.parent
NODE_KV = ROOT / "tests" / "fixtures" / "node-kv"


def topology_data(port_shift: int = 0, **overrides: Any) -> dict[str, Any]:
    """The default topology as YAML data, every port moved by ``port_shift``."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for node in data["orderer_org"]["orderers"] + [
        p for o in data["organizations"] for p in o["peers"]
    ]:
        for key, value in node.items():
            if key.endswith("port"):
                node[key] = value + port_shift
    data.update(copy.deepcopy(overrides))
    return data


def with_addresses(data: dict[str, Any], **addresses: str) -> dict[str, Any]:
    """Topology ``data`` with ``address`` set on the organisations named (the ordering one too):
    ``with_addresses(data, energy="10.77.0.3")``. Changes and returns ``data``."""
    orgs = {o["name"]: o for o in [data["orderer_org"], *data["organizations"]]}
    for name, address in addresses.items():
        orgs[name]["address"] = address
    return data


def release() -> FabricRelease:
    """The Fabric release the tests use (FEDFABRIC_FABRIC_HOME or scripts/install-fabric's)."""
    return fabric_release(os.environ.get("FEDFABRIC_FABRIC_HOME"))


# Keep clear of a developer's own network on the default ports; two test sessions at once
# need different shifts (FEDFABRIC_TEST_PORT_SHIFT). The tests' networks use PORT_SHIFT - 6000
# to + 3000; with the default every port is below 32768, where Linux starts handing out
# ephemeral ports (a port there may be taken by any outgoing connection).
PORT_SHIFT = int(os.environ.get("FEDFABRIC_TEST_PORT_SHIFT", "20000"))


def needs_fabric(item: pytest.Item) -> bool:
    """Tests under tests/fabric/, and scenarios run with the ``fabric`` backend."""
    callspec = getattr(item, "callspec", None)
    return "tests/fabric/" in str(item.fspath) or (
        callspec is not None and callspec.params.get("backend") == "fabric"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not any(needs_fabric(item) for item in items):
        return
    try:
        release().check()
    except FabricNotInstalledError as exc:
        if os.environ.get("FEDFABRIC_REQUIRE_FABRIC") == "1":
            raise pytest.UsageError(
                f"real Fabric is required (FEDFABRIC_REQUIRE_FABRIC=1) but cannot run: {exc}"
            ) from exc
        skip = pytest.mark.skip(reason=f"real Fabric unavailable: {exc}")
        for item in items:
            if needs_fabric(item):
                item.add_marker(skip)


def kv_topology(port_shift: int = PORT_SHIFT, validation_dir: Path | None = None):
    """The test topology; with `validation_dir`, each org's FL validation data is written there."""
    chaincodes = [
        {"name": "kv", "version": "1.0", "server": "node", "path": str(NODE_KV)},
        {
            "name": "pykv",
            "version": "1.0",
            "server": "python",
            "contract": "tests.fixtures.pykv:KeyValue",
        },
        {
            "name": "fl",
            "version": "1.0",
            "server": "python",
            "contract": "fedfabric.chaincode.fl:FLContract",
            "settings": validation_settings(validation_dir) if validation_dir else {},
        },
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
