"""An organisation's private validation split: from its own data only, disjoint from every
training set, the same in every process, and written only where its own servers read it."""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.federation import (
    VALIDATOR,
    prepare,
    validation_split,
)
from fedfabric.fl_worker.run import (
    VALIDATION_FOLDER,
    validation_settings,
    write_validation_splits,
)


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> str:
    """A data set whose first feature is the row number, so every row can be traced."""
    rng = np.random.default_rng(0)
    x = np.column_stack([np.arange(900), rng.normal(size=(900, 3))])
    path = tmp_path_factory.mktemp("data") / "numbered.npz"
    np.savez(path, x=x, y=np.arange(900) % 5)
    return str(path)


def ids(data) -> set[float]:
    return {round(float(v), 9) for v in data.x[:, 0]}


def config(dataset: str, **changes) -> RunConfig:
    return RunConfig(dataset=dataset, attack=None, **changes)


def test_each_split_is_disjoint_from_every_training_set_and_the_test_set(numbered):
    fed = prepare(config(numbered))

    splits = [ids(validation_split(fed, k)) for k in range(3)]
    training = set().union(*(ids(w) for w in fed.workers))

    assert all(len(s) == round(0.1 * len(s | ids_of_org(fed, k))) for k, s in enumerate(splits))
    assert not any(s & training for s in splits)
    assert not any(s & ids(fed.partition.test) for s in splits)
    assert not splits[0] & splits[1] and not splits[1] & splits[2] and not splits[0] & splits[2]


def ids_of_org(fed, k: int) -> set[float]:
    return set().union(*(ids(w) for w in fed.partition.orgs[k].workers))


def test_a_split_is_carved_from_its_own_organisations_share_only(numbered):
    """A larger split takes more of the org's own rows, never another org's."""
    small, large = (prepare(config(numbered, validation_fraction=f)) for f in (0.1, 0.3))

    for k in range(3):
        share = ids(validation_split(small, k)) | ids_of_org(small, k)
        assert ids(validation_split(large, k)) | ids_of_org(large, k) == share
        assert len(validation_split(large, k)) > 2 * len(validation_split(small, k))


def test_the_split_is_a_function_of_the_seed(numbered):
    a, b, c = (prepare(config(numbered, seed=s)) for s in (4, 4, 5))

    assert ids(validation_split(a, 1)) == ids(validation_split(b, 1))
    assert ids(validation_split(a, 1)) != ids(validation_split(c, 1))


def test_an_organisation_outside_the_run_is_named():
    with pytest.raises(ValueError, match="organisation index 3 is not in 0..2"):
        validation_split(prepare(RunConfig(attack=None)), 3)


def test_each_org_gets_its_own_file_per_task_in_its_private_directory(tmp_path):
    fed = prepare(RunConfig())
    orgs = [SimpleNamespace(name=n, msp_id=f"{n.title()}MSP") for n in ("a", "b", "c", "d")]

    def private_dir(org: str) -> Path:
        folder = tmp_path / org
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    network = SimpleNamespace(topology=SimpleNamespace(organizations=orgs), private_dir=private_dir)

    settings = validation_settings(network, fed.config.orgs)
    write_validation_splits(network, fed, "task-1")

    assert list(settings) == ["AMSP", "BMSP", "CMSP"]  # the run's three orgs, not a fourth
    for k, values in enumerate(settings.values()):
        folder = Path(values["validation_data"])
        path = folder / "task-1.npz"
        assert values["validator"] == VALIDATOR == "fedfabric.chaincode.fl:numpy_loss"
        assert folder == tmp_path / orgs[k].name / VALIDATION_FOLDER
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with np.load(path, allow_pickle=False) as data:
            assert np.array_equal(data["y"], validation_split(fed, k).y)
            loss = fl.numpy_loss(fed.initial_model, data)
        assert 2.0 < loss < 2.6  # an untrained 10-class model: about ln(10)
        # The server's validator picks each task's own file; a task without one is named.
        validator = fl.FLContract(values)._validator
        assert validator.for_task("task-1").data_path == str(path)
        with pytest.raises(FileNotFoundError, match="no validation data for task 'task-2'"):
            validator.for_task("task-2")
    assert sorted(p.name for p in tmp_path.rglob("*.npz")) == ["task-1.npz"] * 3
