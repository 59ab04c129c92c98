"""`fedfabric network` as a user runs it: every documented error is one `error: ...` line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import topology_data


def fedfabric(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedfabric.network", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def assert_one_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    for text in expected:
        assert text in result.stderr


def write_topology(path: Path, **overrides: object) -> Path:
    path.write_text(yaml.safe_dump(topology_data(**overrides)))
    return path


def test_up_with_an_unknown_org_in_the_policy_names_the_field(tmp_path: Path) -> None:
    bad = write_topology(
        tmp_path / "bad.yaml", endorsement_policy="OutOf(2, 'TransportMSP.peer', 'WaterMSP.peer')"
    )

    result = fedfabric("network", "up", "--topology", str(bad), "--state-dir", str(tmp_path))

    assert_one_error(
        result,
        "endorsement_policy",
        "unknown organization 'WaterMSP'",
        "TransportMSP, EnergyMSP, HealthMSP",
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read topology file"),
        ("name: [unclosed", "is not valid YAML"),
        ("name: smartcity\n", "channel"),
    ],
)
def test_up_with_an_unreadable_topology_says_why(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "topology.yaml"
    if content is not None:
        path.write_text(content)

    result = fedfabric("network", "up", "--topology", str(path), "--state-dir", str(tmp_path))

    assert_one_error(result, expected)


def test_up_with_a_fabric_home_that_is_no_release_names_what_is_missing(tmp_path: Path) -> None:
    result = fedfabric(
        "network",
        "up",
        "--state-dir",
        str(tmp_path / "state"),
        env={"FEDFABRIC_FABRIC_HOME": str(tmp_path / "nothing")},
    )

    assert_one_error(
        result, f"FEDFABRIC_FABRIC_HOME={tmp_path / 'nothing'}", "bin/peer", "config/core.yaml"
    )
    assert not (tmp_path / "nothing").exists()  # a folder the user names is never built into


def test_deploy_on_a_network_that_is_not_running_says_to_start_it(tmp_path: Path) -> None:
    result = fedfabric("network", "deploy", "--state-dir", str(tmp_path))

    assert_one_error(result, "not running", "fedfabric network up")


def test_logs_of_an_unknown_node_lists_the_known_ones(tmp_path: Path) -> None:
    result = fedfabric("network", "logs", "peer9.nowhere", "--state-dir", str(tmp_path))

    assert_one_error(result, "no log for 'peer9.nowhere'")
