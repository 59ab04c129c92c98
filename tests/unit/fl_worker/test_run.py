"""`fedfabric run` without --task: the same settings run again get a new task; --resume the
latest one this organisation drives, never one another organisation took."""

from __future__ import annotations

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.run import _default_task, task_id


class Ledger:
    """Task records by id, each created by an organisation; this ledger is Org1MSP's admin."""

    msp_id = "Org1MSP"

    def __init__(self, *tasks: str, by: str = "Org1MSP", **others: str) -> None:
        self.tasks = dict.fromkeys(tasks, by) | others

    async def task(self, task: str) -> dict | None:
        if task not in self.tasks:
            return None
        return {"created_by": self.tasks[task], "spec": {"id": task}}


async def test_a_new_run_takes_the_next_free_task_and_resume_the_latest() -> None:
    base = task_id(RunConfig())

    assert await _default_task(Ledger(), base, resume=False) == base
    assert await _default_task(Ledger(base), base, resume=False) == f"{base}-2"
    assert await _default_task(Ledger(base, f"{base}-2"), base, resume=True) == f"{base}-2"
    assert await _default_task(Ledger(), base, resume=True) == base  # refused later: not there


async def test_resume_never_picks_a_task_another_org_took() -> None:
    base = task_id(RunConfig())
    squatted = Ledger(base, **{f"{base}-2": "Org2MSP"})  # Org2 took the next id first

    assert await _default_task(squatted, base, resume=True) == base
    assert await _default_task(squatted, base, resume=False) == f"{base}-3"


def test_the_task_id_follows_every_setting() -> None:
    assert task_id(RunConfig()) == task_id(RunConfig())
    assert task_id(RunConfig(seed=1)) != task_id(RunConfig())
    assert task_id(RunConfig()).startswith("digits-")


class _Network:
    """What `run_job` reads of a network before anything else: its topology."""

    def __init__(self) -> None:
        from pathlib import Path

        from fedfabric.network import load_topology

        self.topology = load_topology(Path(__file__).parents[3] / "network" / "topology.yaml")


def test_one_organisations_part_is_checked_before_anything_runs() -> None:
    import pytest

    from fedfabric.fl_worker.run import RunError, RunOptions, _own_org

    network = _Network()
    config = RunConfig()
    assert _own_org(config, RunOptions(), network) is None  # type: ignore[arg-type]
    assert _own_org(config, RunOptions(org="EnergyMSP"), network) == "energy"  # type: ignore[arg-type]
    with pytest.raises(RunError, match="--join .* name it with --org"):
        _own_org(config, RunOptions(join=True), network)  # type: ignore[arg-type]
    with pytest.raises(RunError, match="--org water: not one of the run's organisations"):
        _own_org(config, RunOptions(org="water"), network)  # type: ignore[arg-type]
    with pytest.raises(RunError, match="not one of .*transport, energy\\)"):
        _own_org(config.replace(orgs=2), RunOptions(org="health"), network)  # type: ignore[arg-type]
    with pytest.raises(RunError, match="synchronous rounds"):
        _own_org(config.replace(mode="async"), RunOptions(org="energy"), network)  # type: ignore[arg-type]
    with pytest.raises(RunError, match="synchronous rounds"):
        _own_org(config, RunOptions(org="energy", devices_per_org=4), network)  # type: ignore[arg-type]


def test_an_organisation_past_the_runs_first_ones_joins_with_a_data_part_of_its_own() -> None:
    from fedfabric.fl_worker.run import RunOptions, _own_org, _with_late_org

    network = _Network()
    config = RunConfig(orgs=2)
    late = _own_org(config, RunOptions(org="HealthMSP", join=True), network)  # type: ignore[arg-type]

    assert late == "health"
    assert _with_late_org(config, late, network).orgs == 3  # type: ignore[arg-type]
    assert _with_late_org(config, "energy", network) is config  # type: ignore[arg-type]
    assert _with_late_org(config, None, network) is config  # type: ignore[arg-type]
