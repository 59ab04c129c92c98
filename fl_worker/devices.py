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
  the network's state directory). The org's training data is split across its devices;
  each device trains one tiny local step set, so per-device CPU work stays small.

Example::

    async with Clients(network) as clients:
        admin = await clients.admin_ledger("transport")
        workers = await clients.device_workers(fed, devices_per_org=100)
        coordinator = Coordinator(fed, admin, task="city", allowed_orgs=clients.msp_ids(3))
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
import grpc.aio
import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker import task as ml
from fedfabric.fl_worker.attacks import RoundView, choose_malicious
from fedfabric.fl_worker.baseline import Federation
from fedfabric.fl_worker.ledger import FLLedger
from fedfabric.fl_worker.worker import LocalUpdate, Retry, Worker, WorkerResources, encode
from fedfabric.gateway import Gateway, Timeouts, connect, load_identity, load_private_key
from fedfabric.gateway.signers import new_private_key_signer
from fedfabric.network import IdentityFiles, NetworkError
from fedfabric.network._crypto import issue_identity

_MAX_MESSAGE = 100 * 1024 * 1024
# Random streams of device mode (the baseline uses 1-4, see `baseline`).
_STREAM_DEVICE_MALICIOUS, _STREAM_DEVICE_TRAIN, _STREAM_DEVICE_ATTACK = 11, 12, 13


class Clients:
    """Connections to every org's gateway peer for many identities; an async context manager.

    `network` is a running `FabricNetwork` (its topology, state directory and connection
    profiles). `timeouts` apply to every gateway built here.
    """

    def __init__(self, network: Any, *, timeouts: Timeouts | None = None) -> None:
        self.network = network
        self.topology = network.topology
        self.channel_name: str = network.topology.channel
        self.timeouts = timeouts
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tls_cert: dict[str, bytes] = {}

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
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

    def ledger(self, org: str, identity: IdentityFiles) -> FLLedger:
        """The `FLLedger` of `identity` (an `IdentityFiles` of `org`)."""
        return FLLedger.for_gateway(self.gateway(org, identity), self.channel_name)

    async def admin_ledger(self, org: str) -> FLLedger:
        """The org admin's ledger: the identity a `Coordinator` needs."""
        return self.ledger(org, self.network.identity(org, "Admin"))

    async def identities(self, org: str, names: Sequence[str]) -> list[IdentityFiles]:
        """The identities `names` of `org`, issuing the missing ones (off the event loop)."""
        return await asyncio.to_thread(self._identities, org, list(names))

    def _identities(self, org: str, names: list[str]) -> list[IdentityFiles]:
        found = []
        organization = self.topology.org(org)
        for name in names:
            try:
                found.append(self.network.identity(org, name))
            except NetworkError:
                issue_identity(self.network.layout.crypto_dir, organization, name)
                found.append(self.network.identity(org, name))
        return found

    async def federation_workers(self, fed: Federation, *, resources: WorkerResources | None = None,
                                 retry: Retry | None = None) -> list[Worker]:
        """One `Worker` per worker of `fed`, in the baseline's order (see the module doc)."""
        resources = resources if resources is not None else WorkerResources()
        per_org = fed.config.workers_per_org
        workers = []
        for k, org in enumerate(self.org_names(fed.config.orgs)):
            users = self.topology.org(org).users
            names = [f"User{j}" if j <= users else f"worker{j}" for j in range(1, per_org + 1)]
            for j, identity in enumerate(await self.identities(org, names)):
                workers.append(Worker.for_federation(fed, k * per_org + j,
                                                     self.ledger(org, identity),
                                                     resources=resources, retry=retry))
        return workers

    async def device_workers(self, fed: Federation, devices_per_org: int, *,
                             resources: WorkerResources | None = None,
                             retry: Retry | None = None) -> list[Worker]:
        """`devices_per_org` simulated devices per org of `fed`, each with its own identity.

        Raises ValueError when an org has fewer training samples than devices, or when the
        run's attack needs the honest updates of the round (ALIE), which devices never see.
        """
        resources = resources if resources is not None else WorkerResources()
        shards = device_shards(fed, devices_per_org)
        total = len(shards)
        malicious = choose_malicious(total, fed.config.malicious,
                                     ml.derive_seed(fed.config.seed, _STREAM_DEVICE_MALICIOUS))
        if fed.attack is not None and fed.attack.needs_honest and malicious:
            raise ValueError(f"attack {fed.attack.name!r} needs the honest updates of a round; "
                             "device mode does not share them")
        workers = []
        for k, org in enumerate(self.org_names(fed.config.orgs)):
            names = [f"device{k * devices_per_org + d + 1:05d}" for d in range(devices_per_org)]
            for d, identity in enumerate(await self.identities(org, names)):
                index = k * devices_per_org + d
                trainer = DeviceTrainer(fed, index, shards[index], malicious=index in malicious,
                                        total=total, num_malicious=len(malicious))
                workers.append(Worker(names[d], self.ledger(org, identity), trainer,
                                      resources=resources, retry=retry))
        return workers

    def _channel(self, org: str) -> grpc.aio.Channel:
        if org not in self._channels:
            profile_path = Path(self.network.profile(org))
            profile = json.loads(profile_path.read_text())
            user = self.network.identity(org, "User1")
            self._tls_cert[org] = user.tls_cert.read_bytes()
            credentials = grpc.ssl_channel_credentials(
                (profile_path.parent / profile["tls_root_cert_path"]).read_bytes(),
                user.tls_key.read_bytes(), self._tls_cert[org])
            options: list[tuple[str, Any]] = [
                ("grpc.max_send_message_length", _MAX_MESSAGE),
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ]
            if profile.get("server_name"):
                options.append(("grpc.ssl_target_name_override", profile["server_name"]))
            self._channels[org] = grpc.aio.secure_channel(profile["peer_endpoint"], credentials,
                                                          options=options)
        return self._channels[org]


def device_shards(fed: Federation, devices_per_org: int) -> list[ml.Dataset]:
    """Each org's training data split across its devices (a seeded split), org by org."""
    if devices_per_org < 1:
        raise ValueError(f"devices_per_org must be >= 1, got {devices_per_org}")
    shards = []
    for k, org in enumerate(fed.partition.orgs):
        x = np.concatenate([w.x for w in org.workers])
        y = np.concatenate([w.y for w in org.workers])
        if len(y) < devices_per_org:
            raise ValueError(f"org {k + 1} has {len(y)} training samples for {devices_per_org} "
                             "devices; every device needs one")
        data = ml.Dataset(org.workers[0].name, x, y, org.workers[0].num_classes)
        order = np.random.default_rng(ml.derive_seed(fed.config.seed, 10, k)).permutation(len(y))
        shards += [data.subset(np.sort(part)) for part in np.array_split(order, devices_per_org)]
    return shards


class DeviceTrainer:
    """A device's local training: the run's epochs over its few samples, seeded by
    (seed, round, device); a malicious device applies the run's attack on its own."""

    _local = threading.local()

    def __init__(self, fed: Federation, index: int, data: ml.Dataset, *, malicious: bool,
                 total: int, num_malicious: int) -> None:
        self.fed = fed
        self.index = index
        self.data = data
        self.malicious = malicious and fed.attack is not None
        self.layout = fed.layout
        self._view = RoundView(num_workers=total, num_malicious=num_malicious)

    def compute(self, base: Mapping[str, np.ndarray], base_digest: str,
                round_no: int) -> LocalUpdate:
        config, attack = self.fed.config, self.fed.attack
        model = self._model()
        fl.set_weights(model, base)
        data = self.data
        if self.malicious and attack is not None:
            rng = np.random.default_rng(
                ml.derive_seed(config.seed, _STREAM_DEVICE_ATTACK, 0, self.index))
            data = attack.poison_data(data, rng)
        fit = self.fed.strategy.fit_config(round_no)
        loss = ml.train(model, data, epochs=config.epochs, lr=config.lr,
                        batch_size=config.batch_size, proximal_mu=fit.proximal_mu,
                        seed=ml.derive_seed(config.seed, _STREAM_DEVICE_TRAIN, round_no,
                                            self.index))
        delta = ml.weight_delta(fl.get_weights(model), base)
        if self.malicious and attack is not None:
            rng = np.random.default_rng(
                ml.derive_seed(config.seed, _STREAM_DEVICE_ATTACK, round_no, self.index))
            delta = attack.poison_update(delta, self._view, rng)
        return encode(delta, self.layout, config.quantization, config.compression,
                      len(self.data), loss)

    def _model(self) -> Any:
        """One torch model per thread and spec, reused (building one per device is slow)."""
        cache = getattr(self._local, "models", None)
        if cache is None:
            cache = self._local.models = {}
        key = json.dumps(self.fed.model_spec, sort_keys=True)
        if key not in cache:
            cache[key] = fl.build_model(self.fed.model_spec)
        return cache[key]


__all__ = ["Clients", "DeviceTrainer", "device_shards"]
