"""`fedfabric serve`, `fedfabric token` and `fedfabric run --serve` from the command line,
and a service whose peer cannot be reached (no Fabric here: the crypto material only)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from aiohttp.test_utils import TestClient, TestServer

from fedfabric.fl_worker.service import Access, AccessError, EventLog, Service, create_app
from fedfabric.gateway import GatewayError
from fedfabric.network import _crypto, load_topology
from fedfabric.network.cli import parser
from tests.fixtures.tokens import token as service_token

FEDFABRIC = str(Path(sys.executable).with_name("fedfabric"))


def test_run_serve_takes_an_optional_port_and_serve_has_defaults() -> None:
    assert parser().parse_args(["run"]).serve is None
    assert parser().parse_args(["run", "--serve"]).serve == 8480
    assert parser().parse_args(["run", "--serve", "9001"]).serve == 9001
    args = parser().parse_args(["serve", "--org", "energy"])
    assert (args.host, args.port, args.validation) == ("127.0.0.1", 8480, None)
    with pytest.raises(SystemExit):
        parser().parse_args(["token", "issue", "--org", "energy"])  # --name is needed


def token_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDFABRIC, "token", *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_a_token_issued_on_the_command_line_works_until_revoked(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _crypto.generate(load_topology(), state / "crypto")
    issued = token_cli(state, "issue", "--org", "energy", "--name", "alice", "--role", "admin")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    roots = _crypto.msp_roots_dir(state / "crypto")
    energy = _crypto.org_dir(state / "crypto", load_topology().org("energy"))
    revoked = energy / "private" / "serve" / "revoked"  # where `token revoke` writes
    access = Access.from_roots_dir(roots, "EnergyMSP", revoked=revoked)
    caller = access.from_token(token)
    assert (caller.msp_id, caller.role, caller.name) == ("EnergyMSP", "admin", "alice")
    access.require_write(caller)

    gone = token_cli(state, "revoke", "--org", "energy", token)
    assert gone.returncode == 0 and "revoked for EnergyMSP's service" in gone.stdout
    with pytest.raises(AccessError, match="has been revoked"):
        access.from_token(token)
    wrong = token_cli(state, "issue", "--org", "energy", "--name", "bob", "--hours", "0")
    assert wrong.returncode == 1 and "ttl_seconds must be positive" in wrong.stderr


class Unreachable:
    """A ledger whose peer cannot be reached: every call fails as the gateway's would."""

    channel = "smartcity"

    def __getattr__(self, name: str) -> Any:
        async def call(*_: Any, **__: Any) -> Any:
            raise GatewayError("failed to connect", code=grpc.StatusCode.UNAVAILABLE)

        return call


async def test_a_peer_that_cannot_be_reached_is_503_and_health_says_down(tmp_path: Path):
    crypto = tmp_path / "crypto"
    _crypto.generate(load_topology(), crypto)
    access = Access.from_roots_dir(_crypto.msp_roots_dir(crypto), "TransportMSP")
    service = Service(Unreachable(), access=access, log=EventLog())  # type: ignore[arg-type]
    token = service_token(crypto, "transport", "reader")
    client = TestClient(TestServer(create_app(service)))  # not started yet: nothing follows
    await client.start_server()
    try:
        headers = {"Authorization": f"Bearer {token}"}
        tasks = await client.get("/api/v1/tasks", headers=headers)
        assert tasks.status == 503 and (await tasks.json())["error"] == "network-down"
        health = await (await client.get("/api/v1/health", headers=headers)).json()
        assert health["status"] == "down" and "cannot be reached" in health["error"]
        await service.start()  # its events cannot be followed either, and it says why
        for _ in range(50):
            if service.follow_error:
                break
            await asyncio.sleep(0.05)
        health = await (await client.get("/api/v1/health", headers=headers)).json()
        assert "failed to connect" in health["events_error"]
    finally:
        await service.close()
        await client.close()


def test_serving_an_organisation_without_its_keys_says_how_to_make_them(tmp_path: Path):
    state = tmp_path / "nothing-here"
    for argv in (
        ["serve", "--org", "energy"],
        ["token", "issue", "--org", "energy", "--name", "x"],
    ):
        done = subprocess.run([FEDFABRIC, *argv, "--state-dir", str(state)], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 1 and "no keys of energy" in done.stderr, done.stderr
        assert "fedfabric org init --org energy" in done.stderr
    assert not state.exists()  # nothing made on the way
