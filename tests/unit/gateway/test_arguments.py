"""Transaction arguments: a list of str / bytes, never a bare string split into characters."""

import pytest
from gateway_fakes import FakePeer

from fedfabric.gateway import Gateway


@pytest.mark.parametrize("bare", ["key", b"key", bytearray(b"key")])
async def test_a_bare_string_or_bytes_as_args_is_a_type_error(
    gateway: Gateway, peer: FakePeer, bare: object
) -> None:
    contract = gateway.get_network("mychannel").get_contract("fl")

    with pytest.raises(TypeError, match=r"not a bare .*write \[.*key.*\] for one argument"):
        await contract.submit("Put", bare)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a bare"):
        await contract.evaluate("Get", bare)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a bare"):
        contract.new_proposal("Put", bare)  # type: ignore[arg-type]

    assert peer.requests == []  # nothing was sent


@pytest.mark.parametrize("element", [5, None, 1.5])
async def test_an_argument_that_is_not_text_or_bytes_is_a_type_error(
    gateway: Gateway, peer: FakePeer, element: object
) -> None:
    contract = gateway.get_network("mychannel").get_contract("fl")

    with pytest.raises(TypeError, match=r"args\[1\] must be str or bytes"):
        await contract.submit("Put", ["key", element])  # type: ignore[list-item]

    assert peer.requests == []
