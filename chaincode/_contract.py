"""What contract authors write: ``Contract`` subclasses with ``@submit``/``@evaluate`` methods.

This module (and everything ``fedfabric.chaincode`` imports eagerly) imports no gRPC.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

from fedfabric.chaincode import _convert
from fedfabric.chaincode._errors import ChaincodeError
from fedfabric.chaincode._identity import ClientIdentity
from fedfabric.chaincode._stub import Stub

F = TypeVar("F", bound=Callable[..., Any])
_TAG = "__fedfabric_transaction__"


def submit(fn: F) -> F:
    """Mark a contract method as a transaction that writes (clients *submit* it)."""
    setattr(fn, _TAG, "submit")
    return fn


def evaluate(fn: F) -> F:
    """Mark a contract method as a read-only transaction (clients *evaluate* it)."""
    setattr(fn, _TAG, "evaluate")
    return fn


class Context:
    """What a transaction function receives first: ``ctx.stub`` and ``ctx.client_identity``."""

    def __init__(self, stub: Stub) -> None:
        self.stub = stub

    @functools.cached_property
    def client_identity(self) -> ClientIdentity:
        """The creator of the proposal; ``ChaincodeError`` if it is not an X.509 identity."""
        return ClientIdentity(self.stub.creator)


@dataclasses.dataclass(frozen=True)
class Transaction:
    """A transaction function of a contract class, with its parameter types (internal)."""

    name: str
    tag: str
    method: Callable[..., Any]
    params: tuple[tuple[str, Any], ...]
    returns: Any

    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "tag": [self.tag],
            "parameters": [{"name": n, "schema": _convert.schema(h)} for n, h in self.params],
        }
        if self.returns not in (None, type(None)):
            meta["returns"] = _convert.schema(self.returns)
        return meta


class Contract:
    """Base class of a contract: a namespace of transaction functions.

    ``name`` (class attribute, default the class name) is the prefix in ``"name:Function"``.
    Override ``before_transaction``, ``after_transaction`` and ``unknown_transaction`` to hook
    every call. ``settings`` come from ``serve --setting KEY=VALUE``.

    Example::

        class Assets(Contract):
            @evaluate
            async def Get(self, ctx: Context, key: str) -> bytes:
                return await ctx.stub.get_state(key)
    """

    name: str = ""
    # Set on each subclass by ``transactions()`` the first time it is asked.
    _fedfabric_transactions: ClassVar[dict[str, Transaction]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, settings: Mapping[str, str] | None = None) -> None:
        self.settings: Mapping[str, str] = types.MappingProxyType(dict(settings or {}))

    async def before_transaction(self, ctx: Context) -> None:
        """Called before every known transaction function (after argument conversion)."""

    async def after_transaction(self, ctx: Context, result: Any) -> None:
        """Called after a transaction function returned ``result``."""

    async def unknown_transaction(self, ctx: Context) -> Any:
        """Called for a function this contract does not define; the default refuses it."""
        raise ChaincodeError(
            f'function "{ctx.stub.function}" is not a transaction of contract "{self.name}"'
        )

    @classmethod
    def transactions(cls) -> dict[str, Transaction]:
        """The transaction functions by name; ``TypeError`` for unsupported signatures."""
        if "_fedfabric_transactions" not in cls.__dict__:
            cls._fedfabric_transactions = _collect(cls)
        return cls.__dict__["_fedfabric_transactions"]


def _collect(cls: type) -> dict[str, Transaction]:
    found: dict[str, Transaction] = {}
    for attr in sorted(dir(cls)):
        method = getattr(cls, attr)
        tag = getattr(method, _TAG, None)
        if tag is None:
            continue
        where = f"{cls.__name__}.{attr}"
        hints = typing.get_type_hints(method)
        params = list(inspect.signature(method).parameters.values())[2:]  # self, ctx
        for p in params:
            if p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD:
                raise TypeError(f"{where}: parameter {p.name} must be positional")
            _convert.check_type(hints.get(p.name), f"{where}({p.name})")
        _convert.check_type(hints.get("return"), f"{where} return")
        found[attr] = Transaction(
            name=attr,
            tag=tag,
            method=method,
            params=tuple((p.name, hints.get(p.name, str)) for p in params),
            returns=hints.get("return"),
        )
    return found
