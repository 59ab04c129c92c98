"""Shared data for the fl_worker tests: the digits set is loaded once per session."""

from __future__ import annotations

import pytest

from fedfabric.fl_worker.ml import Dataset, load_dataset


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_dataset("digits")
