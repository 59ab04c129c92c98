"""Which Fabric runs: the pinned build, or a release folder the user brings (used as it is)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from fedfabric.network import (
    PINNED_FABRIC,
    FabricNotInstalledError,
    default_fabric_home,
    fabric_release,
    install_fabric,
)
from fedfabric.network._binaries import INSTALLER, TOOLS


def fake_release(folder: Path, version: str = "3.1.5", commit: str = "86c1172b") -> Path:
    """A folder laid out like the official tarball; its `peer version` prints what 3.1.5's does."""
    (folder / "bin").mkdir(parents=True)
    (folder / "config").mkdir()
    for tool in TOOLS:
        script = "#!/bin/sh\n"
        if tool == "peer":
            script += f"printf 'peer:\\n Version: {version}\\n Commit SHA: {commit}\\n'\n"
        (folder / "bin" / tool).write_text(script)
        (folder / "bin" / tool).chmod(0o755)
    for name in ("core.yaml", "orderer.yaml"):
        (folder / "config" / name).write_text("{}\n")
    return folder


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        h.update(str(path).encode() + (path.read_bytes() if path.is_file() else b""))
    return h.hexdigest()


def test_without_a_folder_the_pinned_build_in_the_cache_is_used() -> None:
    release = fabric_release(None)

    assert release.home == default_fabric_home() and not release.supplied
    assert default_fabric_home().name == "fabric-3.0-snapshot-695dd57e"


def test_a_supplied_release_reports_the_version_its_peer_gives(tmp_path: Path) -> None:
    release = fabric_release(str(fake_release(tmp_path / "fabric-3.1.5")))

    assert release.supplied
    assert release.version() == "3.1.5 (commit 86c1172b)"
    assert release.describe() == f"Fabric 3.1.5 (commit 86c1172b), from {tmp_path / 'fabric-3.1.5'}"


async def test_install_on_a_supplied_release_only_checks_it(tmp_path: Path) -> None:
    folder = fake_release(tmp_path / "mine")
    before = digest(folder)

    release = await install_fabric(fabric_release(folder), progress=pytest.fail)

    assert release.home == folder and digest(folder) == before


async def test_install_on_a_supplied_folder_that_is_no_release_names_what_is_missing(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "half"
    (folder / "bin").mkdir(parents=True)

    with pytest.raises(FabricNotInstalledError) as info:
        await install_fabric(fabric_release(folder), progress=pytest.fail)

    assert f"FEDFABRIC_FABRIC_HOME={folder}" in str(info.value)
    assert str(folder / "bin" / "peer") in str(info.value) and PINNED_FABRIC in str(info.value)
    assert sorted(p.name for p in folder.rglob("*")) == ["bin"]


def test_a_missing_pinned_build_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))

    with pytest.raises(FabricNotInstalledError, match="run scripts/install-fabric"):
        fabric_release(None).check()


def test_installer_with_a_supplied_release_reports_it_and_builds_nothing(tmp_path: Path) -> None:
    folder = fake_release(tmp_path / "mine", version="3.1.5")
    before = digest(folder)

    run = subprocess.run(
        ["bash", str(INSTALLER)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FEDFABRIC_FABRIC_HOME": str(folder), "PATH": "/usr/bin:/bin"},
    )  # no Go on PATH: nothing may build

    assert run.returncode == 0, run.stderr
    assert f"FEDFABRIC_FABRIC_HOME={folder}" in run.stderr
    assert "peer version 3.1.5, commit 86c1172b" in run.stderr
    assert digest(folder) == before


def test_installer_refuses_a_supplied_folder_that_is_no_release(tmp_path: Path) -> None:
    run = subprocess.run(
        ["bash", str(INSTALLER)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FEDFABRIC_FABRIC_HOME": str(tmp_path / "none")},
    )

    assert run.returncode == 1
    assert "is not a Fabric release folder" in run.stderr and "bin/peer" in run.stderr
    assert not (tmp_path / "none").exists()
