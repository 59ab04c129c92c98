"""The container backend's services without podman running them: a contract from outside
fedfabric is mounted read-only where the chaincode image imports it, and podman's cgroup
failure under ``ip netns exec`` names the way that works."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fedfabric.network import NetworkError
from fedfabric.network._binaries import fabric_release
from fedfabric.network._containers import Containers, contract_source
from fedfabric.network._images import podman
from fedfabric.network._layout import Layout
from tests.conftest import ROOT

SERVE = [sys.executable, "-m", "fedfabric.chaincode", "serve", "--address", "0.0.0.0:7052"]


def containers(tmp_path: Path) -> Containers:
    nodes = Containers(Layout(tmp_path / "state"), fabric_release(None))
    nodes.images = {"peer": "p:1", "orderer": "o:1", "chaincode": "c:1"}  # no binary hashed
    return nodes


def test_fedfabrics_own_contract_needs_no_mount() -> None:
    assert contract_source(["serve", "--contract", "fedfabric.chaincode.fl:FLContract"]) is None
    assert contract_source(["peer", "node", "start"]) is None


def test_a_contract_is_found_where_the_native_server_would_import_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    assert contract_source(["serve", "--contract", "tests.fixtures.pykv:KeyValue"]) == (
        ROOT / "tests"
    )
    (tmp_path / "mycc.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert contract_source(["serve", "--contract", "mycc:Contract"]) == tmp_path / "mycc.py"


def test_a_contract_that_is_nowhere_here_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NetworkError, match=r"contract nosuch\.kv: no package 'nosuch'"):
        contract_source(["serve", "--contract", "nosuch.kv:KV"])


def test_the_chaincode_service_mounts_an_outside_contract_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    nodes = containers(tmp_path)

    own = nodes.service("fl", [*SERVE, "--contract", "fedfabric.chaincode.fl:FLContract"], {})
    outside = nodes.service("kv", [*SERVE, "--contract", "tests.fixtures.pykv:KeyValue"], {})

    assert own["image"] == outside["image"] == "c:1"
    assert len(own["volumes"]) == 1 and "PYTHONPATH" not in own["environment"]
    assert outside["volumes"][1] == f"{ROOT / 'tests'}:/opt/contracts/tests:ro"
    assert outside["environment"]["PYTHONPATH"] == "/opt/fedfabric:/opt/contracts"
    assert outside["command"][:3] == ["serve", "--address", "0.0.0.0:7052"]


def test_podmans_cgroup_failure_names_nsenter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "podman"  # what podman says under `ip netns exec`
    fake.write_text("#!/bin/sh\necho 'runc create failed: no cgroup mount found' >&2\nexit 126\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")

    with pytest.raises(NetworkError, match=r"nsenter --net=/run/netns/NAME"):
        podman("run", "--network", "host", "c:1")
