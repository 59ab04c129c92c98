"""Shared test fixtures: a real Fabric network per test session (tests/fabric) and topology data."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from fedfabric.network import DEFAULT_TOPOLOGY, FabricRelease, fabric_release

ROOT = Path(__file__).resolve().parent.parent
NODE_KV = ROOT / "tests" / "fixtures" / "node-kv"


def topology_data(port_shift: int = 0, **overrides: Any) -> dict[str, Any]:
    """The default topology as YAML data, every port moved by ``port_shift``."""
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for node in data["orderer_org"]["orderers"] + [p for o in data["organizations"]
                                                   for p in o["peers"]]:
        for key, value in node.items():
            if key.endswith("port"):
                node[key] = value + port_shift
    data.update(copy.deepcopy(overrides))
    return data


def release() -> FabricRelease:
    """The Fabric release the tests use (FEDFABRIC_FABRIC_HOME or scripts/install-fabric's)."""
    return fabric_release(os.environ.get("FEDFABRIC_FABRIC_HOME"))
