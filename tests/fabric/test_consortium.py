"""The consortium ceremony (issue 14) with Fabric's own tools, as separate parties run it:
each organisation makes its keys in its own state directory and runs its own nodes from it;
only public bundles, the genesis block and a config update its admins sign cross between
directories. Then, while an FL task runs across the parties, a fourth organisation joins
the channel and then the task, and its workers' updates commit in the task's later rounds."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from fabric_protos.common import common_pb2, configtx_pb2

from fedfabric.network import (
    FabricNetwork,
    NetworkError,
    Organization,
    Topology,
    _process,
    load_topology,
)
from fedfabric.network._ccaas import server_name
from fedfabric.network._containers import LABEL
from fedfabric.network._images import podman
from fedfabric.network._layout import Layout
from fedfabric.network._policy import majority_policy
from fedfabric.network._process import stop
from fedfabric.network.fabric._anchors import anchor_update, anchor_value, set_anchor_peers
from fedfabric.network.fabric._config_update import fetch_config, submit_file, submit_update
from tests.conftest import PORT_SHIFT, ROOT, release, topology_data, with_addresses

FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))
SHIFT = PORT_SHIFT + 3000  # clear of the session's shared network
ROUNDS = 4  # of the FL task; the fourth organisation's workers take part in rounds 3 and 4


def command(*args: str, topology: Path | None, inside: Sequence[str]) -> list[str]:
    """The argv of one `fedfabric` command, run in a party's namespace (`inside`)."""
    extra = ["--topology", str(topology)] if topology else []
    if args[0] in ("consortium", "run", "task") or args[1] in ("up", "deploy", "status", "down"):
        extra += ["--fabric-home", str(release().home)]
    return [*inside, FEDFABRIC, *args, *extra]


def fedfabric(
    *args: str,
    state: Path,
    topology: Path | None = None,
    inside: Sequence[str] = (),
    fails: bool = False,
) -> str:
    """Run one `fedfabric` command as the party whose state directory is `state`; return
    its output (fails the test, with its output, when the command fails, or with `fails`
    when it does not). `inside`: the command prefix that runs it in the party's network
    namespace, if any."""
    done = subprocess.run(
        command(*args, topology=topology, inside=inside),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FEDFABRIC_STATE_DIR": str(state)},
        cwd=ROOT,  # the chaincode servers import tests.fixtures.pykv
    )
    said = f"fedfabric {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    assert (done.returncode != 0) == fails, said
    return done.stdout + done.stderr


class Party:
    """One party's `fedfabric run` (argv `argv`, state directory `home`), its output read
    line by line as it comes (`wait_for`)."""

    def __init__(self, argv: list[str], home: Path) -> None:
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
            env={**os.environ, "FEDFABRIC_STATE_DIR": str(home), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        self.lines: list[str] = []
        self.ended = False
        self._new = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with self._new:
                    self.lines.append(line)
                    self._new.notify_all()
        with self._new:
            self.ended = True
            self._new.notify_all()

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        """The first group of `pattern` (or its whole match) in the first line of output
        that has it, once there is one (fails the test when the run ends or `timeout`
        seconds pass first)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new:
            while True:
                for line in self.lines:
                    if found := regex.search(line):
                        return found.group(1) if regex.groups else found.group(0)
                left = deadline - time.monotonic()
                if self.ended or left <= 0:
                    pytest.fail(f"no {pattern!r} in the run's output:\n{''.join(self.lines)}")
                self._new.wait(left)

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def finish(self, timeout: float = 600) -> str:
        """Its whole output once it ended (fails the test, with it, unless it succeeded)."""
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=30)
        said = "".join(self.lines)
        assert self.proc.returncode == 0, said
        return said

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._reader.join(timeout=30)


def containers(home: Path) -> dict[str, str]:
    """Node name → container id of each container of the state directory `home`."""
    listed = podman("ps", "--all", "--filter", f"label={LABEL}={home.resolve()}",
                    "--format", "{{.Names}} {{.ID}}")  # fmt: skip
    return dict(line.split(" ", 1) for line in listed.splitlines())


def servers(homes: dict[str, Path], topology: Topology, *orgs: Organization) -> dict[str, Any]:
    """The pid (or, in containers, the container id) of each of `orgs`' ``fl`` chaincode
    servers, from its own state directory."""
    cc = topology.chaincode("fl")
    found: dict[str, Any] = {}
    for org in orgs:
        home = homes[org.msp_id]
        for peer in org.peers:
            name = server_name(cc, peer)
            found[peer.host] = _process.pid_of(Layout(home), name) or next(
                (i for n, i in containers(home).items() if n.endswith(f"-{name}")), None
            )
    return found


def test_a_genesis_block_from_bundles_alone_names_every_org(tmp_path: Path) -> None:
    topology = load_topology()
    founder = tmp_path / "founder"
    files = []
    for org in [topology.orderer_org, *topology.organizations]:
        fedfabric("org", "init", "--org", org.name, state=tmp_path / org.name)
        files += ["--bundle", str(tmp_path / org.name / "bundles" / f"{org.msp_id}.json")]

    fedfabric("consortium", "genesis", *files, state=founder)

    block = founder / "configtx" / f"{topology.channel}.block"
    inspected = subprocess.run(
        [str(release().tool("configtxgen")), "-inspectBlock", str(block)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    config = json.loads(inspected.stdout)["data"]["data"][0]["payload"]["data"]["config"]
    groups = config["channel_group"]["groups"]
    assert sorted(groups["Application"]["groups"]) == sorted(
        o.msp_id for o in topology.organizations
    )
    assert list(groups["Orderer"]["groups"]) == [topology.orderer_org.msp_id]
    assert not list(founder.rglob("priv_sk")) and not list(founder.rglob("*.key"))


def test_genesis_without_one_orgs_bundle_names_it(tmp_path: Path) -> None:
    topology = load_topology()
    files = []
    for org in [topology.orderer_org, *topology.organizations[:-1]]:
        fedfabric("org", "init", "--org", org.name, state=tmp_path / org.name)
        files += ["--bundle", str(tmp_path / org.name / "bundles" / f"{org.msp_id}.json")]

    genesis = subprocess.run(
        [FEDFABRIC, "consortium", "genesis", *files, "--fabric-home", str(release().home)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FEDFABRIC_STATE_DIR": str(tmp_path / "founder")},
    )

    assert genesis.returncode == 1
    assert f"no bundle for {topology.organizations[-1].msp_id}" in genesis.stderr


ADDRESSES = {"ordering": "10.77.0.10", "transport": "10.77.0.2", "energy": "10.77.0.3",
             "health": "10.77.0.4", "water": "10.77.0.5"}  # fmt: skip
WATER = {"name": "water", "msp_id": "WaterMSP", "users": 1, "peers": [
    {"name": "peer0", "port": 7451, "chaincode_port": 7452, "operations_port": 9454,
     "chaincode_server_port": 7460}]}  # fmt: skip
CLIENT = """
import asyncio, sys
from fedfabric.gateway import connect_org
profiles, org, channel, action, *rest = sys.argv[1:]
async def main():
    async with connect_org(profiles, org, "User1") as gateway:
        contract = gateway.get_network(channel).get_contract("pykv")
        if action == "put":
            proposal = contract.new_proposal("Put", rest[:2], endorsing_orgs=rest[2:])
            status = await (await (await proposal.endorse()).submit()).status()
            print("committed" if status.successful else status.code_name)
        elif action == "evaluate-on":  # the value as one organisation's peer reads it
            for _ in range(60):
                proposal = contract.new_proposal("Get", rest[:1], endorsing_orgs=rest[1:])
                value = (await proposal.evaluate()).decode()
                if value:
                    break
                await asyncio.sleep(0.5)
            print(value)
        else:
            for _ in range(60):
                value = (await contract.evaluate("Get", rest[:1])).decode()
                if value:
                    break
                await asyncio.sleep(0.5)
            print(value)
asyncio.run(main())
"""


def _with_group_emptied(envelope: bytes, msp_id: str) -> bytes:
    """The config update `envelope` with `msp_id`'s group written empty, one version up."""
    env = common_pb2.Envelope.FromString(envelope)
    payload = common_pb2.Payload.FromString(env.payload)
    wrapped = configtx_pb2.ConfigUpdateEnvelope.FromString(payload.data)
    update = configtx_pb2.ConfigUpdate.FromString(wrapped.config_update)
    group = update.write_set.groups["Application"].groups[msp_id]
    group.CopyFrom(configtx_pb2.ConfigGroup(version=group.version + 1, mod_policy="Admins"))
    wrapped.config_update = update.SerializeToString()
    payload.data = wrapped.SerializeToString()
    env.payload = payload.SerializeToString()
    return env.SerializeToString()


@pytest.fixture
def namespaces() -> Iterator[dict[str, list[str]]]:
    """One Linux network namespace per organisation (addresses `ADDRESSES`), joined by a
    bridge in a namespace of its own; each organisation's commands run in its namespace
    (``nsenter --net``: only the network changes, so podman can run there too). Torn down
    at the end: nothing else can reach them."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (`ip`)")
    tag = f"ff{os.getpid() % 100000}"
    lan = f"{tag}-lan"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)

    made = [lan]
    try:
        ip("netns", "add", lan)
        ip("-n", lan, "link", "add", "br0", "type", "bridge")
        ip("-n", lan, "link", "set", "br0", "up")
        for i, (org, address) in enumerate(ADDRESSES.items()):
            ns = f"{tag}-{org}"
            ip("netns", "add", ns)
            made.append(ns)
            ip("link", "add", f"{tag}a{i}", "netns", ns, "type", "veth", "peer", "name",
               f"{tag}b{i}", "netns", lan)  # fmt: skip
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", f"{tag}a{i}")
            ip("-n", ns, "link", "set", f"{tag}a{i}", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", lan, "link", "set", f"{tag}b{i}", "master", "br0")
            ip("-n", lan, "link", "set", f"{tag}b{i}", "up")
        yield {org: ["nsenter", f"--net=/run/netns/{tag}-{org}"] for org in ADDRESSES}
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


@pytest.mark.parametrize("where", ["one host", "namespaces", "containers in namespaces"])
async def test_each_org_runs_its_own_nodes_from_its_own_keys_and_a_transaction_commits(
    tmp_path: Path, where: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = topology_data(
        SHIFT,
        chaincodes=[
            {"name": "pykv", "version": "1.0", "server": "python",
             "contract": "tests.fixtures.pykv:KeyValue"},
            {"name": "fl", "version": "1.0", "server": "python",
             "contract": "fedfabric.chaincode.fl:FLContract"},
        ],
    )  # fmt: skip
    inside: dict[str, list[str]] = {org: [] for org in ADDRESSES}
    isolated = where != "one host"
    if isolated:
        inside = request.getfixturevalue("namespaces")
        with_addresses(data, **{o: a for o, a in ADDRESSES.items() if o != "water"})
    if where.startswith("containers"):  # every party's nodes: podman containers
        monkeypatch.setenv("FEDFABRIC_BACKEND", "containers")
        # The images, built here first: an image build downloads wheels, which the
        # namespaces cannot (each party's host would build or load its own).
        await FabricNetwork(load_topology(), tmp_path / "images", release(),
                            backend="containers").install()  # fmt: skip
    topology_file = tmp_path / "topology.yaml"
    topology_file.write_text(yaml.safe_dump(data))
    topology = load_topology(topology_file)
    parties = [topology.orderer_org, *topology.organizations]
    homes = {o.msp_id: tmp_path / o.name for o in parties}
    names = {o.msp_id: o.name for o in parties}
    crossed: list[Path] = []  # every file that moved from one party's directory to another's

    def send(path: Path, to: str) -> Path:
        inbox = tmp_path / "inbox" / to / path.name
        inbox.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, inbox)
        crossed.append(inbox)
        return inbox

    steps: dict[str, float] = {}
    runs: list[Party] = []  # the parties' `fedfabric run`s, killed at the end if still running

    def timed(step: str, *args: str, state: Path) -> str:
        party = names[next(m for m, h in homes.items() if h == state)]
        t = time.monotonic()
        out = fedfabric(*args, state=state, topology=topology_file, inside=inside[party])
        steps[step] = steps.get(step, 0.0) + time.monotonic() - t
        return out

    def client(org: str, *args: str) -> str:
        profiles = Layout(homes[topology.org(org).msp_id]).profiles_dir
        done = subprocess.run(
            [*inside[org], sys.executable, "-c", CLIENT, str(profiles), org, topology.channel,
             *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    try:
        for o in parties:
            timed("org init", "org", "init", "--org", o.name, state=homes[o.msp_id])
        bundles = {m: homes[m] / "bundles" / f"{m}.json" for m in homes}
        for o in parties:
            received = [str(send(b, o.name)) for m, b in bundles.items() if m != o.msp_id]
            timed("org receive", "org", "receive", "--org", o.name, *received,
                  state=homes[o.msp_id])  # fmt: skip
        founder = topology.organizations[0]
        files = [
            a
            for m in homes
            for a in ("--bundle", str(homes[founder.msp_id] / "bundles" / f"{m}.json"))
        ]
        timed("consortium genesis", "consortium", "genesis", *files, state=homes[founder.msp_id])
        block = Layout(homes[founder.msp_id]).channel_block(topology.channel)
        for o in parties:  # the ordering organisation first: peers join through its orderers
            genesis = send(block, o.name) if o.msp_id != founder.msp_id else block
            timed("org up", "org", "up", "--org", o.name, "--genesis", str(genesis),
                  state=homes[o.msp_id])  # fmt: skip
        first, second, third = topology.organizations
        waiting = timed("org deploy", "org", "deploy", "--org", first.name,
                        state=homes[first.msp_id])  # fmt: skip
        assert f"waiting for {second.msp_id} to approve pykv 1.0 sequence 1" in waiting
        assert f"waiting for {second.msp_id} to approve fl 1.0 sequence 1" in waiting
        for o in (second, third):
            timed("org deploy", "org", "deploy", "--org", o.name, state=homes[o.msp_id])
        timed("org deploy", "org", "deploy", "--org", first.name, state=homes[first.msp_id])
        if where.startswith("containers"):  # orderers, or a peer with its two servers
            for o in parties:
                nodes = containers(homes[o.msp_id])
                assert len(nodes) == 3 and not list((homes[o.msp_id] / "run").glob("*.pid"))

        if where == "one host":
            # Energy's admin may not set Transport's anchor peers: the orderer refuses it.
            energy = FabricNetwork(topology, homes[second.msp_id], release(), orgs=[second.name])
            config = await fetch_config(energy, second)
            elsewhere = dataclasses.replace(first.peers[0], port=first.peers[0].port + 1)
            forged = anchor_update(
                config, topology.channel, first.msp_id, anchor_value((elsewhere,))
            )
            assert forged is not None
            with pytest.raises(NetworkError, match="polic"):
                await submit_update(energy, second, forged, "forged-anchors")
            assert await set_anchor_peers(energy, second) is False  # its own: set at `org up`

        put = client(first.name, "put", "ceremony", "committed", first.msp_id, third.msp_id)
        assert put == "committed"
        assert client(second.name, "get", "ceremony") == "committed"

        # The main job across the parties: each organisation runs its own part on its own
        # host with its own keys (Transport coordinates, Energy and Health --join), with one
        # settings file; each validates updates with its own private split.
        settings = tmp_path / "inbox" / "run.yaml"
        # Health's worker poisons its updates: the others' validators refuse them, which
        # only Health sees; its worker declines each round, so no round waits for it.
        settings.write_text(yaml.safe_dump({"rounds": ROUNDS, "workers_per_org": 1,
                                            "epochs": 1, "attack": "gaussian",
                                            "malicious_org": 3}))  # fmt: skip
        crossed.append(settings)
        report = tmp_path / "report"

        def run(org: str, *extra: str) -> Party:
            argv = command("run", "--org", org, "--config", str(settings), *extra,
                           topology=topology_file, inside=inside[org])  # fmt: skip
            runs.append(Party(argv, homes[topology.org(org).msp_id]))
            return runs[-1]

        t = time.monotonic()
        joined = [run(o.name, "--join") for o in (second, third)]
        coordinating = run(first.name, "--report", str(report))
        task = coordinating.wait_for(r"task (\S+): created")
        coordinating.wait_for(rf"round 1/{ROUNDS}: ")
        # A fourth organisation joins the channel while the task runs, and then the task.
        # The consortium's steps take longer than this small task's rounds, so the
        # coordinator is paused (SIGSTOP) with round 2 open; every other process runs on.
        coordinating.pause()
        steps["fedfabric run, rounds 1-2"] = time.monotonic() - t

        # Every party takes the grown topology (its new org, and the policy k' of n+1:
        # 3 of 4); the new org makes its own keys, and the bundles cross both ways.
        grown = copy.deepcopy(data)
        water = copy.deepcopy(WATER)
        for key in ("port", "chaincode_port", "operations_port", "chaincode_server_port"):
            water["peers"][0][key] += SHIFT
        if isolated:
            water["address"] = ADDRESSES["water"]
        grown["organizations"].append(water)
        everyone = [o["msp_id"] for o in grown["organizations"]]
        grown["endorsement_policy"] = majority_policy(everyone)
        topology_file.write_text(yaml.safe_dump(grown))
        topology = load_topology(topology_file)
        newcomer = topology.org("water")
        homes[newcomer.msp_id] = tmp_path / newcomer.name
        names[newcomer.msp_id] = newcomer.name
        water_home = homes[newcomer.msp_id]
        timed("add: org init", "org", "init", "--org", "water", state=water_home)
        water_bundle = water_home / "bundles" / f"{newcomer.msp_id}.json"
        for o in parties:
            timed("add: org receive", "org", "receive", "--org", o.name,
                  str(send(water_bundle, o.name)), state=homes[o.msp_id])  # fmt: skip
        received = [str(send(b, "water")) for b in bundles.values()]
        timed("add: org receive", "org", "receive", "--org", "water", *received, state=water_home)

        # Transport proposes; its signature alone is 1 of the 2 (of 3) the channel needs.
        proposed = timed("add: propose", "consortium", "propose-add", "--org", first.name,
                         "water", state=homes[first.msp_id])  # fmt: skip
        assert "signed by TransportMSP (1 of the 2 of 3 member admins it needs)" in proposed
        update = Layout(homes[first.msp_id]).configtx_dir / "updates" / "add-WaterMSP.tx"
        too_few = fedfabric("consortium", "submit", "--org", first.name, str(update),
                            state=homes[first.msp_id], topology=topology_file,
                            inside=inside["transport"], fails=True)  # fmt: skip
        assert "too few signatures" in too_few and "waiting for 1 of EnergyMSP" in too_few
        if where == "one host":  # the orderer itself refuses it too
            transport = FabricNetwork(topology, homes[first.msp_id], release(), orgs=["transport"])
            with pytest.raises(NetworkError, match="polic"):
                await submit_file(transport, first, update)
        # A proposer who slips in more than the addition (here: Health's group emptied, one
        # version up) gets no signature: Energy's host computes the update itself.
        forged = tmp_path / "inbox" / "energy" / "forged-add-WaterMSP.tx"
        forged.parent.mkdir(parents=True, exist_ok=True)
        forged.write_bytes(_with_group_emptied(update.read_bytes(), third.msp_id))
        refused = fedfabric("consortium", "sign", "--org", second.name, str(forged),
                            state=homes[second.msp_id], topology=topology_file,
                            inside=inside["energy"], fails=True)  # fmt: skip
        assert "is not the update EnergyMSP computes for adding WaterMSP" in refused
        at_energy = send(update, second.name)
        signed = timed("add: sign", "consortium", "sign", "--org", second.name, str(at_energy),
                       state=homes[second.msp_id])  # fmt: skip
        assert "signed by TransportMSP, EnergyMSP (2 of the 2" in signed
        back = send(at_energy, first.name)
        timed("add: submit", "consortium", "submit", "--org", first.name, str(back),
              state=homes[first.msp_id])  # fmt: skip
        again = timed("add: propose", "consortium", "propose-add", "--org", first.name,
                      "water", state=homes[first.msp_id])  # fmt: skip
        assert "member of channel" in again  # idempotent

        # The new org joins with the genesis block and catches up from the orderers; the
        # definitions move to 3 of 4 once three organisations approve them. Each founding
        # admin deploys again on its own host, where its job's chaincode servers keep
        # running with their private validators.
        timed("add: org up", "org", "up", "--org", "water", "--genesis",
              str(send(block, "water")), state=water_home)  # fmt: skip
        waiting = timed("add: org deploy", "org", "deploy", "--org", "water", state=water_home)
        assert "waiting for TransportMSP to approve pykv 1.0 sequence 2" in waiting
        assert "waiting for TransportMSP to approve fl 1.0 sequence 2" in waiting
        validators = servers(homes, topology, first, second, third)
        # Committed at the third approval; the fourth org approves the committed definition,
        # as a peer endorses with a definition only once its own organisation approved it.
        for o in (first, second, third):
            timed("add: org deploy", "org", "deploy", "--org", o.name, state=homes[o.msp_id])
        assert servers(homes, topology, first, second, third) == validators
        assert client("water", "evaluate-on", "ceremony", newcomer.msp_id) == "committed"

        # Water's part of the job waits for the task to admit it: only a driving
        # organisation's admin may (Energy's is refused), Transport's does.
        late = run("water", "--join")
        late.wait_for("waiting for TransportMSP to admit WaterMSP")
        not_driving = fedfabric("task", "admit", "--task", task, "--org", second.name,
                                "WaterMSP", state=homes[second.msp_id], topology=topology_file,
                                inside=inside["energy"], fails=True)  # fmt: skip
        assert "EnergyMSP does not drive task" in not_driving
        admitted = timed("add: task admit", "task", "admit", "--task", task, "--org",
                         first.name, "WaterMSP", state=homes[first.msp_id])  # fmt: skip
        assert "submit from round 3 on" in admitted, admitted
        late.wait_for("WaterMSP registered its workers")
        t = time.monotonic()
        coordinating.resume()
        said = {
            org: party.finish()
            for org, party in zip(["transport", "energy", "health", "water"],
                                  [coordinating, *joined, late], strict=True)
        }  # fmt: skip
        steps[f"fedfabric run, rounds 2-{ROUNDS}"] = time.monotonic() - t
        summary = json.loads((report / "summary.json").read_text())
        # Rounds 1 and 2 have Transport's and Energy's updates, rounds 3 and 4 Water's too.
        assert [r["committed"] for r in summary["rounds"]] == [2, 2, 3, 3], summary["rounds"]
        assert f"{ROUNDS} committed" in said[second.name], said[second.name]
        assert f"{ROUNDS} refused" in said[third.name], said[third.name]
        assert said[third.name].count("declined the round (private-validation") == ROUNDS
        assert "2 committed" in said["water"], said["water"]

        # Energy audits the task from its own directory: every round, Water's updates too.
        model = send(report / "final_model.bin", second.name)
        audit = fedfabric("audit", "--task", task, "--org", second.name, "--model", str(model),
                          state=homes[second.msp_id], topology=topology_file,
                          inside=inside[second.name])  # fmt: skip
        assert audit.count(" ok ") == ROUNDS and "audit passed" in audit, audit
        assert f"matches the ledger's round {ROUNDS} model" in audit, audit
        assert audit.count("WaterMSP 1") == 2, audit

        # The pykv definition moved to 3 of 4 as well: 2 organisations no longer suffice.
        assert client(first.name, "put", "grown", "yes", first.msp_id, third.msp_id) == (
            "ENDORSEMENT_POLICY_FAILURE"
        )
        put = client("water", "put", "grown", "yes", newcomer.msp_id, first.msp_id, third.msp_id)
        assert put == "committed"
        parties.append(newcomer)
    finally:
        for party in runs:
            party.kill()
        for home in homes.values():
            for pid in (home / "run").glob("*.pid"):
                await stop(Layout(home), pid.stem)
            if made := containers(home):
                podman("rm", "--force", "--depend", *made.values())
    for path in crossed:
        assert b"PRIVATE KEY" not in path.read_bytes(), path
    for msp_id, home in homes.items():  # each party holds its own private keys only
        keys = [k.relative_to(home) for k in [*home.rglob("priv_sk"), *home.rglob("*.key")]]
        domain = topology.any_org(msp_id).domain  # in its crypto folder's and nodes' names
        assert keys and all(domain in str(k) for k in keys), (msp_id, keys)
    print(f"{where}: ceremony step seconds:", {k: round(v, 1) for k, v in steps.items()})
    print("files that crossed:", sorted({p.name for p in crossed}))
