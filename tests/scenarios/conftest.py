"""The FL scenarios run once per backend: ``memory`` (`MemoryFL`) and ``fabric`` (the session's
real network). A backend hands out the identities a run needs, as `Ledger` objects; `fresh()`
is what a new process would see (nothing cached but the ledger itself)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from fedfabric.chaincode.testing import fake_identity
from fedfabric.fl_worker.clients import Clients
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.federation import Federation, device_trainers, federation_workers
from fedfabric.fl_worker.inmemory import identities
from fedfabric.fl_worker.ledger import Ledger, MemoryFL
from fedfabric.fl_worker.worker import Retry, Worker, WorkerResources

RETRY = Retry(attempts=4, backoff=0.1)


class MemoryTeam:
    """Identities of a run over one `MemoryFL` world (the stand-ins `run_in_memory` uses)."""

    msp_ids = ("Org1MSP", "Org2MSP", "Org3MSP")

    def __init__(self, world: MemoryFL) -> None:
        self.world = world

    async def admin(self) -> Ledger:
        return self.world.ledger(fake_identity("Org1MSP", role="admin", name="admin"))

    async def registrars(self) -> list[Ledger]:
        return [
            self.world.ledger(fake_identity(m, role="admin", name="admin")) for m in self.msp_ids
        ]

    async def workers(self, fed: Federation, resources: WorkerResources) -> list[Worker]:
        _, creators = identities(fed.config)
        return federation_workers(
            fed, [self.world.ledger(c) for c in creators], resources=resources, retry=RETRY
        )

    async def devices(
        self, fed: Federation, per_org: int, resources: WorkerResources
    ) -> list[Worker]:
        trainers = device_trainers(fed, per_org)
        return [
            Worker(
                f"device{i}",
                self.world.ledger(fake_identity(self.msp_ids[i // per_org], name=f"device{i}")),
                trainer,
                resources=resources,
                retry=RETRY,
            )
            for i, trainer in enumerate(trainers)
        ]

    async def creators(self, config: RunConfig) -> tuple[bytes, list[bytes]]:
        return identities(config)


class FabricTeam:
    """Identities of a run on the real network: org admins, users, devices (`Clients`)."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.msp_ids = tuple(clients.msp_ids(3))

    async def admin(self) -> Ledger:
        return await self.clients.admin_ledger("energy")

    async def registrars(self) -> list[Ledger]:
        return [await self.clients.admin_ledger(o) for o in self.clients.org_names(3)]

    async def workers(self, fed: Federation, resources: WorkerResources) -> list[Worker]:
        return await self.clients.federation_workers(fed, resources=resources, retry=RETRY)

    async def devices(
        self, fed: Federation, per_org: int, resources: WorkerResources
    ) -> list[Worker]:
        return await self.clients.device_workers(fed, per_org, resources=resources, retry=RETRY)

    async def creators(self, config: RunConfig) -> tuple[bytes, list[bytes]]:
        return await self.clients.creators(config)


class Backend:
    """A ledger to run scenarios on; `fresh()` opens a new process's view of it."""

    def __init__(self, name: str, network: Any = None) -> None:
        self.name = name
        self.network = network
        self.world = MemoryFL() if network is None else None

    @asynccontextmanager
    async def fresh(self) -> AsyncIterator[MemoryTeam | FabricTeam]:
        if self.world is not None:
            yield MemoryTeam(self.world)
            return
        await self.network.wait_endorsable("fl")
        async with Clients(self.network) as clients:
            yield FabricTeam(clients)


@pytest.fixture(params=["memory", "fabric"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory")
    return Backend("fabric", request.getfixturevalue("network"))
