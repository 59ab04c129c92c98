"""Options of a call: deadlines per step (``Timeouts``) and gRPC options (``CallOptions``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import grpc

Step = Literal["evaluate", "endorse", "submit", "commit_status"]


class _Unset:
    """The value of a ``Timeouts`` field that was not given: the gateway's own applies."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()
Timeout = float | None | _Unset
"""Seconds; ``None`` means no deadline; ``UNSET`` (the default) means "the gateway's"."""

_BUILT_IN = {"evaluate": 30.0, "endorse": 30.0, "submit": 30.0, "commit_status": 60.0}


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Deadlines in seconds for each Gateway call; ``None`` is "no deadline".

    A step left out keeps the value below it: per call (``submit(timeouts=...)``) the
    gateway's (``connect(timeouts=...)``), and for the gateway the built-in 30 s
    (60 s for ``commit_status``). So ``Timeouts(endorse=5)`` changes only the endorse step.
    """

    evaluate: Timeout = UNSET
    endorse: Timeout = UNSET
    submit: Timeout = UNSET
    commit_status: Timeout = UNSET

    def over(self, base: Timeouts | None) -> Timeouts:
        """These timeouts, with every step left out taken from ``base``."""
        if base is None:
            return self
        given = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not UNSET
        }
        return dataclasses.replace(base, **given)

    def seconds(self, step: Step) -> float | None:
        """The deadline of ``step`` (the built-in default if it was left out)."""
        value = getattr(self, step)
        return _BUILT_IN[step] if isinstance(value, _Unset) else value


@dataclass(frozen=True, kw_only=True)
class CallOptions:
    """Per-call gRPC options: extra ``metadata`` (key, value) pairs, ``wait_for_ready``
    (queue the call while the peer is unreachable instead of failing at once) and
    ``compression`` (``grpc.Compression``) of the request."""

    metadata: Sequence[tuple[str, str | bytes]] = ()
    wait_for_ready: bool | None = None
    compression: grpc.Compression | None = None
