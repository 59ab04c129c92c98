"""The base install (no extras) is enough to serve the FL contract: no torch, scikit-learn or
matplotlib is installed, a peer's stream runs ``CreateTask`` against the served contract, and
``fedfabric network`` works while ``fedfabric run`` says which extra it needs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import numpy as np
from chaincode_fakepeer import FakePeer, response_of

from fedfabric.chaincode.fl import Layout, encode_model
from fedfabric.chaincode.testing import fake_identity
from tests.conftest import ROOT

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

    reply = asyncio.run(serve_and_create_task(python, tmp_path))
    assert reply.status == 200, reply.message
    assert json.loads(reply.payload)["spec"]["id"] == "base-install"


async def serve_and_create_task(python: str, cwd: Path):
    proc = await asyncio.create_subprocess_exec(
        python,
        "-m",
        "fedfabric.chaincode",
        "serve",
        "--contract",
        "fedfabric.chaincode.fl:FLContract",
        "--address",
        "127.0.0.1:0",
        "--chaincode-id",
        "fl_1.0:base",
        cwd=cwd,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            line = (await proc.stderr.readline()).decode()
            while "serving chaincode" not in line:
                assert line, f"the server exited ({await proc.wait()})"
                line = (await proc.stderr.readline()).decode()
        address = line.split(" on ")[1].split()[0]
        layout = Layout.from_json({"tensors": [{"name": "w", "shape": [4]}]})
        task = {
            "id": "base-install",
            "layout": layout.to_json(),
            "rounds": 1,
            "min_updates": 1,
            "norm_bound": 10.0,
            "max_update_bytes": 1000,
            "aggregation": {"rule": "median", "params": {}},
            "allowed_orgs": ["Org1MSP"],
        }
        model = encode_model({"w": np.zeros(4, np.float32)}, layout)
        async with grpc.aio.insecure_channel(address) as channel, FakePeer(channel) as peer:
            async with asyncio.timeout(30):
                done = await peer.execute(
                    "fl:CreateTask",
                    json.dumps(task),
                    model,
                    txid="tx-base",
                    creator=fake_identity("Org1MSP", role="admin", name="admin"),
                )
        return response_of(done)
    finally:
        proc.send_signal(signal.SIGTERM)
        await proc.wait()
