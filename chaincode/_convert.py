"""Arguments from bytes and results to bytes, driven by type hints (see docs/chaincode-api.md)."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any

from fedfabric.chaincode._errors import ChaincodeError

_SCALARS: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    bytes: "string",
    dict: "object",
    list: "array",
}


def check_type(hint: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``hint`` is a type the contract API converts."""
    if hint is None or hint is type(None) or hint is Any:
        return
    origin = typing.get_origin(hint) or hint
    if origin in _SCALARS or dataclasses.is_dataclass(origin):
        return
    raise TypeError(
        f"{where}: unsupported type {hint!r} (use str, int, float, bool, bytes, "
        "dict, list or a dataclass)"
    )


def schema(hint: Any) -> dict[str, Any]:
    """A small JSON-schema description of ``hint`` for the contract metadata."""
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and dataclasses.is_dataclass(origin):
        return {"type": "object", "title": origin.__name__}
    if origin is bytes:
        return {"type": "string", "format": "byte"}
    return {"type": _SCALARS.get(origin, "string")}


def from_bytes(raw: bytes, hint: Any, name: str) -> Any:
    """Convert one transaction argument; raise ``ChaincodeError`` naming the parameter."""
    origin = typing.get_origin(hint) or hint
    if origin is bytes:
        return raw
    try:
        text = raw.decode("utf-8")
        if origin in (str, Any) or hint is None:
            return text
        if origin is bool:
            if text not in ("true", "false"):
                raise ValueError("expected true or false")
            return text == "true"
        if origin is int:
            return int(text)
        if origin is float:
            return float(text)
        value = json.loads(text)
        if isinstance(origin, type) and dataclasses.is_dataclass(origin):
            return _to_dataclass(value, origin)
        if not isinstance(value, origin):
            raise ValueError(f"expected a JSON {_SCALARS[origin]}")
        return value
    except (ValueError, TypeError) as exc:
        raise ChaincodeError(
            f"argument {name}: cannot convert {raw[:64]!r} to "
            f"{getattr(origin, '__name__', origin)}: {exc}"
        ) from exc


def to_bytes(value: Any) -> bytes:
    """Convert a transaction result to the response payload."""
    if value is None:
        return b""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    return canonical_json(value)


def canonical_json(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no spaces, no NaN."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False
    ).encode("utf-8")


def _to_dataclass(value: Any, cls: type) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name in value:
            item = value[field.name]
            if dataclasses.is_dataclass(hints.get(field.name)):
                item = _to_dataclass(item, hints[field.name])
            kwargs[field.name] = item
    return cls(**kwargs)
