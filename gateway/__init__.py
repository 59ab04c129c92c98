"""fedfabric.gateway: an asyncio client for Hyperledger Fabric's Gateway service.

Gateway → Network (channel) → Contract → Proposal → Transaction → Commit, as in
hyperledger/fabric-gateway; ``Contract.evaluate`` and ``Contract.submit`` chain the steps.
Errors are drawn in ``fedfabric.gateway._errors`` (all derive from ``FabricError``).
Needs only the base install (no torch, scikit-learn or matplotlib); see docs/gateway.md.

Example::

    from fedfabric.gateway import connect, load_msp

    identity, signer = load_msp("Org1MSP", msp_dir)
    async with connect(identity=identity, signer=signer, endpoint="127.0.0.1:7051",
                       tls_root_cert=tls_ca_pem) as gateway:
        contract = gateway.get_network("mychannel").get_contract("fl")
        await contract.submit("SubmitUpdate", [task_id, "1", update_bytes, "600"])
"""

from fedfabric.gateway import hash, signers
from fedfabric.gateway._checkpointers import (
    Checkpoint,
    Checkpointer,
    FileCheckpointer,
    InMemoryCheckpointer,
)
from fedfabric.gateway._contract import Contract, Network
from fedfabric.gateway._errors import (
    CommitError,
    CommitStatusError,
    DeliverError,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    FabricError,
    GatewayClosedError,
    GatewayError,
    SubmitError,
    TransactionError,
)
from fedfabric.gateway._events import (
    BlockAndPrivateDataEventsRequest,
    BlockEventsRequest,
    ChaincodeEvent,
    ChaincodeEventsRequest,
    EventStream,
    FilteredBlockEventsRequest,
)
from fedfabric.gateway._gateway import MAX_MESSAGE_SIZE, Gateway, connect, open_channel
from fedfabric.gateway._identity import (
    Identity,
    X509Identity,
    load_identity,
    load_msp,
    load_private_key,
)
from fedfabric.gateway._options import CallOptions, Timeouts
from fedfabric.gateway._profile import connect_org, connect_profile, profile_channel
from fedfabric.gateway._proposal import Proposal
from fedfabric.gateway._reconnect import Reconnect
from fedfabric.gateway._transaction import Commit, Status, SubmittedTransaction, Transaction

__all__ = [
    "BlockAndPrivateDataEventsRequest",
    "BlockEventsRequest",
    "CallOptions",
    "ChaincodeEvent",
    "ChaincodeEventsRequest",
    "Checkpoint",
    "Checkpointer",
    "Commit",
    "CommitError",
    "CommitStatusError",
    "Contract",
    "DeliverError",
    "EndorseError",
    "ErrorDetail",
    "EvaluateError",
    "EventStream",
    "FabricError",
    "FileCheckpointer",
    "FilteredBlockEventsRequest",
    "Gateway",
    "GatewayClosedError",
    "GatewayError",
    "Identity",
    "InMemoryCheckpointer",
    "MAX_MESSAGE_SIZE",
    "Network",
    "Proposal",
    "Reconnect",
    "Status",
    "SubmitError",
    "SubmittedTransaction",
    "Timeouts",
    "Transaction",
    "TransactionError",
    "X509Identity",
    "connect",
    "connect_org",
    "connect_profile",
    "hash",
    "load_identity",
    "load_msp",
    "load_private_key",
    "open_channel",
    "profile_channel",
    "signers",
]
