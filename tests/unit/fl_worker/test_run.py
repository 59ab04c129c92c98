"""`fedfabric run` without --task: the same settings run again get a new task; --resume the last."""

from __future__ import annotations

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.run import _default_task, task_id


class Ledger:
    def __init__(self, *tasks: str) -> None:
        self.tasks = set(tasks)

    async def task(self, task: str) -> dict | None:
        return {"spec": {"id": task}} if task in self.tasks else None


async def test_a_new_run_takes_the_next_free_task_and_resume_the_latest() -> None:
    base = task_id(RunConfig())

    assert await _default_task(Ledger(), base, resume=False) == base
    assert await _default_task(Ledger(base), base, resume=False) == f"{base}-2"
    assert await _default_task(Ledger(base, f"{base}-2"), base, resume=True) == f"{base}-2"
    assert await _default_task(Ledger(), base, resume=True) == base  # refused later: not there


def test_the_task_id_follows_every_setting() -> None:
    assert task_id(RunConfig()) == task_id(RunConfig())
    assert task_id(RunConfig(seed=1)) != task_id(RunConfig())
    assert task_id(RunConfig()).startswith("digits-")
