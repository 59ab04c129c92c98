"""The base install (no extras) is enough to serve the FL contract: no torch, scikit-learn or
matplotlib is installed, a peer's stream runs ``CreateTask`` against the served contract, and
``fedfabric network`` and the whole gateway client work while ``fedfabric run`` says which
extra it needs."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.fixtures.served_fl import create_task_on, created, free_port

HEAVY = ("torch", "sklearn", "matplotlib", "rich")


def test_the_base_install_has_no_ml_stack_and_serves_the_fl_contract(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert install.returncode == 0, install.stderr[-2000:]

    found = subprocess.run(
        [
            python,
            "-c",
            f"import importlib.util as u, sys; print([m for m in {HEAVY!r} if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr

    # The gateway client alone (issue 13's "standalone"): its whole public API imports.
    gateway = subprocess.run(
        [
            python,
            "-c",
            "import fedfabric.gateway as g; [getattr(g, n) for n in g.__all__]; "
            "from fedfabric.gateway import signers; print(len(g.__all__))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert gateway.returncode == 0 and int(gateway.stdout) > 20, gateway.stdout + gateway.stderr

    network = subprocess.run(
        [str(venv / "bin" / "fedfabric"), "network", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    job = subprocess.run(
        [str(venv / "bin" / "fedfabric"), "run"], capture_output=True, text=True, timeout=60
    )
    assert network.returncode == 0 and "compose" in network.stdout, network.stderr
    assert job.returncode == 2 and "pip install 'fedfabric[worker]'" in job.stderr, job.stderr

    reply = asyncio.run(
        create_task_on([python, "-m", "fedfabric.chaincode"], free_port(), cwd=tmp_path)
    )
    assert created(reply), reply.message
