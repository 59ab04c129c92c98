"""When and how soon a broken event stream is opened again (``Reconnect``)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from fedfabric.gateway._errors import DeliverError, GatewayClosedError, GatewayError

_RETRIED_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
)
_SERVICE_UNAVAILABLE = 503  # common.Status: a Deliver service that is shutting down


@dataclass(frozen=True, kw_only=True)
class Reconnect:
    """Reopen an event stream that broke (its peer restarted, the connection dropped).

    The stream resumes right after the last event it delivered, which is where a checkpointer
    stands that the consumer moved after each event: every event is delivered exactly once.
    Between tries it waits an exponentially growing delay, ``initial`` seconds times
    ``multiplier`` per failure in a row, at most ``maximum``, of which a random half is
    dropped (jitter, so that many clients do not come back in step). After ``attempts``
    failures in a row (``None``: never) the last error is raised. Errors that would not heal
    (a bad request, a refused identity, a closed gateway) are raised at once.
    """

    initial: float = 0.1
    maximum: float = 10.0
    multiplier: float = 2.0
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError("Reconnect needs 0 < initial <= maximum and multiplier >= 1")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("Reconnect attempts must be at least 1 (or None)")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the next try, after ``failures`` failures in a row."""
        ceiling = min(self.maximum, self.initial * self.multiplier ** min(failures, 64))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def retries(self, error: GatewayError, failures: int) -> bool:
        """Whether to try again after ``error``, the ``failures``-th failure in a row."""
        if isinstance(error, GatewayClosedError):
            return False
        if self.attempts is not None and failures >= self.attempts:
            return False
        if isinstance(error, DeliverError):
            return error.status == _SERVICE_UNAVAILABLE
        return error.code in _RETRIED_CODES
