"""The real Hyperledger Fabric backend: Fabric's own binaries as processes on this machine,
each node on its address from the topology (127.0.0.1 by default)."""

from fedfabric.network.fabric._network import FabricNetwork

__all__ = ["FabricNetwork"]
