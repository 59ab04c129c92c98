"""The package layout: every folder is installed, and each public API is a sorted __all__."""

from __future__ import annotations

import importlib
import tomllib

import pytest

from tests.conftest import ROOT

TOP = ("network", "chaincode", "gateway", "fl_worker")


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        "fedfabric." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in TOP
        for p in (ROOT / top).rglob("__init__.py")
    }

    assert listed == found


@pytest.mark.parametrize(
    "name",
    ["fedfabric.network", "fedfabric.chaincode", "fedfabric.chaincode.fl", "fedfabric.gateway"],
)
def test_public_api_is_a_sorted_all_of_documented_names(name: str) -> None:
    module = importlib.import_module(name)

    def isort_style(n: str) -> tuple[int, str]:  # CONSTANTS, then Classes, then functions
        return (0 if n.isupper() else 1 if n[0].isupper() else 2, n)

    assert module.__all__ in (sorted(module.__all__), sorted(module.__all__, key=isort_style))
    for attr in module.__all__:
        obj = getattr(module, attr)
        if callable(obj):
            assert obj.__doc__, f"{name}.{attr} has no docstring"
