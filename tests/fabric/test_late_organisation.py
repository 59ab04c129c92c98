"""A fourth organisation joins the channel while an FL task runs (issue 14), and its worker's
update commits in a later round: the consortium's commands add it (a config update that two
of the three member admins sign), the ``fl`` definition moves to 3 of 4 (each admin deploys
again: the running chaincode servers stay), the task's coordinator admits it (``fedfabric
task admit``), and its admin registers its worker. The founding organisations' clients stay
open throughout: their ledgers follow the new policy from the committed definition.

One machine and one state directory (the development network: the same ceremony run for
every organisation), a network of its own.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from fedfabric.fl_worker.audit import audit_task
from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.coordinator import Coordinator
from fedfabric.fl_worker.federation import federation_workers, prepare
from fedfabric.network import FabricNetwork, _process, load_topology
from fedfabric.network._ccaas import server_name
from fedfabric.network._policy import majority_policy
from tests.conftest import PORT_SHIFT, ROOT, release, topology_data

SHIFT = PORT_SHIFT - 6000  # clear of the other networks, and below the ephemeral ports (32768+)
FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))
TASK = "late-org"
WATER = {"name": "water", "msp_id": "WaterMSP", "users": 1, "peers": [
    {"name": "peer0", "port": 7451, "chaincode_port": 7452, "operations_port": 9454,
     "chaincode_server_port": 7460}]}  # fmt: skip


def fedfabric(*args: str, state: Path, topology: Path, fails: bool = False) -> str:
    done = subprocess.run(
        [FEDFABRIC, *args, "--topology", str(topology), "--fabric-home", str(release().home)]
        if args[0] in ("consortium", "task") or args[1] in ("up", "deploy")
        else [FEDFABRIC, *args, "--topology", str(topology)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FEDFABRIC_STATE_DIR": str(state)},
        cwd=ROOT,
    )
    said = f"fedfabric {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    assert (done.returncode != 0) == fails, said
    return done.stdout + done.stderr


def fl_servers(net: FabricNetwork) -> dict[str, int | None]:
    """The pid of each peer's ``fl`` chaincode server."""
    cc = net.topology.chaincode("fl")
    return {p.host: _process.pid_of(net.layout, server_name(cc, p)) for p in net.topology.peers}


async def coordinating(clients: Clients, fed: Any) -> Coordinator:
    """Transport's admin coordinating the task, the founding orgs' admins registering."""
    admin = await clients.admin_ledger("transport")
    founding = ("transport", "energy", "health")
    registrars = [await clients.admin_ledger(o) for o in founding]
    msp_ids = [clients.topology.org(o).msp_id for o in founding]
    return Coordinator(fed, admin, task=TASK, allowed_orgs=msp_ids, registrars=registrars)


async def test_an_organisation_added_while_a_task_runs_commits_updates_in_a_later_round(
    tmp_path: Path,
) -> None:
    founding = topology_data(SHIFT)
    grown = copy.deepcopy(founding)
    water = copy.deepcopy(WATER)
    for key in ("port", "chaincode_port", "operations_port", "chaincode_server_port"):
        water["peers"][0][key] += SHIFT
    grown["organizations"].append(water)
    grown["endorsement_policy"] = majority_policy([o["msp_id"] for o in grown["organizations"]])
    files = {}
    for name, data in (("founding", founding), ("grown", grown)):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(data))
    state = tmp_path / "state"
    three = FabricNetwork(load_topology(files["founding"]), state, release())
    # Four organisations' data from the start (one worker each): the late one trains on its
    # own part once it may submit.
    config = RunConfig(
        orgs=4, workers_per_org=1, rounds=3, epochs=1, attack=None, validation_threshold=None,
        strategy="fedavg", weighting="samples",
    )  # fmt: skip
    fed = prepare(config)
    founders = ["TransportMSP", "EnergyMSP", "HealthMSP"]
    try:
        await three.up()
        await three.deploy(["fl"])
        fedfabric("org", "init", "--org", "water", state=state, topology=files["grown"])
        servers = fl_servers(three)
        # The founding organisations' clients stay open while the consortium grows: their
        # ledgers follow the definition's new policy (3 of 4) from the ledger.
        async with Clients(three) as clients:
            coordinator = await coordinating(clients, fed)
            admin = coordinator.ledger
            await coordinator.create_or_load_task()
            ledgers = [
                clients.ledger(org, identity, sync=False)
                for org, identity in await clients.worker_identities(config.replace(orgs=3))
            ]
            # The fourth worker (WaterMSP's, org by org the last) does not run in round 1:
            # a stand-in ledger fills its place and it is left out.
            founding_workers = federation_workers(fed, [*ledgers, ledgers[0]])[:3]
            first = await coordinator.run_round(1, founding_workers)
            assert len(first.updates) == 3

            # Round 2 is open: the consortium adds WaterMSP (Transport proposes, Energy signs).
            fedfabric("consortium", "propose-add", "--org", "transport", "water", state=state,
                      topology=files["grown"])  # fmt: skip
            update = state / "configtx" / "updates" / "add-WaterMSP.tx"
            signed = fedfabric("consortium", "sign", "--org", "energy", str(update), state=state,
                               topology=files["grown"])  # fmt: skip
            assert "signed by TransportMSP, EnergyMSP" in signed
            fedfabric("consortium", "submit", "--org", "transport", str(update), state=state,
                      topology=files["grown"])  # fmt: skip
            fedfabric("org", "up", "--org", "water", state=state, topology=files["grown"])
            for org in ("water", "transport", "energy", "health"):
                fedfabric("org", "deploy", "--org", org, "fl", state=state,
                          topology=files["grown"])  # fmt: skip
            # Only a driving organisation's admin admits it; Energy's is refused, by name.
            refused = fedfabric("task", "admit", "--task", TASK, "--org", "energy", "WaterMSP",
                                state=state, topology=files["grown"], fails=True)  # fmt: skip
            assert "coordinator" in refused and "EnergyMSP does not drive task" in refused
            admitted = fedfabric("task", "admit", "--task", TASK, "--org", "transport",
                                 "WaterMSP", state=state, topology=files["grown"])  # fmt: skip
            assert "submit from round 3 on" in admitted

            four = FabricNetwork(load_topology(files["grown"]), state, release())
            async with Clients(four) as grown_clients:
                water_admin = await grown_clients.admin_ledger("water")
                record = await coordinator.admit("WaterMSP", registrar=water_admin)  # again
                assert record["from_round"] == 3
                (identity,) = await grown_clients.identities("water", ["User1"])
                water_ledger = grown_clients.ledger("water", identity, sync=False)
                workers = federation_workers(fed, [*ledgers, water_ledger])
                second = await coordinator.run_round(2, workers)  # too early for WaterMSP
                third = await coordinator.run_round(3, workers)
            report = await audit_task(admin, TASK)
            assert clients.endorsers.version == 1  # the founders' sets moved to 3 of 4
        refused_updates = {org: r.check for _, org, r in second.refused}
        assert refused_updates == {"WaterMSP": "authorised"} and len(second.updates) == 3
        assert sorted(third.per_org) == sorted([*founders, "WaterMSP"])
        assert third.per_org["WaterMSP"].accepted == 1 and len(third.updates) == 4
        assert report.ok, report
        # Deploying again (each admin approving the new policy) kept the running servers.
        assert fl_servers(three) == servers
    finally:
        await FabricNetwork(load_topology(files["grown"]), state, release()).clean()
