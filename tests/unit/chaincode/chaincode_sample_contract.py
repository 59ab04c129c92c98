"""A contract that exercises every stub call; served by the shim and CLI tests."""

from __future__ import annotations

import asyncio
import json

from fedfabric.chaincode import ChaincodeError, Context, Contract, evaluate, submit


class Sample(Contract):
    name = "sample"

    @submit
    async def Put(self, ctx: Context, key: str, value: str) -> None:
        await ctx.stub.put_state(key, value.encode())

    @evaluate
    async def Get(self, ctx: Context, key: str) -> bytes:
        return await ctx.stub.get_state(key)

    @submit
    async def Del(self, ctx: Context, key: str) -> None:
        await ctx.stub.del_state(key)

    @evaluate
    async def Range(self, ctx: Context, start: str, end: str) -> list:
        return [[k, v.decode()] async for k, v in ctx.stub.get_state_by_range(start, end)]

    @evaluate
    async def RangeFirst(self, ctx: Context, start: str, end: str) -> str:
        query = ctx.stub.get_state_by_range(start, end)
        key, _ = await anext(query)
        await query.aclose()
        return key

    @evaluate
    async def Page(self, ctx: Context, start: str, end: str, size: int, bookmark: str) -> dict:
        page, next_bookmark = await ctx.stub.get_state_by_range_with_pagination(
            start, end, size, bookmark
        )
        return {"keys": [k for k, _ in page], "bookmark": next_bookmark}

    @evaluate
    async def ByOwner(self, ctx: Context, owner: str) -> list:
        found = []
        async for key, _ in ctx.stub.get_state_by_partial_composite_key("asset", [owner]):
            found.append(ctx.stub.split_composite_key(key)[1])
        return found

    @evaluate
    async def History(self, ctx: Context, key: str) -> list:
        return [
            {
                "tx": m.tx_id,
                "value": m.value.decode(),
                "delete": m.is_delete,
                "ts": m.timestamp.isoformat() if m.timestamp else None,
            }
            async for m in ctx.stub.get_history_for_key(key)
        ]

    @submit
    async def PutPrivate(self, ctx: Context, collection: str, key: str) -> None:
        await ctx.stub.put_private_data(collection, key, ctx.stub.transient["value"])

    @evaluate
    async def GetPrivate(self, ctx: Context, collection: str, key: str) -> dict:
        value = await ctx.stub.get_private_data(collection, key)
        digest = await ctx.stub.get_private_data_hash(collection, key)
        return {"value": value.decode(), "hash": digest.hex()}

    @submit
    async def SetPolicy(self, ctx: Context, key: str, policy: bytes) -> None:
        await ctx.stub.set_state_validation_parameter(key, policy)

    @evaluate
    async def GetPolicy(self, ctx: Context, key: str) -> bytes:
        return await ctx.stub.get_state_validation_parameter(key)

    @evaluate
    async def Multi(self, ctx: Context, keys: list) -> list:
        return [v.decode() for v in await ctx.stub.get_state_multiple(keys)]

    @evaluate
    async def Gather(self, ctx: Context, a: str, b: str) -> list:
        values = await asyncio.gather(ctx.stub.get_state(a), ctx.stub.get_state(b))
        return [v.decode() for v in values]

    @submit
    async def Emit(self, ctx: Context, name: str, payload: str) -> None:
        ctx.stub.set_event("ignored", b"")
        ctx.stub.set_event(name, payload.encode())

    @evaluate
    async def Info(self, ctx: Context) -> dict:
        return {
            "tx_id": ctx.stub.tx_id,
            "channel": ctx.stub.channel_id,
            "creator": ctx.stub.creator.decode(),
            "function": ctx.stub.function,
            "transient": sorted(ctx.stub.transient),
            "timestamp": ctx.stub.timestamp.isoformat(),
            "setting": self.settings.get("org", ""),
        }

    @evaluate
    async def Fail(self, ctx: Context, status: int, message: str) -> None:
        raise ChaincodeError(message, status=status, payload=b"details")

    @evaluate
    async def Crash(self, ctx: Context) -> None:
        raise RuntimeError("boom: something broke")

    @evaluate
    async def Echo(self, ctx: Context, value: dict) -> str:
        return json.dumps(value, sort_keys=True)


class NotAContract:
    pass
