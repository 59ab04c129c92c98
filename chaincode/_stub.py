"""``ctx.stub``: the transaction's view of the ledger.

``Stub`` holds everything that needs no peer (transaction context decoded from the signed
proposal, key rules, composite keys, the chaincode event) and declares the ledger I/O as abstract
coroutines. The shim (``_shim.py``) implements them with messages to the peer, the memory stub
(``_memory.py``) with an in-memory ledger.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
from collections.abc import AsyncIterator, Sequence

from fabric_protos.common import common_pb2
from fabric_protos.peer import chaincode_pb2, proposal_pb2, transaction_pb2

from fedfabric.chaincode import _keys
from fedfabric.chaincode._errors import ChaincodeError
from fedfabric.chaincode._identity import ClientIdentity

VALIDATION_PARAMETER = transaction_pb2.MetaDataKeys.Name(transaction_pb2.VALIDATION_PARAMETER)


@dataclasses.dataclass(frozen=True)
class KeyModification:
    """One entry of a key's history: which transaction wrote (or deleted) which value, when."""

    tx_id: str
    value: bytes
    timestamp: datetime.datetime | None
    is_delete: bool


class Stub(abc.ABC):
    """The ledger API a contract sees as ``ctx.stub``; all I/O methods are coroutines.

    Reads never see this transaction's own writes (Fabric simulates against committed state).
    Invalid arguments and peer-side failures raise ``ChaincodeError`` with the message unchanged.
    """

    def __init__(
        self,
        *,
        channel_id: str,
        tx_id: str,
        chaincode_input: chaincode_pb2.ChaincodeInput,
        signed_proposal: proposal_pb2.SignedProposal | None,
    ) -> None:
        args = list(chaincode_input.args)
        self.channel_id = channel_id
        self.tx_id = tx_id
        self.function: str = args[0].decode("utf-8", "replace") if args else ""
        self.args: list[bytes] = args[1:]
        self.is_init: bool = chaincode_input.is_init
        self.signed_proposal = signed_proposal
        self.creator: bytes = b""
        self.transient: dict[str, bytes] = {}
        self.timestamp: datetime.datetime | None = None
        self.event: tuple[str, bytes] | None = None
        if signed_proposal is not None and signed_proposal.proposal_bytes:
            self._read_proposal(signed_proposal.proposal_bytes)

    def _read_proposal(self, proposal_bytes: bytes) -> None:
        # The same fields the Go shim extracts in newChaincodeStub.
        try:
            proposal = proposal_pb2.Proposal.FromString(proposal_bytes)
            header = common_pb2.Header.FromString(proposal.header)
            channel_header = common_pb2.ChannelHeader.FromString(header.channel_header)
            signature_header = common_pb2.SignatureHeader.FromString(header.signature_header)
            payload = proposal_pb2.ChaincodeProposalPayload.FromString(proposal.payload)
        except Exception as exc:
            raise ChaincodeError(f"failed to extract proposal fields: {exc}") from exc
        self.creator = signature_header.creator
        self.transient = dict(payload.TransientMap)
        if channel_header.HasField("timestamp"):
            self.timestamp = channel_header.timestamp.ToDatetime(tzinfo=datetime.UTC)

    @property
    def mspid(self) -> str:
        """MSP id of the creator (the submitting client), not of the peer."""
        return ClientIdentity(self.creator).msp_id if self.creator else ""

    # -- world state --------------------------------------------------------------------------

    async def get_state(self, key: str) -> bytes:
        """The committed value of ``key`` (``b""`` when absent)."""
        _keys.check_key(key)
        return await self._get_state("", key)

    async def get_state_multiple(self, keys: Sequence[str]) -> list[bytes]:
        """Committed values of several keys, in order (``b""`` for absent ones)."""
        for key in keys:
            _keys.check_key(key)
        return await self._get_state_multiple("", list(keys)) if keys else []

    async def put_state(self, key: str, value: bytes) -> None:
        """Write ``value`` to ``key`` (visible to later transactions once committed)."""
        _keys.check_key(key)
        await self._put_state("", key, bytes(value))

    async def del_state(self, key: str) -> None:
        """Delete ``key``."""
        _keys.check_key(key)
        await self._del_state("", key)

    def get_state_by_range(self, start: str, end: str) -> AsyncIterator[tuple[str, bytes]]:
        """Iterate ``(key, value)`` for ``start <= key < end`` (empty ``end``: no upper bound).

        Example::

            async for key, value in ctx.stub.get_state_by_range("a", "m"):
                ...
        """
        start, end = _keys.range_bounds(start, end)
        return self._range("", start, end)

    async def get_state_by_range_with_pagination(
        self, start: str, end: str, page_size: int, bookmark: str = ""
    ) -> tuple[list[tuple[str, bytes]], str]:
        """One page of at most ``page_size`` results and the bookmark of the next page."""
        start, end = _keys.range_bounds(start, end)
        if page_size <= 0:
            raise ChaincodeError(f"page size must be positive, got {page_size}")
        return await self._range_page("", start, end, page_size, bookmark)

    def get_state_by_partial_composite_key(
        self, object_type: str, attributes: Sequence[str]
    ) -> AsyncIterator[tuple[str, bytes]]:
        """Iterate every composite key that starts with ``object_type`` and ``attributes``."""
        start, end = _keys.partial_composite_range(object_type, list(attributes))
        return self._range("", start, end)

    def get_history_for_key(self, key: str) -> AsyncIterator[KeyModification]:
        """Iterate the committed modifications of ``key`` (needs the peer's history database)."""
        _keys.check_key(key)
        return self._history(key)

    @staticmethod
    def create_composite_key(object_type: str, attributes: Sequence[str]) -> str:
        """``\\x00type\\x00attr\\x00...``; parts must not contain U+0000 or U+10FFFF."""
        return _keys.create_composite_key(object_type, list(attributes))

    @staticmethod
    def split_composite_key(key: str) -> tuple[str, list[str]]:
        """``(object_type, attributes)`` of a composite key."""
        return _keys.split_composite_key(key)

    # -- private data -------------------------------------------------------------------------

    async def get_private_data(self, collection: str, key: str) -> bytes:
        """The value of ``key`` in a private data collection (``b""`` when absent)."""
        _keys.check_collection(collection)
        _keys.check_key(key)
        return await self._get_state(collection, key)

    async def put_private_data(self, collection: str, key: str, value: bytes) -> None:
        """Write ``value`` to ``key`` in a private data collection."""
        _keys.check_collection(collection)
        _keys.check_key(key)
        await self._put_state(collection, key, bytes(value))

    async def del_private_data(self, collection: str, key: str) -> None:
        """Delete ``key`` from a private data collection."""
        _keys.check_collection(collection)
        _keys.check_key(key)
        await self._del_state(collection, key)

    async def get_private_data_hash(self, collection: str, key: str) -> bytes:
        """SHA-256 of the private value (readable by orgs outside the collection too)."""
        _keys.check_collection(collection)
        _keys.check_key(key)
        return await self._get_private_data_hash(collection, key)

    # -- state-based endorsement --------------------------------------------------------------

    async def set_state_validation_parameter(self, key: str, policy: bytes) -> None:
        """Set the key-level endorsement policy (serialized ``SignaturePolicyEnvelope``)."""
        _keys.check_key(key)
        await self._put_state_metadata("", key, VALIDATION_PARAMETER, bytes(policy))

    async def get_state_validation_parameter(self, key: str) -> bytes:
        """The key-level endorsement policy of ``key`` (``b""`` when none)."""
        _keys.check_key(key)
        return (await self._get_state_metadata("", key)).get(VALIDATION_PARAMETER, b"")

    # -- events -------------------------------------------------------------------------------

    def set_event(self, name: str, payload: bytes) -> None:
        """Attach a chaincode event to the transaction; the last call wins."""
        if not name:
            raise ChaincodeError("event name can not be empty string")
        self.event = (name, bytes(payload))

    # -- what a ledger back end implements ----------------------------------------------------

    @abc.abstractmethod
    async def _get_state(self, collection: str, key: str) -> bytes: ...

    @abc.abstractmethod
    async def _get_state_multiple(self, collection: str, keys: list[str]) -> list[bytes]: ...

    @abc.abstractmethod
    async def _put_state(self, collection: str, key: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def _del_state(self, collection: str, key: str) -> None: ...

    @abc.abstractmethod
    def _range(self, collection: str, start: str, end: str) -> AsyncIterator[tuple[str, bytes]]: ...

    @abc.abstractmethod
    async def _range_page(
        self, collection: str, start: str, end: str, page_size: int, bookmark: str
    ) -> tuple[list[tuple[str, bytes]], str]: ...

    @abc.abstractmethod
    def _history(self, key: str) -> AsyncIterator[KeyModification]: ...

    @abc.abstractmethod
    async def _get_private_data_hash(self, collection: str, key: str) -> bytes: ...

    @abc.abstractmethod
    async def _get_state_metadata(self, collection: str, key: str) -> dict[str, bytes]: ...

    @abc.abstractmethod
    async def _put_state_metadata(
        self, collection: str, key: str, metakey: str, value: bytes
    ) -> None: ...
