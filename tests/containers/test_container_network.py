"""The default network with the container backend (`FabricNetwork(backend="containers")`):
every node a podman container of the images built here, on the host network, the state
directory mounted. The FL contract deploys; a transaction endorsed by 2 of the 3
organisations commits, one endorsed by 1 does not; a peer killed with ``podman kill`` catches
up once restarted; after ``down`` and ``up`` the ledgers are where they were. Each
organisation's compose file starts its part of the network with podman-compose, and with
Docker Compose driving podman's Docker-compatible API."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedfabric.chaincode.fl import Layout, encode_model
from fedfabric.gateway import CommitError, Contract, connect_profile
from fedfabric.network import FabricNetwork, parse_topology
from fedfabric.network._compose import org_compose_yaml
from fedfabric.network._containers import LABEL
from fedfabric.network._images import podman_env
from tests.conftest import PORT_SHIFT, release, topology_data

SHIFT = PORT_SHIFT - 3000  # clear of the other networks, and below the ephemeral ports (32768+)
LAYOUT = {"tensors": [{"name": "w", "shape": [4]}], "dtype": "float32"}


@pytest.fixture(scope="module")
async def network(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FabricNetwork]:
    topology = parse_topology(topology_data(SHIFT))
    net = FabricNetwork(topology, tmp_path_factory.mktemp("containers"), release(),
                        backend="containers")  # fmt: skip
    try:
        await net.install()  # builds the images on first use
        await net.up()
        await net.deploy(["fl"])
        yield net
    finally:
        await net.clean()


def containers(net: FabricNetwork, every: bool = False) -> list[str]:
    """The network's running containers (`every`: stopped ones too), with their images."""
    listed = subprocess.run(
        ["podman", "ps", *(["--all"] if every else []), "--filter",
         f"label={LABEL}={net.state_dir.resolve()}", "--format", "{{.Names}} {{.Image}}"],
        capture_output=True, text=True, env=podman_env(), check=True,
    )  # fmt: skip
    return sorted(listed.stdout.splitlines())


async def create_task(net: FabricNetwork, task: str, endorsers: list[str]) -> None:
    """Transport's admin creates an FL task, endorsed by the peers of `endorsers` only."""
    spec = {"id": task, "layout": LAYOUT, "rounds": 1, "min_updates": 1, "norm_bound": 10.0,
            "max_update_bytes": 10_000, "aggregation": {"rule": "fedavg", "params": {}},
            "allowed_orgs": ["TransportMSP", "EnergyMSP", "HealthMSP"]}  # fmt: skip
    initial = encode_model({"w": np.zeros(4, dtype=np.float32)}, Layout.from_json(LAYOUT))
    async with connect_profile(net.profile("transport"), "Admin") as gateway:
        contract: Contract = gateway.get_network(net.topology.channel).get_contract("fl")
        proposal = contract.new_proposal(
            "CreateTask", [json.dumps(spec), initial], endorsing_orgs=endorsers
        )
        status = await (await (await proposal.endorse()).submit()).status()
        if not status.successful:
            raise CommitError(proposal.transaction_id, status.code)


async def test_every_node_is_a_container_of_the_images_built_here(network: FabricNetwork) -> None:
    running = containers(network)

    assert len(running) == 3 + 3 + 3  # orderers, peers, fl chaincode servers
    for kind in ("orderer", "peer", "chaincode"):
        assert sum(f"localhost/fedfabric-{kind}:" in line for line in running) == 3, running
    assert not list(Path(network.state_dir, "run").glob("*.pid"))  # no native process


async def test_two_of_three_endorsements_commit_and_one_does_not(network: FabricNetwork) -> None:
    await create_task(network, "two-orgs", ["TransportMSP", "EnergyMSP"])

    with pytest.raises(CommitError) as refused:
        await create_task(network, "one-org", ["TransportMSP"])

    assert refused.value.code_name == "ENDORSEMENT_POLICY_FAILURE"


async def test_a_killed_peer_container_catches_up_once_restarted(network: FabricNetwork) -> None:
    energy = network.topology.org("energy").peers[0]
    network.kill_node(energy.host)
    assert not network.nodes.running(energy.host)
    await create_task(network, "while-energy-is-down", ["TransportMSP", "HealthMSP"])

    await network.start_node(energy.host)
    await network.wait_synced(timeout=60)

    heights = {s.name: s.height for s in await network.status() if s.kind == "peer"}
    assert len(set(heights.values())) == 1, heights


async def test_down_and_up_keep_the_ledgers(network: FabricNetwork) -> None:
    before = {s.name: s.height for s in await network.status() if s.kind == "peer"}

    await network.down()
    assert containers(network) == []
    await network.up()

    after = {s.name: s.height for s in await network.status() if s.kind == "peer"}
    assert after == before and min(after.values()) > 1
    await create_task(network, "after-restart", ["EnergyMSP", "HealthMSP"])


def compose(*args: str, docker_host: str = "") -> subprocess.CompletedProcess[str]:
    """``podman-compose ARGS`` (from the project's .venv; it needs no `docker_host`)."""
    tool = str(Path(sys.executable).with_name("podman-compose"))
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=300,
                          env=podman_env())  # fmt: skip


async def test_each_orgs_compose_file_holds_its_nodes_and_starts_the_network(
    network: FabricNetwork, tmp_path: Path
) -> None:
    """Last in this module: the network then runs from the compose files."""
    files = {}
    for org in [network.topology.orderer_org, *network.topology.organizations]:
        own = FabricNetwork(network.topology, network.state_dir, release(), orgs=[org.name],
                            backend="containers")  # fmt: skip
        files[org.name] = tmp_path / f"{org.name}.yaml"
        files[org.name].write_text(org_compose_yaml(own))
        services = yaml.safe_load(files[org.name].read_text())["services"]
        nodes = [n for n in services if not n.startswith("cc-")]
        assert nodes == [o.host for o in getattr(org, "orderers", ())] + [
            p.host for p in getattr(org, "peers", ())
        ]
        assert all(org.domain in name for name in services), services
        for tool in (["podman-compose"], ["docker-compose"]):
            checked = (compose if tool == ["podman-compose"] else docker_compose)(
                "-f", str(files[org.name]), "config"
            )
            assert checked.returncode == 0, (tool, checked.stderr)

    await network.down()
    with docker_api(tmp_path / "docker.sock") as docker_host:
        for tool, up in (("podman-compose", compose), ("docker-compose", docker_compose)):
            for name, path in files.items():  # the ordering organisation first
                started = up("-f", str(path), "up", "-d", docker_host=docker_host)
                assert started.returncode == 0, (tool, name, started.stderr)
            await network.wait_leader()
            await network.wait_synced(timeout=60)
            await network.wait_endorsable("fl")  # each gateway's discovery found the others
            await create_task(network, f"from-{tool}", ["TransportMSP", "HealthMSP"])
            assert all(s.running for s in await network.status())
            await network.down()  # the backend stops and removes what the files started
            assert containers(network, every=True) == []


@contextlib.contextmanager
def docker_api(socket: Path) -> Iterator[str]:
    """Podman's Docker-compatible API on `socket` (``podman system service``), which Docker
    Compose drives as it drives a Docker engine; its ``DOCKER_HOST``."""
    service = subprocess.Popen(
        ["podman", "system", "service", "--time", "0", f"unix://{socket}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=podman_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert socket.exists(), "podman system service did not listen"
        yield f"unix://{socket}"
    finally:
        service.terminate()
        service.wait(timeout=30)


def docker_compose(*args: str, docker_host: str = "") -> subprocess.CompletedProcess[str]:
    """``docker-compose ARGS``, against the Docker API at `docker_host` if given."""
    env = {**os.environ, **({"DOCKER_HOST": docker_host} if docker_host else {})}
    return subprocess.run(["docker-compose", *args], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip
