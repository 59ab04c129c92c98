"""The FL contract as FL code sees it: typed async calls over a `fedfabric.gateway` Contract.

Every call goes through Fabric's Gateway as the identity the contract was obtained with:
queries are evaluated on one peer, transactions are endorsed by the policy's organisations,
ordered and committed (``submit`` returns only once the transaction is VALID).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fedfabric.gateway import CommitError, Contract, EndorseError, GatewayError, Network

CHAINCODE = "fl"


@dataclass(frozen=True)
class Refusal:
    """An update the endorsing organisations did not accept, and what they said."""

    check: str
    message: str
    orgs: tuple[str, ...]


def refusal(exc: GatewayError | CommitError) -> Refusal:
    """What a failed ``SubmitUpdate`` means: the refusing orgs and the contract's check name."""
    if isinstance(exc, CommitError):
        return Refusal(exc.code_name, str(exc), ())
    messages = [d.message for d in exc.details] or [str(exc)]
    orgs = tuple(sorted({d.msp_id for d in exc.details if d.msp_id}))
    # The contract's refusals read "<check>: <reason>" after the gateway's own prefix.
    text = messages[0].split("chaincode response 500, ", 1)[-1]
    check = text.split(":", 1)[0].strip() if ":" in text else "error"
    return Refusal(check, "; ".join(messages), orgs)


class FLLedger:
    """Calls of the FL contract for one identity (a worker's, or an org admin's)."""

    def __init__(self, network: Network, chaincode: str = CHAINCODE) -> None:
        self.network = network
        self.contract: Contract = network.get_contract(chaincode)
        self.chaincode = chaincode

    async def create_task(self, spec: dict[str, Any], initial_model: bytes) -> dict[str, Any]:
        return await self._submit("CreateTask", json.dumps(spec, sort_keys=True), initial_model)

    async def open_round(self, task: str, round_no: int) -> dict[str, Any]:
        return await self._submit("OpenRound", task, str(round_no))

    async def close_round(self, task: str, round_no: int) -> dict[str, Any]:
        return await self._submit("CloseRound", task, str(round_no))

    async def submit_update(self, task: str, round_no: int, update: bytes,
                            num_samples: int) -> dict[str, Any]:
        """Raises `EndorseError` (refused at endorsement) or `CommitError` (invalid at commit)."""
        return await self._submit("SubmitUpdate", task, str(round_no), update, str(num_samples))

    async def commit_aggregate(self, task: str, round_no: int) -> dict[str, Any]:
        return await self._submit("CommitAggregate", task, str(round_no))

    async def global_model(self, task: str, round_no: int) -> bytes:
        return await self.contract.evaluate("GetGlobalModel", [task, str(round_no)])

    async def round_updates(self, task: str, round_no: int) -> dict[str, Any]:
        return await self._evaluate("GetRoundUpdates", task, str(round_no))

    async def contributions(self, task: str) -> dict[str, Any]:
        return await self._evaluate("GetContributions", task)

    async def audit(self, task: str) -> dict[str, Any]:
        return await self._evaluate("GetAudit", task)

    async def update(self, task: str, round_no: int, worker: str) -> bytes:
        return await self.contract.evaluate("GetUpdate", [task, str(round_no), worker])

    async def task_exists(self, task: str) -> bool:
        try:
            await self.audit(task)
        except GatewayError as exc:
            if "not-found" in str(exc):
                return False
            raise
        return True

    def events(self, *, start_block: int | None = None) -> AsyncIterator[Any]:
        """The contract's chaincode events (committed transactions only)."""
        return self.network.chaincode_events(self.chaincode, start_block=start_block)

    async def _submit(self, name: str, *args: str | bytes) -> dict[str, Any]:
        raw = await self.contract.submit(name, list(args))
        return json.loads(raw) if raw else {}

    async def _evaluate(self, name: str, *args: str) -> Any:
        return json.loads(await self.contract.evaluate(name, list(args)))


__all__ = ["CHAINCODE", "EndorseError", "FLLedger", "Refusal", "refusal"]
