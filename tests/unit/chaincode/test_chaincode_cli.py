"""``python -m fedfabric.chaincode serve``: arguments, the serving line, signals."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import grpc
import pytest

from fedfabric.chaincode.__main__ import main
from tests.fixtures.fakepeer import FakePeer, response_of

HERE = Path(__file__).parent
CONTRACT = "chaincode_sample_contract:Sample"


@pytest.fixture
def pem_files(tmp_path, tls_material):
    files = {}
    for name in ("ca", "server_cert", "server_key", "client_cert", "client_key"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_bytes(getattr(tls_material, name))
    return files


async def _start(*args: str, env: dict[str, str] | None = None):
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]), **(env or {})}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fedfabric.chaincode",
        "serve",
        *args,
        env=environ,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )


async def _serving_address(proc) -> tuple[str, str, str]:
    async with asyncio.timeout(20):
        while line := (await proc.stderr.readline()).decode():
            if match := re.search(r"serving chaincode (\S+) on (\S+) \((.+)\)", line):
                return match.group(2), match.group(1), match.group(3)
    raise AssertionError(f"no serving line; exit code {await proc.wait()}")


async def _stop(proc) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    async with asyncio.timeout(20):
        await proc.stderr.read()
        return await proc.wait()


async def test_serves_with_mutual_tls_and_stops_on_sigterm(pem_files, tls_material):
    proc = await _start(
        "--contract",
        CONTRACT,
        "--address",
        "127.0.0.1:0",
        "--chaincode-id",
        "sample_1.0:abc",
        "--tls-cert",
        str(pem_files["server_cert"]),
        "--tls-key",
        str(pem_files["server_key"]),
        "--tls-client-ca",
        str(pem_files["ca"]),
        "--setting",
        "org=Org3MSP",
    )
    try:
        address, ccid, mode = await _serving_address(proc)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_material.ca,
            private_key=tls_material.client_key,
            certificate_chain=tls_material.client_cert,
        )
        async with grpc.aio.secure_channel(address, credentials) as channel:
            async with FakePeer(channel) as peer:
                async with asyncio.timeout(10):
                    done = await peer.execute("Info", txid="tx1")
    finally:
        code = await _stop(proc)

    assert (ccid, mode) == ("sample_1.0:abc", "mutual TLS")
    assert peer.registered_name == "sample_1.0:abc"
    assert b'"setting":"Org3MSP"' in response_of(done).payload
    assert code == 0


async def test_environment_gives_chaincode_id_and_address():
    proc = await _start(
        "--contract",
        CONTRACT,
        env={"CHAINCODE_ID": "env_1.0:def", "CHAINCODE_SERVER_ADDRESS": "127.0.0.1:0"},
    )
    try:
        address, ccid, mode = await _serving_address(proc)
    finally:
        proc.send_signal(signal.SIGINT)
        code = await _stop(proc)

    assert (ccid, mode) == ("env_1.0:def", "no TLS")
    assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    assert code == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--contract", "no_such_module:X"], "cannot import contract module 'no_such_module'"),
        (
            ["--contract", "chaincode_sample_contract:NotAContract"],
            "chaincode_sample_contract:NotAContract is not a fedfabric.chaincode.Contract subclass",
        ),
        (["--contract", "chaincode_sample_contract"], "is not MODULE:CLASS"),
        (
            ["--contract", CONTRACT, "--tls-cert", "/nonexistent/cert.pem", "--tls-key", "k"],
            "--tls-cert: cannot read /nonexistent/cert.pem",
        ),
        (["--contract", CONTRACT, "--tls-cert", __file__], "--tls-cert and --tls-key go together"),
        (["--contract", CONTRACT, "--setting", "novalue"], "--setting 'novalue' is not KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args, message, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    monkeypatch.delenv("CHAINCODE_ID", raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["serve", *args, "--address", "127.0.0.1:0", "--chaincode-id", "cc:1"])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_chaincode_id_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("CHAINCODE_ID", raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["serve", "--contract", CONTRACT, "--address", "127.0.0.1:0"])

    assert exited.value.code == 2
    assert "no chaincode id: give --chaincode-id or set CHAINCODE_ID" in capsys.readouterr().err
