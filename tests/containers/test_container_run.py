"""The main job on the container backend: `fedfabric run --backend containers` brings the
network up as podman containers, deploys the FL contract with each organisation's private
validator (numpy: the chaincode image has no torch), trains, and ends with the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from fedfabric.network import FabricNetwork, load_topology
from tests.conftest import PORT_SHIFT, ROOT, release, topology_data

SHIFT = PORT_SHIFT - 4500  # clear of the other networks, below the ephemeral ports
FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))


def test_the_main_job_runs_in_containers_and_ends_with_the_report(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(topology_data(SHIFT)))
    settings = tmp_path / "run.yaml"
    settings.write_text(yaml.safe_dump({"rounds": 2, "workers_per_org": 2, "epochs": 1}))
    state, report = tmp_path / "state", tmp_path / "report"
    try:
        done = subprocess.run(
            [FEDFABRIC, "run", "--backend", "containers", "--config", str(settings),
             "--topology", str(topology), "--fabric-home", str(release().home),
             "--report", str(report)],
            capture_output=True, text=True, timeout=900, cwd=ROOT,
            env={**os.environ, "FEDFABRIC_STATE_DIR": str(state)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        summary = json.loads((report / "summary.json").read_text())
        assert [r["round"] for r in summary["rounds"]] == [1, 2]
        assert all(r["committed"] >= 2 for r in summary["rounds"]), summary["rounds"]
        refused = sum(r["refused"] for r in summary["rounds"])
        assert refused >= 1, summary["rounds"]  # the default attackers, by the validators
        assert "report:" in done.stdout
        servers = [line for line in done.stdout.splitlines() if "chaincode server" in line]
        assert servers, done.stdout  # the fl servers were started (as containers)
    finally:
        network = FabricNetwork(load_topology(topology), state, release(), backend="containers")
        import asyncio

        asyncio.run(network.clean())
