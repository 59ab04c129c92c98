"""The one error type of the chaincode API.

ChaincodeError  raised by a contract to refuse a transaction (becomes the response status and
                message), and by the stub when the peer answers a request with ERROR or an
                argument breaks a ledger rule (empty key, bad composite key part, ...)
"""

from __future__ import annotations


class ChaincodeError(Exception):
    """A transaction failure with the status, message and payload the client will see.

    The message travels to the client unchanged. ``status`` must be an error status (400-599);
    the shim and the endorsing peer treat 400-499 and 500-599 as Fabric does (only < 400 is
    endorsed).

    Example::

        raise ChaincodeError(f"asset {key} does not exist", status=404)
    """

    def __init__(self, message: str, status: int = 500, payload: bytes = b"") -> None:
        if not 400 <= status <= 599:
            raise ValueError(f"ChaincodeError status must be 400-599, got {status}")
        super().__init__(message)
        self.message = message
        self.status = status
        self.payload = payload
