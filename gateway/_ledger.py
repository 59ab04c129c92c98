"""Ledger queries through the ``qscc`` system chaincode, decoded into Fabric's protos."""

from __future__ import annotations

from typing import Any

from fabric_protos.common import common_pb2, ledger_pb2
from fabric_protos.peer import transaction_pb2

from fedfabric.gateway._context import Context
from fedfabric.gateway._proposal import build_proposal


async def query(
    context: Context, channel: str, function: str, args: list[str], organization: str | None
) -> bytes:
    """Evaluate ``qscc`` ``function`` on a peer of ``organization`` (or the gateway's peer)."""
    proposal = build_proposal(
        context,
        channel_id=channel,
        chaincode="qscc",
        transaction_name=function,
        args=[channel, *args],
        endorsing_orgs=[organization] if organization else None,
    )
    return await proposal.evaluate()


async def chain_info(context: Context, channel: str, organization: str | None) -> Any:
    """``common.BlockchainInfo``: height, current and previous block hashes."""
    raw = await query(context, channel, "GetChainInfo", [], organization)
    return ledger_pb2.BlockchainInfo.FromString(raw)


async def block(context: Context, channel: str, number: int, organization: str | None) -> Any:
    """``common.Block`` number ``number``."""
    if number < 0:
        raise ValueError(f"a block number cannot be negative: {number}")
    raw = await query(context, channel, "GetBlockByNumber", [str(number)], organization)
    return common_pb2.Block.FromString(raw)


async def block_by_transaction_id(
    context: Context, channel: str, transaction_id: str, organization: str | None
) -> Any:
    """``common.Block`` holding transaction ``transaction_id``."""
    raw = await query(context, channel, "GetBlockByTxID", [_checked(transaction_id)], organization)
    return common_pb2.Block.FromString(raw)


async def transaction(
    context: Context, channel: str, transaction_id: str, organization: str | None
) -> Any:
    """``peer.ProcessedTransaction``: the envelope and its ``validationCode``."""
    raw = await query(
        context, channel, "GetTransactionByID", [_checked(transaction_id)], organization
    )
    return transaction_pb2.ProcessedTransaction.FromString(raw)


def _checked(transaction_id: str) -> str:
    if not transaction_id:
        raise ValueError("transaction_id must not be empty")
    return transaction_id
