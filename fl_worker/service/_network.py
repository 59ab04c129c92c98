"""`fedfabric serve` on an organisation's host: its `Service` over a fedfabric network.

`org_service` connects as the organisation's ``User1`` (reads) and ``Admin`` (writes),
trusts client certificates of every consortium MSP (`_crypto.msp_roots_dir`), and serves
HTTPS with a certificate its own TLS CA issues for the listening address. Its files live in
the organisation's private directory (``serve/``: TLS pair, revoked tokens) and the state
directory (``serve/<org>/events.jsonl``: the event log). The metrics of each round use the
validation data the organisation's ``fl`` chaincode server was deployed with, unless
another is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.service import Access, EventLog, Service, issue_token
from fedfabric.fl_worker.service._access import read_roots
from fedfabric.network import FabricNetwork, NetworkError, _crypto
from fedfabric.network.fabric._chaincode import served

HEALTH_FRESH = 2.0  # seconds a node report is reused (each peer's height costs a CLI call)


def require_keys(network: FabricNetwork, org: str) -> None:
    """Raise `NetworkError`, saying how to make them, unless `org`'s keys are on this host."""
    folder = _crypto.org_dir(network.layout.crypto_dir, network.topology.org(org))
    if not (folder / "tlsca").is_dir() or not (folder / "ca").is_dir():
        raise NetworkError(
            f"no keys of {org} in {network.layout.root}: make them with `fedfabric network "
            f"up` (one host) or `fedfabric org init --org {org}` (its own host)"
        )


def access_for(network: FabricNetwork, org: str) -> Access:
    """Who may call `org`'s service: any identity of the consortium's MSPs; writes its own
    admins; tokens revoked in its private ``serve/revoked``."""
    require_keys(network, org)
    msp_id = network.topology.org(org).msp_id
    roots = _crypto.msp_roots_dir(network.layout.crypto_dir)
    return Access.from_roots_dir(roots, msp_id, revoked=service_dir(network, org) / "revoked")


def operator_token(network: FabricNetwork, org: str, *, role: str = "admin", name: str = "operator",
                   ttl_seconds: float = 12 * 3600) -> str:  # fmt: skip
    """A token `org`'s admin issues (with its own key, on this host)."""
    require_keys(network, org)
    admin = network.identity(org, "Admin")
    roots = read_roots(_crypto.msp_roots_dir(network.layout.crypto_dir))
    return issue_token(admin.cert.read_bytes(), admin.key.read_bytes(), roots, subject=name,
                       role=role, ttl_seconds=ttl_seconds)  # fmt: skip


def deployed_validation(network: FabricNetwork, msp_id: str) -> Path | None:
    """The validation data this host's ``fl`` server of `msp_id` was deployed with."""
    for cc, _ in served(network):
        path = cc.settings.get(msp_id, {}).get("validation_data") if cc.name == "fl" else None
        if path:
            return Path(path)
    return None


@contextlib.asynccontextmanager
async def org_service(
    network: FabricNetwork,
    org: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    validation: Path | None = None,
) -> AsyncIterator[Service]:
    """`org`'s service, listening on `host`:`port` (HTTPS), until the block ends."""
    require_keys(network, org)
    msp_id = network.topology.org(org).msp_id
    folder = service_dir(network, org)
    tls_ca = _crypto.org_dir(network.layout.crypto_dir, network.topology.org(org)) / "tlsca"
    cert, key = _crypto.server_tls(folder / "tls", tls_ca, host)
    access = access_for(network, org)
    log = EventLog(network.layout.root / "serve" / org / "events.jsonl")
    async with Clients(network) as clients:
        reader = clients.ledger(org, network.identity(org, "User1"), sync=False)
        writer = await clients.admin_ledger(org)
        service = Service(
            reader,
            writer=writer,
            access=access,
            log=log,
            health=_Nodes(network),
            validation=validation or deployed_validation(network, msp_id),
            channel=network.topology.channel,
        )
        async with service:
            await service.listen(host, port, access.server_ssl_context(cert, key))
            yield service


class _Nodes:
    """The health report of this host's nodes (`Service`'s `health`), read at most every
    `HEALTH_FRESH` seconds."""

    def __init__(self, network: FabricNetwork) -> None:
        self.network = network
        self._read_at = -HEALTH_FRESH
        self._report: dict[str, Any] = {}

    async def __call__(self) -> dict[str, Any]:
        if time.monotonic() - self._read_at > HEALTH_FRESH:
            nodes = await self.network.status()
            self._report = {
                "raft_leader": await self.network.leader(),
                "nodes": [dataclasses.asdict(n) for n in nodes],
            }
            if not all(n.running for n in nodes):
                self._report["status"] = "degraded"
            self._read_at = time.monotonic()
        return dict(self._report)


def service_dir(network: FabricNetwork, org: str) -> Path:
    """`org`'s private folder of its service: TLS pair, revoked tokens."""
    folder = network.private_dir(org) / "serve"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


__all__ = [
    "access_for",
    "deployed_validation",
    "operator_token",
    "org_service",
    "service_dir",
]
