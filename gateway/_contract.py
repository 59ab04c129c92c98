"""Contracts (chaincode, optionally one named contract in it) and networks (channels)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from fabric_protos.common import common_pb2
from fabric_protos.peer import events_pb2, transaction_pb2

from fedfabric.gateway import _ledger
from fedfabric.gateway._checkpointers import Checkpoint
from fedfabric.gateway._context import Context
from fedfabric.gateway._errors import CommitError, CommitStatusError, GatewayError
from fedfabric.gateway._events import (
    BlockAndPrivateDataEventsRequest,
    BlockEventsRequest,
    ChaincodeEvent,
    ChaincodeEventsRequest,
    EventStream,
    FilteredBlockEventsRequest,
)
from fedfabric.gateway._options import UNSET, CallOptions, Timeouts, _Unset
from fedfabric.gateway._proposal import Argument, Proposal, build_proposal
from fedfabric.gateway._reconnect import Reconnect
from fedfabric.gateway._transaction import SubmittedTransaction


class Contract:
    """A smart contract: a chaincode on a channel, or one named contract inside it.

    Arguments are a list of ``str`` (sent as UTF-8) or ``bytes``; a bare string is a
    ``TypeError``, never a list of its characters.

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
        Raises ``TypeError`` for arguments that are not a list of ``str`` / ``bytes``.
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
        timeout: float | None | _Unset = UNSET,
        call_options: CallOptions | None = None,
    ) -> bytes:
        """Run a query on a peer (nothing is ordered or committed) and return its result.

        ``timeout`` in seconds (``None``: no deadline) replaces the gateway's. Raises
        ``EvaluateError``.
        """
        proposal = self.new_proposal(name, args, transient=transient, endorsing_orgs=endorsing_orgs)
        return await proposal.evaluate(timeout=timeout, call_options=call_options)

    async def submit_async(
        self,
        name: str,
        args: Sequence[Argument] = (),
        *,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] | None = None,
        timeouts: Timeouts | None = None,
        call_options: CallOptions | None = None,
    ) -> SubmittedTransaction:
        """Endorse, sign and submit; return at once with the chaincode's ``result`` and the
        ``Commit`` to await (``await submitted.status()``), as Node's ``submitAsync``.

        Raises ``EndorseError`` or ``SubmitError`` for the step that failed.
        """
        limits = (timeouts or Timeouts()).over(self._context.timeouts)
        proposal = self.new_proposal(name, args, transient=transient, endorsing_orgs=endorsing_orgs)
        transaction = await proposal.endorse(timeout=limits.endorse, call_options=call_options)
        return await transaction.submit(timeout=limits.submit, call_options=call_options)

    async def submit(
        self,
        name: str,
        args: Sequence[Argument] = (),
        *,
        transient: Mapping[str, bytes] | None = None,
        endorsing_orgs: Sequence[str] | None = None,
        timeouts: Timeouts | None = None,
        call_options: CallOptions | None = None,
        sync_orgs: Sequence[str] = (),
        sync_timeout: float = 10.0,
        steps: dict[str, float] | None = None,
    ) -> bytes:
        """Endorse, sign, submit and wait for the commit; return the chaincode's result.

        ``timeouts`` overrides the gateway's per step: a step left out keeps the gateway's,
        ``None`` means no deadline. ``call_options`` apply to every call.

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
        failed, and ``CommitError`` if the transaction was committed as invalid; the last two
        keep the chaincode's result in ``result``, as Go's client returns it with the error.
        """
        limits = (timeouts or Timeouts()).over(self._context.timeouts)
        clock = _Steps(steps)
        proposal = self.new_proposal(name, args, transient=transient, endorsing_orgs=endorsing_orgs)
        transaction = await proposal.endorse(timeout=limits.endorse, call_options=call_options)
        clock.lap("endorse")
        commit = await transaction.submit(timeout=limits.submit, call_options=call_options)
        try:
            status = await commit.status(timeout=limits.commit_status, call_options=call_options)
        except CommitStatusError as err:
            err.result = transaction.result
            raise
        clock.lap("order")
        if steps is not None:
            steps["block"] = status.block_number
        if not status.successful:
            raise CommitError(status.transaction_id, status.code, result=transaction.result)
        if sync_orgs:
            height = status.block_number + 1
            await _behind(self._context, self._channel_id, height, sync_orgs, sync_timeout)
            clock.lap("sync")
        return transaction.result


class Network:
    """A channel seen through the gateway: its contracts, its ledger and its events."""

    def __init__(self, context: Context, name: str) -> None:
        self._context = context
        self.name = name

    def get_contract(self, chaincode_name: str, contract_name: str | None = None) -> Contract:
        """The contract ``contract_name`` (or the default one) of chaincode ``chaincode_name``."""
        return Contract(self._context, self.name, chaincode_name, contract_name)

    # ----------------------------------------------------------------- ledger (qscc)
    async def height(self, organization: str | None = None) -> int:
        """The channel's block height (blocks committed) on a peer of ``organization`` (an
        MSP id), or on the gateway's own peer when None: ``qscc GetChainInfo``, evaluated
        by that organisation's peer. Raises ``EvaluateError``."""
        return int((await _ledger.chain_info(self._context, self.name, organization)).height)

    async def get_chain_info(self, organization: str | None = None) -> common_pb2.BlockchainInfo:
        """``common_pb2.BlockchainInfo`` (height, current and previous block hash) from a peer
        of ``organization`` or the gateway's. Raises ``EvaluateError``."""
        return await _ledger.chain_info(self._context, self.name, organization)

    async def get_block(self, number: int, *, organization: str | None = None) -> common_pb2.Block:
        """Committed block ``number`` (``common_pb2.Block``). Raises ``EvaluateError`` (for
        example for a block not yet committed) and ``ValueError`` for a negative number."""
        return await _ledger.block(self._context, self.name, number, organization)

    async def get_block_by_transaction_id(
        self, transaction_id: str, *, organization: str | None = None
    ) -> common_pb2.Block:
        """The block (``common_pb2.Block``) holding transaction ``transaction_id``. Raises
        ``EvaluateError`` for an unknown transaction."""
        return await _ledger.block_by_transaction_id(
            self._context, self.name, transaction_id, organization
        )

    async def get_transaction(
        self, transaction_id: str, *, organization: str | None = None
    ) -> transaction_pb2.ProcessedTransaction:
        """Committed transaction ``transaction_id`` as ``transaction_pb2.ProcessedTransaction``:
        its ``transactionEnvelope`` and ``validationCode`` (a ``TxValidationCode``). Raises
        ``EvaluateError`` for an unknown transaction."""
        return await _ledger.transaction(self._context, self.name, transaction_id, organization)

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

    # ----------------------------------------------------------------- events
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
        call_options: CallOptions | None = None,
        reconnect: Reconnect | None = None,
    ) -> EventStream[ChaincodeEvent]:
        """Events of committed transactions of ``chaincode_name``, in commit order.

        Starts after the ``checkpoint`` position if it is set, else at ``start_block``, else
        at the next block committed after the stream starts (``async with``). With
        ``reconnect``, a broken stream is reopened after the last event it delivered.
        """
        request = self.new_chaincode_events_request(
            chaincode_name, start_block=start_block, checkpoint=checkpoint
        )
        return request.events(call_options=call_options, reconnect=reconnect)

    def new_block_events_request(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> BlockEventsRequest:
        """Build a Deliver request for blocks, for example to sign it offline."""
        return BlockEventsRequest.build(
            self._context, self.name, start_block=start_block, checkpoint=checkpoint
        )

    def new_filtered_block_events_request(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> FilteredBlockEventsRequest:
        """Build a Deliver request for filtered blocks, for example to sign it offline."""
        return FilteredBlockEventsRequest.build(
            self._context, self.name, start_block=start_block, checkpoint=checkpoint
        )

    def new_block_and_private_data_events_request(
        self, *, start_block: int | None = None, checkpoint: Checkpoint | None = None
    ) -> BlockAndPrivateDataEventsRequest:
        """Build a Deliver request for blocks with private data, e.g. to sign it offline."""
        return BlockAndPrivateDataEventsRequest.build(
            self._context, self.name, start_block=start_block, checkpoint=checkpoint
        )

    def block_events(
        self,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        call_options: CallOptions | None = None,
        reconnect: Reconnect | None = None,
    ) -> EventStream[common_pb2.Block]:
        """Committed blocks (``common_pb2.Block``) from the peer's Deliver service; where it
        starts and ``reconnect`` as for ``chaincode_events``."""
        request = self.new_block_events_request(start_block=start_block, checkpoint=checkpoint)
        return request.events(call_options=call_options, reconnect=reconnect)

    def filtered_block_events(
        self,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        call_options: CallOptions | None = None,
        reconnect: Reconnect | None = None,
    ) -> EventStream[events_pb2.FilteredBlock]:
        """Filtered blocks (``events_pb2.FilteredBlock``: tx ids, validation codes, event
        names); as ``block_events``."""
        request = self.new_filtered_block_events_request(
            start_block=start_block, checkpoint=checkpoint
        )
        return request.events(call_options=call_options, reconnect=reconnect)

    def block_and_private_data_events(
        self,
        *,
        start_block: int | None = None,
        checkpoint: Checkpoint | None = None,
        call_options: CallOptions | None = None,
        reconnect: Reconnect | None = None,
    ) -> EventStream[events_pb2.BlockAndPrivateData]:
        """Blocks with the private data this client may see (``events_pb2.BlockAndPrivateData``);
        as ``block_events``."""
        request = self.new_block_and_private_data_events_request(
            start_block=start_block, checkpoint=checkpoint
        )
        return request.events(call_options=call_options, reconnect=reconnect)


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
    return int((await _ledger.chain_info(context, channel, organization)).height)


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
