"""The peer and orderer images, built here with no registry from the installed Fabric build
(`fedfabric images build`): the binaries run in them, the external builder's POSIX-sh steps
run with the image's own shell, and a second build gives the same image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedfabric.network._config import CCAAS_BUILDER
from fedfabric.network._images import CONTAINERS_CONF, KINDS
from tests.conftest import release

FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))
ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
TAGS = {"peer": "fedfabric-peer:test", "orderer": "fedfabric-orderer:test"}


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300, env=ENV)


def build(kind: str) -> str:
    done = subprocess.run(
        [FEDFABRIC, "images", "build", kind, "--tag", TAGS[kind], "--fabric-home",
         str(release().home)],
        capture_output=True, text=True, timeout=600, env=ENV,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    return {kind: build(kind) for kind in TAGS}


@pytest.mark.parametrize("kind", ["peer", "orderer"])
def test_the_installed_fabric_binary_runs_in_its_image(images: dict[str, str], kind: str) -> None:
    ran = podman("run", "--rm", TAGS[kind], kind, "version")

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"{kind}:") and "Version:" in ran.stdout
    size = json.loads(podman("image", "inspect", TAGS[kind]).stdout)[0]["Size"]
    assert size < 100e6  # the binary, two libraries and busybox: no distribution
    print(f"{TAGS[kind]}: {size / 1e6:.1f} MB")


def test_the_external_builder_runs_with_the_peer_images_shell(
    images: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.json").write_text('{"type": "ccaas", "label": "fl_1.0"}')
    (tmp_path / "ccaas").mkdir()
    (tmp_path / "ccaas" / "fl_1.0.json").write_text('{"address": "127.0.0.1:7160"}')
    steps = (
        "/builder/bin/detect /src /work/meta && "
        "/builder/bin/build /src /work/meta /work/out && "
        "/builder/bin/release /work/out /work/released"
    )
    ran = podman(
        "run", "--rm", "-v", f"{CCAAS_BUILDER}:/builder:ro", "-v", f"{tmp_path}:/work",
        "-e", "FEDFABRIC_CCAAS_DIR=/work/ccaas", TAGS["peer"], "sh", "-c", steps,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    released = tmp_path / "released" / "chaincode" / "server" / "connection.json"
    assert json.loads(released.read_text()) == {"address": "127.0.0.1:7160"}


def test_a_second_build_gives_the_same_image(images: dict[str, str]) -> None:
    first = podman("image", "inspect", "--format", "{{.Id}}", TAGS["orderer"]).stdout
    build("orderer")

    assert podman("image", "inspect", "--format", "{{.Id}}", TAGS["orderer"]).stdout == first


def test_an_unknown_image_is_named() -> None:
    done = subprocess.run([FEDFABRIC, "images", "build", "ca"], capture_output=True, text=True,
                          timeout=60, env=ENV)  # fmt: skip

    assert done.returncode == 1
    assert f"no image 'ca': the images are {', '.join(KINDS)}" in done.stderr
