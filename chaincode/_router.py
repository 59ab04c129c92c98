"""Routes an invocation (``Fn`` or ``contract:Fn``) to a contract method and builds the response."""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Sequence
from typing import Any

from fedfabric.chaincode import _convert
from fedfabric.chaincode._contract import Context, Contract
from fedfabric.chaincode._errors import ChaincodeError
from fedfabric.chaincode._stub import Stub

log = logging.getLogger("fedfabric.chaincode")

SYSTEM_CONTRACT = "org.hyperledger.fabric"
OK = 200


@dataclasses.dataclass(frozen=True)
class Response:
    """The chaincode's answer: ``peer.Response{status, message, payload}``."""

    status: int
    message: str = ""
    payload: bytes = b""


class Router:
    """Dispatches invocations over one or more contracts; the first is the default.

    Construction checks every transaction signature and raises ``TypeError``/``ValueError``.
    """

    def __init__(self, contracts: Sequence[Contract]) -> None:
        if not contracts:
            raise ValueError("at least one contract is needed")
        self.contracts: dict[str, Contract] = {}
        for contract in contracts:
            if not isinstance(contract, Contract):
                raise TypeError(f"{contract!r} is not a fedfabric.chaincode.Contract")
            if contract.name in self.contracts or contract.name == SYSTEM_CONTRACT:
                raise ValueError(f'duplicate contract name "{contract.name}"')
            contract.transactions()  # fail now, not at the first transaction
            self.contracts[contract.name] = contract
        self.default = contracts[0]

    async def execute(self, stub: Stub) -> Response:
        """Run the transaction named by ``stub.function``; never raises except on cancel."""
        if stub.is_init and not stub.function:
            return Response(OK)  # an empty init (lifecycle --init-required) just succeeds
        try:
            payload = await self._dispatch(stub)
        except ChaincodeError as exc:
            return Response(exc.status, exc.message, exc.payload)
        except Exception as exc:
            log.exception("transaction %s %s failed", stub.tx_id[:8], stub.function)
            return Response(500, str(exc) or type(exc).__name__)
        return Response(OK, "", payload)

    def metadata(self) -> dict[str, Any]:
        """The contract metadata returned by ``org.hyperledger.fabric:GetMetadata``."""
        return {
            "contracts": {
                name: {
                    "name": name,
                    "transactions": [t.metadata() for t in c.transactions().values()],
                }
                for name, c in sorted(self.contracts.items())
            },
            "default_contract": self.default.name,
        }

    async def _dispatch(self, stub: Stub) -> bytes:
        contract_name, _, fn = stub.function.rpartition(":")
        if contract_name == SYSTEM_CONTRACT and fn == "GetMetadata":
            return _convert.canonical_json(self.metadata())
        contract = self.contracts.get(contract_name) if contract_name else self.default
        if contract is None:
            raise ChaincodeError(f'contract "{contract_name}" not found')
        ctx = Context(stub)
        tx = contract.transactions().get(fn)
        if tx is None:
            return _convert.to_bytes(await _maybe_await(contract.unknown_transaction(ctx)))
        if len(stub.args) != len(tx.params):
            raise ChaincodeError(f"{fn} expects {len(tx.params)} argument(s), got {len(stub.args)}")
        args = [
            _convert.from_bytes(raw, hint, name)
            for raw, (name, hint) in zip(stub.args, tx.params, strict=True)
        ]
        await contract.before_transaction(ctx)
        result = await _maybe_await(tx.method(contract, ctx, *args))
        await contract.after_transaction(ctx, result)
        return _convert.to_bytes(result)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value
