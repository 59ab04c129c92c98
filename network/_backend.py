"""The interface every network backend implements, and the facts it reports."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fedfabric.network._topology import Topology

Progress = Callable[[str], None]
ServerSettings = Mapping[str, Mapping[str, Mapping[str, str]]]
"""Chaincode server settings: chaincode name → MSP id → setting → value."""


@dataclass(frozen=True)
class NodeStatus:
    """One node as seen by `Backend.status`: running or not, and its channel height."""

    name: str
    kind: str  # "orderer" | "peer" | "chaincode"
    running: bool
    height: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches an organisation's gateway peer."""

    address: str
    server_name: str
    tls_root_cert: Path


@dataclass(frozen=True)
class IdentityFiles:
    """An identity's MSP id, signing certificate and key, and TLS client pair."""

    msp_id: str
    cert: Path
    key: Path
    tls_cert: Path
    tls_key: Path
    msp_dir: Path


class Backend(Protocol):
    """What `fedfabric network` and the FL job need from a network.

    `state_dir` holds everything the backend generated (crypto material, ledgers, logs,
    connection profiles); `install` makes the backend's own programs available (the Fabric
    binaries, built on first use); `issue_identity` adds a client identity to an organisation
    (a simulated device, say) and returns it, or returns the existing one of that name.

    `deploy` may add chaincode server settings (`ServerSettings`: chaincode name → MSP id →
    ``--setting`` key/values) to the topology's, e.g. an organisation's private validator;
    servers whose settings change are restarted with them (and again after `up`).
    `private_dir` is a directory of one organisation's own (mode 0700), for files only its
    nodes and chaincode servers read.
    """

    topology: Topology

    @property
    def state_dir(self) -> Path: ...
    async def install(self, progress: Progress | None = None) -> None: ...
    async def up(self, progress: Progress | None = None) -> bool: ...
    async def down(self) -> None: ...
    async def status(self) -> Sequence[NodeStatus]: ...
    async def deploy(
        self,
        names: Sequence[str] | None = None,
        progress: Progress | None = None,
        *,
        settings: ServerSettings | None = None,
    ) -> Sequence[str]: ...  # the chaincodes still waiting for other orgs' approvals
    def private_dir(self, org: str) -> Path: ...
    def endpoint(self, org: str) -> Endpoint: ...
    def identity(self, org: str, user: str = "User1") -> IdentityFiles: ...
    def issue_identity(self, org: str, name: str) -> IdentityFiles: ...
    def profile(self, org: str) -> Path: ...
    def log_file(self, node: str) -> Path: ...
