"""The public surface of fedfabric.chaincode.fl is exactly its sorted __all__."""

from __future__ import annotations

import fedfabric.chaincode.fl as fl


def test_all_is_sorted_and_complete():
    public = {n for n in vars(fl) if not n.startswith("_") and n != "annotations"}
    assert fl.__all__ == sorted(fl.__all__)
    assert set(fl.__all__) == public


def test_every_public_name_has_a_docstring():
    undocumented = [
        n for n in fl.__all__ if callable(getattr(fl, n)) and not getattr(fl, n).__doc__
    ]
    assert undocumented == []


def test_the_contract_is_named_fl():
    assert fl.FLContract.name == "fl"
