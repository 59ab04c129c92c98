"""`fedfabric run` and `fedfabric audit` end to end on real Fabric: the project's main job.

Each run wires its organisations' private validators into the session network's ``fl``
chaincode servers (restarting them when the run's validation splits differ from the last).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.inmemory import run_in_memory
from fedfabric.fl_worker.run import VALIDATION_FOLDER, RunOptions, run_job
from fedfabric.network import FabricNetwork
from tests.conftest import PORT_SHIFT, topology_data

SMALL = {"rounds": 2, "workers_per_org": 2, "epochs": 1, "attack": None}  # validation on


def say(_: str) -> None:
    pass


def topology_file(network: FabricNetwork, folder: Path) -> Path:
    """The session network's topology as a file, for the CLI."""
    chaincodes = []
    for cc in network.topology.chaincodes:
        entry = {
            "name": cc.name,
            "version": cc.version,
            "server": cc.server,
            "settings": cc.settings,
        }
        entry.update({"contract": cc.contract} if cc.contract else {"path": str(cc.path)})
        chaincodes.append(entry)
    path = folder / "topology.yaml"
    path.write_text(yaml.safe_dump(topology_data(PORT_SHIFT, chaincodes=chaincodes)))
    return path


def cli(network: FabricNetwork, folder: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fedfabric.network",
        *args,
        "--topology",
        str(topology_file(network, folder)),
        "--state-dir",
        str(network.layout.root),
    ]


def final_digest(report: Path) -> str:
    return json.loads((report / "summary.json").read_text())["final_model_digest"]


async def test_small_clean_run_learns_and_equals_plain_fedavg_without_ledger(
    network: FabricNetwork, tmp_path: Path
) -> None:
    """Validation on, nobody attacking: the orgs refuse no honest update, so the ledger
    commits what plain FedAvg computes in memory."""
    config = RunConfig(**SMALL, strategy="fedavg", weighting="samples")

    report = await run_job(
        config, RunOptions(task="job-small", report_dir=tmp_path), network, say=say
    )

    assert report.rounds[-1].accuracy > report.initial_accuracy + 0.3
    assert report.rounds[-1].accuracy == report.baseline_final_accuracy
    assert [r.committed for r in report.rounds] == [6, 6] and report.refusals() == {}
    # Each org's admin registers its workers, then per round 6 updates and one AdvanceRound
    # (CreateTask, which opened round 1, came before).
    assert report.ledger.transactions == report.ledger.valid_transactions == 3 + 2 * (6 + 1)
    assert report.ledger.bytes > report.ledger.ledger_update_bytes > 0
    for name in ("report.md", "rounds.csv", "summary.json", "accuracy.png", "final_model.bin"):
        assert (tmp_path / name).stat().st_size > 0
    assert set(report.contributions) == {"TransportMSP", "EnergyMSP", "HealthMSP"}


async def test_the_default_run_has_each_gaussian_attacker_refused_by_its_own_orgs_server(
    network: FabricNetwork, tmp_path: Path
) -> None:
    """`fedfabric run` with no flags (fewer rounds): 2 of 9 workers add Gaussian noise; each
    organisation's chaincode server validates on its own split, written to its private
    directory; the in-memory emulation of validation commits the ledger's models."""
    config = RunConfig(rounds=3)
    outcomes = []

    report = await run_job(
        config,
        RunOptions(task="job-default", report_dir=tmp_path),
        network,
        say=say,
        on_round=outcomes.append,
    )

    async with Clients(network) as clients:
        admin, workers = await clients.creators(config)
    emulated = await run_in_memory(config, admin=admin, workers=workers)
    assert len(report.malicious) == 2
    for outcome in outcomes:
        assert sorted(name for name, _, _ in outcome.refused) == sorted(report.malicious)
        for _, org, found in outcome.refused:
            # Its own org refuses it; the org endorsing alongside may refuse it too.
            assert found.check == "private-validation" and org in found.orgs
            assert f"private-validation: {org} refuses the update of {org}:" in found.message
    assert [r.committed for r in report.rounds] == [7, 7, 7]
    assert report.refusals() == {
        org: {"private-validation": 3 * n}
        for org, n in Counter(o for _, _, found in outcomes[0].refused for o in found.orgs).items()
    }
    assert report.rounds[-1].accuracy > report.baseline_final_accuracy + 0.1
    assert emulated.final_model == report.final_model
    for org in network.topology.organizations:
        folder = network.private_dir(org.name) / VALIDATION_FOLDER
        data = folder / "job-default.npz"  # one file per task, in a folder the server reads
        assert stat.S_IMODE(network.private_dir(org.name).stat().st_mode) == 0o700
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(data.stat().st_mode) == 0o600
        assert f"validation_data={folder}" in server_command(network, org.peers[0].host)


def server_command(network: FabricNetwork, peer: str) -> str:
    """The command line of the ``fl`` chaincode server next to `peer`."""
    pid = int(network.layout.pid_file(f"cc-fl-{peer}").read_text().split()[0])
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_a_robust_strategy_keeps_accuracy_under_sign_flip_where_fedavg_drops(
    network: FabricNetwork, tmp_path: Path
) -> None:
    # Rules over single updates (Multi-Krum with f = 3 needs nine rows, there are three
    # orgs), alone, on IID data.
    attacked = {"rounds": 3, "attack": "sign_flip", "malicious": 0.3, "weighting": "samples"}
    attacked.update(alpha=None, validation_threshold=None)
    accuracy = {}
    for strategy, params in [("fedavg", {}), ("multi-krum", {"f": 3, "m": 5})]:
        config = RunConfig(strategy=strategy, strategy_params=params, **attacked)
        report = await run_job(
            config,
            RunOptions(task=f"job-{strategy}", baseline=False, report_dir=tmp_path / strategy),
            network,
            say=say,
        )
        accuracy[strategy] = report.rounds[-1].accuracy
        if strategy == "multi-krum":
            assert report.rounds[-1].excluded >= 3  # the three attackers
    clean = (
        (
            await run_job(
                RunConfig(
                    rounds=3,
                    alpha=None,
                    attack=None,
                    validation_threshold=None,
                    weighting="samples",
                ),
                RunOptions(task="job-clean", baseline=False, report_dir=tmp_path / "clean"),
                network,
                say=say,
            )
        )
        .rounds[-1]
        .accuracy
    )

    assert accuracy["multi-krum"] > accuracy["fedavg"] + 0.1
    assert accuracy["multi-krum"] > clean - 0.1


def run_cli(network: FabricNetwork, folder: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        cli(network, folder, *args), capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def kill_9_at(network: FabricNetwork, folder: Path, marker: str, *args: str) -> None:
    """Run the CLI and kill -9 it as soon as a line of its output holds `marker`."""
    proc = subprocess.Popen(
        cli(network, folder, *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 600
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def test_kill_9_then_resume_gives_the_same_final_model_and_audit_checks_it(
    network: FabricNetwork, tmp_path: Path
) -> None:
    flags = ["run", "--rounds", "3", "--workers-per-org", "2", "--no-baseline"]
    run_cli(network, tmp_path, *flags, "--task", "job-whole", "--report", str(tmp_path / "whole"))
    killed = [*flags, "--task", "job-killed", "--report", str(tmp_path / "killed")]

    kill_9_at(network, tmp_path, "round 1/3", *killed)  # right after round 1 committed, mid-run
    assert not (tmp_path / "killed" / "summary.json").exists()
    resumed = run_cli(network, tmp_path, *killed, "--resume")

    assert "resuming at round 2" in resumed.stdout
    assert final_digest(tmp_path / "killed") == final_digest(tmp_path / "whole")

    model = tmp_path / "killed" / "final_model.bin"
    audit = subprocess.run(
        cli(network, tmp_path, "audit", "--task", "job-killed", "--model", str(model)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 0 and "audit passed" in audit.stdout, audit.stdout + audit.stderr
    tampered = bytearray(model.read_bytes())
    tampered[-1] ^= 1
    (tmp_path / "tampered.bin").write_bytes(bytes(tampered))
    audit = subprocess.run(
        cli(
            network,
            tmp_path,
            "audit",
            "--task",
            "job-killed",
            "--model",
            str(tmp_path / "tampered.bin"),
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert audit.returncode == 1 and "DOES NOT MATCH" in audit.stdout


def test_async_mode_kill_9_then_resume_gives_the_same_final_model(
    network: FabricNetwork, tmp_path: Path
) -> None:
    """Asynchronous rounds (FedBuff) with the fixed arrival order, validation on and two
    Gaussian attackers refused by their own organisations: an uninterrupted run and one
    killed mid-run (updates pending) and resumed from the ledger commit the same versions;
    the audit recomputes each of them with its staleness factors."""
    flags = ["run", "--mode", "async", "--async-order", "fixed", "--rounds", "3"]
    flags += ["--workers-per-org", "2", "--buffer-size", "4", "--no-baseline"]
    whole = run_cli(
        network, tmp_path, *flags, "--task", "async-whole", "--report", str(tmp_path / "whole")
    )
    killed = [*flags, "--task", "async-killed", "--report", str(tmp_path / "killed")]

    kill_9_at(network, tmp_path, "version 1/3", *killed)
    resumed = run_cli(network, tmp_path, *killed, "--resume")
    audit = run_cli(network, tmp_path, "audit", "--task", "async-killed")

    assert "version 3/3" in whole.stdout and "buffer 4 (staleness" in whole.stdout
    assert "resuming at version" in resumed.stdout
    assert final_digest(tmp_path / "killed") == final_digest(tmp_path / "whole")
    summary = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert [r["committed"] for r in summary["rounds"]] == [4, 4, 4]
    assert "audit passed" in audit.stdout and audit.stdout.count(" ok ") == 3


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--strategy", "bogus"], "unknown strategy 'bogus'"),
        (["--malicious", "1.5"], "'malicious'"),
        (["--dataset", "/no/such/file.npz"], "does not exist"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_submitted(
    network: FabricNetwork, tmp_path: Path, flags: list[str], words: str
) -> None:
    before = await network.height(network.topology.peers[0])

    result = subprocess.run(
        cli(network, tmp_path, "run", *flags),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 2 and words in result.stderr
    assert await network.height(network.topology.peers[0]) == before


def test_a_network_that_is_not_running_is_named(network: FabricNetwork, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedfabric.network",
            "run",
            "--no-up",
            "--topology",
            str(topology_file(network, tmp_path)),
            "--state-dir",
            str(tmp_path / "elsewhere"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 1
    assert "is not running" in result.stdout + result.stderr


async def test_a_device_run_submits_each_orgs_devices_in_batches_from_its_gateway(
    network: FabricNetwork, tmp_path: Path
) -> None:
    """Device mode: every device signs with its own identity, each org's User1 submits its
    devices in SubmitBatch transactions, and every device is on the ledger as a worker."""
    config = RunConfig(**{**SMALL, "validation_threshold": None}, weighting="samples")
    said: list[str] = []

    report = await run_job(
        config,
        RunOptions(task="job-devices", report_dir=tmp_path, devices_per_org=4, baseline=False),
        network,
        say=said.append,
    )

    assert [r.committed for r in report.rounds] == [12, 12]
    async with Clients(network) as clients:
        admin = await clients.admin_ledger("transport")
        gateways = {
            msp: clients.ledger(org, network.identity(org, "User1")).worker_id
            for org, msp in zip(clients.org_names(3), clients.msp_ids(3), strict=True)
        }
        for round_no in (1, 2):
            batches = await admin.batches("job-devices", round_no)
            updates = (await admin.round_updates("job-devices", round_no))["updates"]
            assert sorted(b["submitter"] for b in batches) == sorted(gateways.values())
            assert all(b["refused"] == [] and len(b["accepted"]) == 4 for b in batches)
            accepted = sorted(w for b in batches for w in b["accepted"])
            assert accepted == sorted(u["worker"] for u in updates)
            assert not set(accepted) & set(gateways.values())
            assert {u["subject"].split(",")[0].split("@")[0] for u in updates} == {
                f"CN=device{n:05d}" for n in range(1, 13)
            }
    assert sum("a batch of 4 devices: 4 recorded, 0 refused" in line for line in said) == 6
