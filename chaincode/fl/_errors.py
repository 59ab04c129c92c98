"""The error tree of `fedfabric.chaincode.fl`.

```
FLError                   anything this package refuses
 ├── UpdateError          an encoded update or model fails a named check (`.check`)
 ├── AggregationError     an aggregation rule cannot run (unknown rule, bad parameters,
 │                        too few updates, values outside the fixed-point range)
 └── TaskError            a task specification is invalid (`.field` names the field)
```

The contract turns each of these into a `ChaincodeError` in one place
(`_contract._refusal`), so a client sees the check's name at the start of the message.
"""

from __future__ import annotations


class FLError(Exception):
    """Base class of every error raised by `fedfabric.chaincode.fl`."""


class UpdateError(FLError):
    """An encoded update or model failed the check named by `check`.

    `check` is one of: ``size``, ``format``, ``encoding-version``, ``layout``,
    ``tensor-names``, ``shapes``, ``dtype``, ``non-finite``, ``digest``, ``norm``,
    ``quantization``, ``compression``.
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.detail = message


class AggregationError(FLError):
    """An aggregation rule could not be built or could not run."""


class TaskError(FLError):
    """A task specification is invalid; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"task field '{field}': {message}")
        self.field = field
        self.detail = message
