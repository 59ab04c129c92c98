"""Contracts (chaincode, optionally one named contract in it) and networks (channels)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fabric_protos.common import ledger_pb2

from fedfabric.gateway._checkpointers import Checkpoint
from fedfabric.gateway._client import BlockEventsKind
from fedfabric.gateway._context import Context, Timeouts
from fedfabric.gateway._errors import CommitError, GatewayError
from fedfabric.gateway._events import (
    BlockEventsRequest,
    ChaincodeEvent,
    ChaincodeEventsRequest,
    EventStream,
)
from fedfabric.gateway._proposal import Argument, Proposal, build_proposal


class Contract:
    """A smart contract: a chaincode on a channel, or one named contract inside it.

    Example::

        contract = gateway.get_network("mychannel").get_contract("fl")
        await contract.submit("SubmitUpdate", [task_id, round_no, update, num_samples])
        model = await contract.evaluate("GetGlobalModel", [task_id, round_no])
    """

    def __init__(
        self, context: Context, channel_id: str, chaincode_name: str, contract_name: str | None
    ) -> None:
        self._context = context
        self._channel_id = channel_id
        self.chaincode_name = chaincode_name
        self.contract_name = contract_name

    def new_proposal(
        self,
        name: str,
        args: Sequence[Argument] = (),
        *,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] | None = None,
    ) -> Proposal:
        """Build a proposal to run transaction function ``name`` with ``args``.

        ``transient`` data reaches the chaincode but is not recorded in the transaction;
        ``endorsing_orgs`` restricts which organisations (MSP ids) are asked to endorse.
        """
        return build_proposal(
            self._context,
            channel_id=self._channel_id,
            chaincode=self.chaincode_name,
            transaction_name=f"{self.contract_name}:{name}" if self.contract_name else name,
            args=args,
            transient=transient,
            endorsing_orgs=endorsing_orgs,
        )

    async def evaluate(
        self,
        name: str,
        args: Sequence[Argument] = (),
        *,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Run a query on a peer (nothing is ordered or committed) and return its result.

        Raises ``EvaluateError``.
        """
        proposal = self.new_proposal(name, args, transient=transient, endorsing_orgs=endorsing_orgs)
        return await proposal.evaluate(timeout=timeout)

    async def submit(
        self,
        name: str,
        args: Sequence[Argument] = (),
        *,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] | None = None,
        timeouts: Timeouts | None = None,
        sync_orgs: Sequence[str] = (),
        sync_timeout: float = 10.0,
        steps: dict[str, float] | None = None,
    ) -> bytes:
        """Endorse, sign, submit and wait for the commit; return the chaincode's result.

        With ``sync_orgs`` (MSP ids), also wait, up to ``sync_timeout`` seconds, until a peer
        of each of them has the transaction's block, so a next transaction they endorse reads
        what this one wrote (see `Network.wait_for_height`). The transaction is committed
        either way: an organisation still behind then (its peer down, or slow) delays the
        caller by at most ``sync_timeout`` and is not an error; the gateway routes its next
        endorsements around a peer that refuses for lack of the block.

        ``steps``, when given, receives where the time went, in seconds: ``endorse`` (the
        Endorse call: the endorsing peers execute the chaincode), ``order`` (from Submit
        until the gateway peer reports the commit: ordering, block delivery, validation and
        commit), ``sync`` (the wait for ``sync_orgs``), and ``block`` (the block number).

        Raises ``EndorseError``, ``SubmitError`` or ``CommitStatusError`` for the step that
        failed, and ``CommitError`` if the transaction was committed as invalid.
        """
        limits = timeouts or self._context.timeouts
        clock = _Steps(steps)
        proposal = self.new_proposal(name, args, transient=transient, endorsing_orgs=endorsing_orgs)
        transaction = await proposal.endorse(timeout=limits.endorse)
        clock.lap("endorse")
        commit = await transaction.submit(timeout=limits.submit)
        status = await commit.status(timeout=limits.commit_status)
        clock.lap("order")
        if steps is not None:
            steps["block"] = status.block_number
        if not status.successful:
            raise CommitError(status.transaction_id, status.code)
        if sync_orgs:
            height = status.block_number + 1
            await _behind(self._context, self._channel_id, height, sync_orgs, sync_timeout)
            clock.lap("sync")
        return transaction.result


class Network:
    """A channel seen through the gateway: its contracts and its events."""

    def __init__(self, context: Context, name: str) -> None:
        self._context = context
        self.name = name

    def get_contract(self, chaincode_name: str, contract_name: str | None = None) -> Contract:
        """The contract ``contract_name`` (or the default one) of chaincode ``chaincode_name``."""
        return Contract(self._context, self.name, chaincode_name, contract_name)

    async def height(self, organization: str | None = None) -> int:
        """The channel's block height (blocks committed) on a peer of ``organization`` (an
        MSP id), or on the gateway's own peer when None: ``qscc GetChainInfo``, evaluated
        by that organisation's peer. Raises ``EvaluateError``."""
        return await _height(self._context, self.name, organization)

    async def wait_for_height(
        self, height: int, organizations: Sequence[str], *, timeout: float = 60.0
    ) -> None:
        """Wait until a peer of each of ``organizations`` has at least ``height`` blocks.

        A transaction committed in block ``b`` (``Status.block_number``) is on a peer once its
        height exceeds ``b``; other organisations' peers get the block a moment after the
        gateway's. Wait for this before asking them to endorse anything that reads what it
        wrote (``Contract.submit`` does it with ``sync_orgs``). A peer that cannot be asked
        counts as behind. Raises ``TimeoutError`` naming the organisations still behind
        after ``timeout`` seconds, with each one's last height or error.
        """
        behind = await _behind(self._context, self.name, height, organizations, timeout)
        if behind:
            raise TimeoutError(
                f"peers of {', '.join(behind)} did not reach height {height} of channel "
                f"{self.name!r} within {timeout:g}s ({'; '.join(behind.values())})"
            )

    def new_chaincode_events_request(
        self,
        chaincode_name: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> ChaincodeEventsRequest:
        """Build a chaincode events request, for example to sign it offline."""
        return ChaincodeEventsRequest.build(
            self._context,
            self.name,
            chaincode_name,
            start_block=start_block,
            checkpoint=checkpoint,
        )

    def chaincode_events(
        self,
        chaincode_name: str,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> EventStream[ChaincodeEvent]:
        """Events of committed transactions of ``chaincode_name``, in commit order.

        Starts after the ``checkpoint`` position if it is set, else at ``start_block``, else
        at the next block committed.
        """
        request = self.new_chaincode_events_request(
            chaincode_name, start_block=start_block, checkpoint=checkpoint
        )
        return request.events()

    def new_block_events_request(
        self,
        *,
        kind: BlockEventsKind = "block",
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
    ) -> BlockEventsRequest:
        """Build a Deliver request for blocks of ``kind``, for example to sign it offline."""
        return BlockEventsRequest.build(
            self._context, self.name, kind, start_block=start_block, checkpoint=checkpoint
        )

    def block_events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[Any]:
        """Committed blocks (``common.Block``) from the peer's Deliver service."""
        return self._block_stream("block", start_block, checkpoint)

    def filtered_block_events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[Any]:
        """Filtered blocks (``peer.FilteredBlock``: tx ids, validation codes, event names)."""
        return self._block_stream("filtered_block", start_block, checkpoint)

    def block_and_private_data_events(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> EventStream[Any]:
        """Blocks with the private data this client may see (``peer.BlockAndPrivateData``)."""
        return self._block_stream("block_and_private_data", start_block, checkpoint)

    def _block_stream(
        self, kind: BlockEventsKind, start_block: int | None, checkpoint: Checkpoint | None
    ) -> EventStream[Any]:
        request = self.new_block_events_request(
            kind=kind, start_block=start_block, checkpoint=checkpoint
        )
        return request.events()


class _Steps:
    """Seconds per step into a caller's dict (nothing when it gave none)."""

    def __init__(self, into: dict[str, float] | None) -> None:
        self._into = into
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        if self._into is not None:
            self._into[step] = now - self._last
        self._last = now


async def _height(context: Context, channel: str, organization: str | None) -> int:
    contract = Contract(context, channel, "qscc", None)
    orgs = [organization] if organization else None
    raw = await contract.evaluate("GetChainInfo", [channel], endorsing_orgs=orgs)
    return int(ledger_pb2.BlockchainInfo.FromString(raw).height)


async def _behind(
    context: Context, channel: str, height: int, organizations: Sequence[str], timeout: float
) -> dict[str, str]:
    """Poll the organisations' peers until each has `height` blocks or `timeout` passes;
    return those still behind, each with its last height or error."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    behind = dict.fromkeys(organizations, "not asked")

    async def reached(org: str) -> bool:
        try:
            ask = max(0.5, min(5.0, deadline - loop.time()))
            found = await asyncio.wait_for(_height(context, channel, org), ask)
        except (GatewayError, TimeoutError) as exc:  # down or unreachable: not there yet
            behind[org] = f"{org}: {exc or 'no answer'}"
            return False
        behind[org] = f"{org}: height {found}"
        return found >= height

    pause = 0.005  # peers are usually a block apart for milliseconds: ask again soon, then back off
    while behind:
        done = await asyncio.gather(*(reached(org) for org in list(behind)))
        for org, ok in zip(list(behind), done, strict=True):
            if ok:
                del behind[org]
        if not behind or loop.time() >= deadline:
            break
        await asyncio.sleep(pause)
        pause = min(2 * pause, 0.2)
    return behind
