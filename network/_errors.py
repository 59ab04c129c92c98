"""Errors of `fedfabric.network`.

NetworkError                  anything that stops a network command
├── TopologyError             the topology file is invalid (names the field)   [_topology]
├── BundleError               an organisation's bundle is malformed, holds a private key,
│                             was changed after export or is inconsistent      [_bundle]
├── FabricNotInstalledError   Fabric's binaries are missing (run scripts/install-fabric)
├── PortInUseError            a node's port is already bound (names node and port)
└── NotRunningError           the command needs a running network
"""

from __future__ import annotations


class NetworkError(Exception):
    """A network command failed; the message says which step and why."""


class FabricNotInstalledError(NetworkError):
    """Fabric's binaries or release configuration are not where they should be."""


class NotRunningError(NetworkError):
    """The network (or the node) is not running."""


class PortInUseError(NetworkError):
    """A port the topology gives to a node is already in use."""

    def __init__(self, node: str, purpose: str, port: int) -> None:
        super().__init__(
            f"port {port} ({purpose} of {node}) is already in use; stop what uses "
            "it or change the port in the topology file"
        )
        self.node, self.purpose, self.port = node, purpose, port
