"""Examples in the README, docs/ and docstrings call what exists, with the right arguments."""

from __future__ import annotations

import inspect
import re

import pytest

from fedfabric.chaincode.fl import FLContract
from fedfabric.network import load_topology
from tests.conftest import ROOT

CALL = re.compile(r"\.(?:submit|evaluate)\(\s*\"(\w+)\",\s*\[")
CONTRACT = re.compile(r"get_contract\(\"(\w+)\"\)")


def texts() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for folder in ("gateway", "chaincode", "fl_worker", "network"):
        files += (ROOT / folder).rglob("*.py")
    return [(str(f.relative_to(ROOT)), f.read_text()) for f in sorted(files)]


def calls(text: str) -> list[tuple[str, list[str]]]:
    """Each example ``.submit("Name", [a, b, ...])``: the name and its top-level arguments."""
    found = []
    for match in CALL.finditer(text):
        args, depth, current = [], 0, ""
        for ch in text[match.end() :]:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                if depth == 0:
                    break
                depth -= 1
            if ch == "," and depth == 0:
                args.append(current)
                current = ""
            else:
                current += ch
        found.append((match[1], [a.strip() for a in [*args, current] if a.strip()]))
    return found


def fl_arity() -> dict[str, int]:
    return {
        name: len(inspect.signature(fn).parameters) - 2  # self, ctx
        for name, fn in inspect.getmembers(FLContract, inspect.isfunction)
        if name[0].isupper()
    }


@pytest.mark.parametrize(("where", "text"), texts(), ids=[w for w, _ in texts()])
def test_example_calls_of_the_fl_contract_pass_its_arguments(where: str, text: str) -> None:
    arity = fl_arity()
    for name, args in calls(text):
        if name in arity:
            assert len(args) == arity[name], (
                f"{where}: {name} takes {arity[name]} arguments, the example passes {args}"
            )


def test_readme_uses_only_chaincodes_of_the_default_topology() -> None:
    deployed = {cc.name for cc in load_topology().chaincodes}

    named = set(CONTRACT.findall((ROOT / "README.md").read_text()))

    assert named and named <= deployed
