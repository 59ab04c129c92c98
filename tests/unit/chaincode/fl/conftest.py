"""Fixtures for the FL contract tests (helpers live in fl_world.py)."""

from __future__ import annotations

import pytest
from fl_world import World, make_identities


@pytest.fixture(scope="session")
def identities() -> dict[str, bytes]:
    return make_identities()


@pytest.fixture
def world(identities) -> World:
    return World(identities)
