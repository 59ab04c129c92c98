"""The chaincode server image, built here with no registry from the base install: it holds no
ML stack and serves the FL contract to a peer's stream (podman, runc, host network)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedfabric.network._images import CONTAINERS_CONF
from tests.fixtures.served_fl import create_task_on, created, free_port

IMAGE = "fedfabric-chaincode:test"
FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))
ENV = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


@pytest.fixture(scope="module")
def image() -> str:
    build = subprocess.run(
        [FEDFABRIC, "images", "build", "chaincode", "--tag", IMAGE],
        capture_output=True,
        text=True,
        timeout=900,
        env=ENV,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    return IMAGE


def test_the_image_has_the_base_install_and_no_ml_stack(image: str) -> None:
    probe = (
        "import importlib.util as u, fedfabric.chaincode.fl; "
        "print([m for m in ('torch', 'sklearn', 'matplotlib') if u.find_spec(m)])"
    )
    found = subprocess.run(
        ["podman", "run", "--rm", "--entrypoint", "python3", image, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )

    assert found.returncode == 0 and found.stdout.strip() == "[]", found.stderr


def test_the_image_serves_the_fl_contract(image: str) -> None:
    command = ["podman", "run", "--rm", "--network", "host", image]

    reply = asyncio.run(create_task_on(command, free_port(), env=ENV))

    assert created(reply), reply.message
