"""The real Hyperledger Fabric backend: Fabric's own binaries as processes on 127.0.0.1."""

from fedfabric.network.fabric._network import FabricNetwork

__all__ = ["FabricNetwork"]
