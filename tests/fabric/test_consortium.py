"""The consortium ceremony (issue 14) with Fabric's own tools: each organisation makes its
keys in its own state directory, and only public bundles cross to the founding party."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from fedfabric.network import load_topology
from tests.conftest import release

FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))


def fedfabric(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FEDFABRIC_STATE_DIR": str(state)}
    home = release().home
    return (
        subprocess.run([FEDFABRIC, *args], capture_output=True, text=True, timeout=120, env=env)
        if args[0] == "org"
        else subprocess.run(
            [FEDFABRIC, *args, "--fabric-home", str(home)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    )


def test_a_genesis_block_from_bundles_alone_names_every_org_and_no_key_crosses(
    tmp_path: Path,
) -> None:
    topology = load_topology()
    orgs = [topology.orderer_org, *topology.organizations]
    founder = tmp_path / "founder"
    crossed: list[Path] = []
    for org in orgs:  # each on "its own host": its own state directory
        home = tmp_path / org.name
        made = fedfabric("org", "init", "--org", org.name, state=home)
        assert made.returncode == 0, made.stderr
        bundle = home / "bundles" / f"{org.msp_id}.json"
        sent = founder / "received" / bundle.name
        sent.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(bundle, sent)
        crossed.append(sent)

    args = [a for f in crossed for a in ("--bundle", str(f))]
    genesis = fedfabric("consortium", "genesis", *args, state=founder)

    assert genesis.returncode == 0, genesis.stderr
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
    for path in crossed:
        assert "PRIVATE KEY" not in path.read_text()
    assert not list(founder.rglob("priv_sk")) and not list(founder.rglob("*.key"))


def test_genesis_without_one_orgs_bundle_names_it(tmp_path: Path) -> None:
    topology = load_topology()
    files = []
    for org in [topology.orderer_org, *topology.organizations[:-1]]:
        home = tmp_path / org.name
        assert fedfabric("org", "init", "--org", org.name, state=home).returncode == 0
        files += ["--bundle", str(home / "bundles" / f"{org.msp_id}.json")]

    genesis = fedfabric("consortium", "genesis", *files, state=tmp_path / "founder")

    missing = topology.organizations[-1]
    assert genesis.returncode == 1
    assert f"no bundle for {missing.msp_id}" in genesis.stderr
    assert not (tmp_path / "founder" / "configtx" / f"{topology.channel}.block").exists()
