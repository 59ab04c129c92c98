"""Client identities and connections for a run: org workers, and fleets of simulated devices.

`Clients` owns one gRPC channel per organisation (mutual TLS as the org's ``User1``) and
builds a `Gateway` per identity on it, so a thousand identities cost a thousand signers,
not a thousand connections. It makes:

- `Clients.admin_ledger(org)`: the org admin's `FLLedger` (coordinators drive rounds);
- `Clients.federation_workers(fed)`: one `Worker` per worker of the federation, worker
  ``j`` of org ``k`` signing as ``User<j>`` of the k-th organisation of the topology
  (an extra identity ``worker<j>`` is issued when the org has fewer users);
- `Clients.device_workers(fed, devices_per_org)`: simulated IoT devices, each a `Worker`
  with its own identity (``device<n>``, issued by the org's CA on first use and kept in
  the network's state directory) that signs its updates; the org's ``User1`` submits them
  in device batches (``SubmitBatch``, see `fedfabric.fl_worker.devices`). The org's
  training data is split across its devices; each device trains one tiny local step set,
  so per-device CPU work stays small.

Example::

    async with Clients(network) as clients:
        admin = await clients.admin_ledger("transport")
        workers = await clients.device_workers(fed, devices_per_org=100)
        admins = [await clients.admin_ledger(org) for org in clients.org_names(3)]
        coordinator = Coordinator(fed, admin, task="city", allowed_orgs=clients.msp_ids(3),
                                  registrars=admins, max_workers_per_org=100)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
from fabric_protos.msp import identities_pb2

from fedfabric.fl_worker.devices import BatchLimits, DeviceLedger, OrgBatcher
from fedfabric.fl_worker.endorsers import Endorsers
from fedfabric.fl_worker.federation import Federation, device_trainers, federation_workers
from fedfabric.fl_worker.ledger import CHAINCODE, FLLedger
from fedfabric.fl_worker.worker import Retry, Worker, WorkerResources
from fedfabric.gateway import (
    MAX_MESSAGE_SIZE,
    Gateway,
    Timeouts,
    connect,
    load_identity,
    load_private_key,
    profile_channel,
)
from fedfabric.gateway.signers import new_private_key_signer
from fedfabric.network import Backend, IdentityFiles

_SIZE = re.compile(r"\s*(\d+)\s*(KB|MB)\s*")  # as the topology writes sizes (Fabric's units)
_UNITS = {"KB": 1024, "MB": 1024 * 1024}


class Clients:
    """Connections to every org's gateway peer for many identities; an async context manager.

    `network` is a running network `Backend` (its topology, identities and connection
    profiles). `timeouts` apply to every gateway built here.
    """

    def __init__(self, network: Backend, *, timeouts: Timeouts | None = None) -> None:
        self.network = network
        self.topology = network.topology
        self.channel_name: str = network.topology.channel
        self.timeouts = timeouts
        policy = network.topology.chaincode(CHAINCODE).endorsement_policy
        self.endorsers = Endorsers(policy, [o.msp_id for o in network.topology.organizations])
        """Whom every ledger built here asks to endorse; it follows the committed policy."""
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tls_cert: dict[str, bytes] = {}

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close every gRPC channel (and so every gateway built on them)."""
        channels, self._channels = self._channels, {}
        await asyncio.gather(*(c.close() for c in channels.values()))

    def org_names(self, count: int) -> list[str]:
        """The first `count` organisations of the topology (ConfigError-like ValueError)."""
        orgs = self.topology.organizations
        if count > len(orgs):
            raise ValueError(f"the run needs {count} organisations; the topology has {len(orgs)}")
        return [o.name for o in orgs[:count]]

    def msp_ids(self, count: int) -> list[str]:
        """MSP ids of the first `count` organisations (a task's ``allowed_orgs``)."""
        return [self.topology.org(name).msp_id for name in self.org_names(count)]

    def gateway(self, org: str, identity: IdentityFiles) -> Gateway:
        """A gateway for `identity` on the org's shared channel (closed by `close`)."""
        channel = self._channel(org)
        return connect(
            identity=load_identity(identity.msp_id, identity.cert),
            signer=new_private_key_signer(load_private_key(identity.key)),
            channel=channel,
            client_cert=self._tls_cert[org],
            timeouts=self.timeouts,
        )

    def ledger(self, org: str, identity: IdentityFiles, *, sync: bool = True) -> FLLedger:
        """The `FLLedger` of `identity` (an `IdentityFiles` of `org`). With `sync` each of
        its commits waits (10 s at most) until every organisation's peer has the block (see
        `FLLedger`): what admins need, whose transactions others act on next. Workers need
        not: the coordinator waits once (`FLLedger.reach`) before it aggregates."""
        every_org = [o.msp_id for o in self.topology.organizations]
        return FLLedger.for_gateway(
            self.gateway(org, identity),
            self.channel_name,
            sync_orgs=every_org if sync else (),
            endorsers=self.endorsers,
        )

    async def admin_ledger(self, org: str) -> FLLedger:
        """The org admin's ledger: the identity a `Coordinator` needs."""
        return self.ledger(org, self.network.identity(org, "Admin"))

    async def identities(self, org: str, names: Sequence[str]) -> list[IdentityFiles]:
        """The identities `names` of `org`, issuing the missing ones (off the event loop)."""
        return await asyncio.to_thread(self._identities, org, list(names))

    def _identities(self, org: str, names: list[str]) -> list[IdentityFiles]:
        return [self.network.issue_identity(org, name) for name in names]

    async def federation_workers(
        self,
        fed: Federation,
        *,
        resources: WorkerResources | None = None,
        retry: Retry | None = None,
    ) -> list[Worker]:
        """One `Worker` per worker of `fed`, org by org (see the module doc)."""
        return federation_workers(
            fed,
            [
                self.ledger(org, identity, sync=False)
                for org, identity in await self.worker_identities(fed.config)
            ],
            resources=resources,
            retry=retry,
        )

    async def org_workers(
        self,
        fed: Federation,
        org: str,
        *,
        resources: WorkerResources | None = None,
        retry: Retry | None = None,
    ) -> list[Worker]:
        """Organisation `org`'s workers of `fed` (its part of the federation, with its own
        identities): what a host that runs only that organisation runs."""
        k = self.org_names(fed.config.orgs).index(org)
        per_org = fed.config.workers_per_org
        ledgers = [
            self.ledger(org, identity, sync=False)
            for identity in await self._org_identities(org, per_org)
        ]
        which = range(k * per_org, (k + 1) * per_org)
        return federation_workers(fed, ledgers, which=which, resources=resources, retry=retry)

    async def worker_identities(self, config: Any) -> list[tuple[str, IdentityFiles]]:
        """(org, identity) of every worker of a run with `config`, org by org: worker ``j``
        of org ``k`` is ``User<j>`` of the k-th organisation (``worker<j>`` when it has
        fewer users; issued on first use)."""
        found = []
        for org in self.org_names(config.orgs):
            identities = await self._org_identities(org, config.workers_per_org)
            found += [(org, identity) for identity in identities]
        return found

    async def _org_identities(self, org: str, count: int) -> list[IdentityFiles]:
        users = self.topology.org(org).users
        names = [f"User{j}" if j <= users else f"worker{j}" for j in range(1, count + 1)]
        return await self.identities(org, names)

    async def creators(self, config: Any) -> tuple[bytes, list[bytes]]:
        """``SerializedIdentity`` bytes (what the contract sees) of the first org's admin and
        of every worker of a run with `config`: the in-memory run signs as them, so its
        ledger orders updates exactly as this network's does."""

        def creator(identity: IdentityFiles) -> bytes:
            return identities_pb2.SerializedIdentity(
                mspid=identity.msp_id, id_bytes=identity.cert.read_bytes()
            ).SerializeToString()

        admin = self.network.identity(self.org_names(1)[0], "Admin")
        return creator(admin), [creator(i) for _, i in await self.worker_identities(config)]

    async def device_workers(
        self,
        fed: Federation,
        devices_per_org: int,
        *,
        resources: WorkerResources | None = None,
        retry: Retry | None = None,
        limits: BatchLimits | None = None,
        say: Callable[[str], None] | None = None,
    ) -> list[Worker]:
        """`devices_per_org` simulated devices per org of `fed`, each with its own identity
        (``device<n>``, issued by its org's CA) that signs its updates; each org's
        ``User1`` submits them in device batches (`fedfabric.fl_worker.devices`) within
        `limits` (default: `message_limit`). `say` reports each batch. A device waiting in
        its batch holds one of `resources`' submission slots: give it a
        ``submit_concurrency`` of at least the fleet, or batches fill only that far. Raises
        ValueError as `device_trainers` does."""
        resources = resources if resources is not None else WorkerResources()
        limits = limits or BatchLimits.for_message_limit(self.message_limit())
        trainers = device_trainers(fed, devices_per_org)
        workers = []
        for k, org in enumerate(self.org_names(fed.config.orgs)):
            gateway = self.ledger(org, self.network.identity(org, "User1"), sync=False)
            batcher = OrgBatcher(
                gateway, devices=devices_per_org, limits=limits, retry=retry, say=say
            )
            names = [f"device{k * devices_per_org + d + 1:05d}" for d in range(devices_per_org)]
            identities = await self.identities(org, names)
            keys = await asyncio.to_thread(
                lambda i=identities: [load_private_key(x.key) for x in i]
            )
            for d, identity in enumerate(identities):
                ledger = DeviceLedger(
                    batcher, identity.cert.read_bytes(), new_private_key_signer(keys[d])
                )
                trainer = trainers[k * devices_per_org + d]
                workers.append(Worker(names[d], ledger, trainer, resources=resources, retry=retry))
        return workers

    def message_limit(self) -> int:
        """The smallest message limit on a transaction's way, in bytes: the orderer's
        ``absolute_max_bytes`` (topology) or the gateway's gRPC limit."""
        size = self.topology.consensus.absolute_max_bytes
        found = _SIZE.fullmatch(size)
        if found is None:
            raise ValueError(f"absolute_max_bytes {size!r} is not a size like '99 MB'")
        return min(int(found[1]) * _UNITS[found[2]], MAX_MESSAGE_SIZE)

    def _channel(self, org: str) -> grpc.aio.Channel:
        if org not in self._channels:
            channel, cert = profile_channel(self.network.profile(org), "User1")
            self._channels[org], self._tls_cert[org] = channel, cert or b""
        return self._channels[org]


__all__ = ["Clients"]
