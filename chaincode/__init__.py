"""fedfabric.chaincode: write Fabric chaincode in Python and serve it to peers.

Contract authors import ``Contract``, ``submit``, ``evaluate``, ``Context`` and
``ChaincodeError``; none of that imports gRPC. ``ChaincodeServer`` (loaded on first use) is the
chaincode-as-a-service runtime; ``python -m fedfabric.chaincode serve`` runs it.
``fedfabric.chaincode.testing`` runs contracts against an in-memory ledger.

Errors::

    ChaincodeError   a refused transaction or a failed ledger call (status, message, payload)
"""

from __future__ import annotations

from typing import Any

from fedfabric.chaincode._contract import Context, Contract, evaluate, submit
from fedfabric.chaincode._errors import ChaincodeError
from fedfabric.chaincode._identity import ClientIdentity, enrollment_id
from fedfabric.chaincode._stub import KeyModification, Stub

__all__ = [
    "ChaincodeError",
    "ChaincodeServer",
    "ClientIdentity",
    "Context",
    "Contract",
    "KeyModification",
    "ServerTLS",
    "Stub",
    "enrollment_id",
    "evaluate",
    "submit",
]

_RUNTIME = ("ChaincodeServer", "ServerTLS")


def __getattr__(name: str) -> Any:
    # The runtime imports gRPC; contract code should not pay for it (or depend on it).
    if name in _RUNTIME:
        from fedfabric.chaincode import _server

        return getattr(_server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
