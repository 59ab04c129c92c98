"""fedfabric.network: one consortium topology file → a running Fabric network.

>>> topology = load_topology()                   # network/topology.yaml
>>> net = open_network(topology, state_dir)      # Fabric's own binaries
>>> await net.up(); await net.deploy(["fl"])

An organisation's public bundle (`export_bundle`, `read_bundle`, `write_msp`) is what it
gives the others of a consortium: certificates and endpoints, never a private key.
"""

from fedfabric.network._backend import Backend, Endpoint, IdentityFiles, NodeStatus
from fedfabric.network._binaries import (
    PINNED_FABRIC,
    FabricRelease,
    default_fabric_home,
    fabric_release,
    install_fabric,
)
from fedfabric.network._bundle import (
    BundleError,
    BundleNode,
    OrgBundle,
    export_bundle,
    read_bundle,
    write_bundle,
    write_msp,
)
from fedfabric.network._crypto import NodeOUs
from fedfabric.network._errors import (
    FabricNotInstalledError,
    NetworkError,
    NotRunningError,
    PortInUseError,
)
from fedfabric.network._layout import default_state_root
from fedfabric.network._policy import (
    PolicyError,
    Rule,
    endorsing_sets,
    from_application_policy,
    majority_policy,
    parse_policy,
    principals,
)
from fedfabric.network._topology import (
    DEFAULT_TOPOLOGY,
    Chaincode,
    Organization,
    Peer,
    Topology,
    TopologyError,
    load_topology,
    parse_topology,
)
from fedfabric.network.fabric import FabricNetwork

__all__ = [
    "DEFAULT_TOPOLOGY",
    "PINNED_FABRIC",
    "Backend",
    "BundleError",
    "BundleNode",
    "Chaincode",
    "Endpoint",
    "FabricNetwork",
    "FabricNotInstalledError",
    "FabricRelease",
    "IdentityFiles",
    "NetworkError",
    "NodeOUs",
    "NodeStatus",
    "NotRunningError",
    "OrgBundle",
    "Organization",
    "Peer",
    "PolicyError",
    "PortInUseError",
    "Rule",
    "Topology",
    "TopologyError",
    "default_fabric_home",
    "default_state_root",
    "endorsing_sets",
    "export_bundle",
    "fabric_release",
    "from_application_policy",
    "install_fabric",
    "load_topology",
    "majority_policy",
    "parse_policy",
    "parse_topology",
    "principals",
    "read_bundle",
    "write_bundle",
    "write_msp",
]
