"""Key rules of the Go shim (shim/stub.go): simple keys, composite keys, range bounds."""

from __future__ import annotations

from fedfabric.chaincode._errors import ChaincodeError

COMPOSITE_NAMESPACE = "\x00"
EMPTY_START_KEY = "\x01"  # an empty range start becomes this, so composite keys stay out of range
MAX_RUNE = "\U0010ffff"  # end of a partial composite key range


def check_key(key: str) -> None:
    """Raise unless ``key`` is a non-empty string of valid UTF-8."""
    if not isinstance(key, str):
        raise ChaincodeError(f"key must be a str, got {type(key).__name__}")
    if key == "":
        raise ChaincodeError("key must not be an empty string")
    _check_utf8(key)


def check_collection(collection: str) -> None:
    """Raise unless ``collection`` names a private data collection."""
    if not collection:
        raise ChaincodeError("collection must not be an empty string")


def range_bounds(start: str, end: str) -> tuple[str, str]:
    """Return the range bounds sent to the peer (empty start → U+0001), checking both."""
    start = start or EMPTY_START_KEY
    for key in (start, end):
        _check_utf8(key)
        if key.startswith(COMPOSITE_NAMESPACE):
            raise ChaincodeError(
                f"first character of the key [{key}] contains a null character which is not allowed"
            )
    return start, end


def create_composite_key(object_type: str, attributes: list[str] | tuple[str, ...]) -> str:
    """Return ``\\x00type\\x00attr1\\x00...`` after checking every part."""
    parts = [object_type, *attributes]
    for part in parts:
        _check_composite_part(part)
    return COMPOSITE_NAMESPACE + "".join(part + "\x00" for part in parts)


def split_composite_key(key: str) -> tuple[str, list[str]]:
    """Inverse of :func:`create_composite_key`: ``(object_type, attributes)``."""
    parts = key[1:].split("\x00")[:-1]
    if not key.startswith(COMPOSITE_NAMESPACE) or not parts:
        raise ChaincodeError(f"not a composite key: {key!r}")
    return parts[0], parts[1:]


def partial_composite_range(object_type: str, attributes: list[str] | tuple[str, ...]):
    """Range ``[prefix, prefix + U+10FFFF)`` covering every key that extends the prefix."""
    prefix = create_composite_key(object_type, attributes)
    return prefix, prefix + MAX_RUNE


def _check_composite_part(part: str) -> None:
    if not isinstance(part, str):
        raise ChaincodeError(f"composite key parts must be str, got {type(part).__name__}")
    _check_utf8(part)
    for index, char in enumerate(part):
        if char in ("\x00", MAX_RUNE):
            raise ChaincodeError(
                f"input contains unicode U+{ord(char):04X} starting at position [{index}]. "
                "U+0000 and U+10FFFF are not allowed in the input attribute of a composite key"
            )


def _check_utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ChaincodeError(f"not a valid utf8 string: {text!r}") from None
