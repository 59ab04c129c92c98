"""Shared arrangements for the FL contract tests: identities, a task, updates and a ledger.

Importable both by the tests (through conftest) and by the determinism scenario run in a
separate process, so it depends on nothing pytest provides.
"""

from __future__ import annotations

import json

import numpy as np
from fabric_protos.msp import identities_pb2

from fedfabric.chaincode.fl import FLContract, Layout, encode_update, worker_enrolment
from fedfabric.chaincode.testing import InvokeResult, MemoryLedger, fake_identity, invoke

ORGS = ("Org1MSP", "Org2MSP", "Org3MSP")
LAYOUT_JSON = {"tensors": [{"name": "w", "shape": [2, 2]}, {"name": "b", "shape": [2]}]}
LAYOUT = Layout.from_json(LAYOUT_JSON)


def make_identities() -> dict[str, bytes]:
    """Admins of Org1 (creates the tasks), Org2, Org3 and an outside Org9, one worker per
    org, a second Org1 worker and an outsider."""
    return {
        "admin": fake_identity("Org1MSP", role="admin", name="admin"),
        "admin2": fake_identity("Org2MSP", role="admin", name="admin2"),
        "admin3": fake_identity("Org3MSP", role="admin", name="admin3"),
        "admin9": fake_identity("Org9MSP", role="admin", name="admin9"),
        "w1": fake_identity("Org1MSP", name="worker1"),
        "w1b": fake_identity("Org1MSP", name="worker1b"),
        "w2": fake_identity("Org2MSP", name="worker2"),
        "w3": fake_identity("Org3MSP", name="worker3"),
        "outsider": fake_identity("Org9MSP", name="stranger"),
    }


def task_json(**overrides) -> dict:
    """A valid task; keyword arguments replace fields."""
    task = {
        "id": "digits",
        "layout": LAYOUT_JSON,
        "rounds": 2,
        "min_updates": 2,
        "norm_bound": 10.0,
        "max_update_bytes": 1000,
        "aggregation": {"rule": "fedavg", "params": {}},
        "allowed_orgs": list(ORGS),
    }
    task.update(overrides)
    return task


def tensors(value: float, bias: float | None = None) -> dict[str, np.ndarray]:
    """A delta with every weight `value` and every bias `bias` (default `value`)."""
    return {
        "w": np.full((2, 2), value, dtype=np.float32),
        "b": np.full(2, value if bias is None else bias, dtype=np.float32),
    }


def update(value: float, bias: float | None = None, **options) -> bytes:
    """An encoded delta (see `tensors`)."""
    return encode_update(tensors(value, bias), LAYOUT, **options)


class World:
    """A ledger, an FL contract and identities; `call` invokes ``fl:<function>``."""

    def __init__(self, identities: dict[str, bytes], contract: FLContract | None = None):
        self.ids = identities
        self.ledger = MemoryLedger()
        self.contract = contract or FLContract()

    async def call(self, function: str, *args, who: str = "admin", **kw) -> InvokeResult:
        return await invoke(
            self.contract, f"fl:{function}", *args, creator=self.ids[who], ledger=self.ledger, **kw
        )

    async def ok(self, function: str, *args, who: str = "admin", **kw) -> InvokeResult:
        result = await self.call(function, *args, who=who, **kw)
        assert result.status == 200, result.message
        return result

    async def json(self, function: str, *args, who: str = "admin"):
        return json.loads((await self.ok(function, *args, who=who)).payload)

    async def start(self, task: dict | None = None, initial: float = 0.0) -> None:
        """Create the task with a constant initial model (which opens round 1) and have each
        allowed org's admin register that org's workers."""
        task = task or task_json()
        await self.ok("CreateTask", task, update(initial))
        await self.register(task["id"], task["allowed_orgs"])

    async def register(self, task_id: str, orgs) -> None:
        """Each org's admin in `orgs` registers every worker identity of its org."""
        by_org: dict[str, tuple[str | None, list[str]]] = {}
        for who, creator in self.ids.items():
            identity = identities_pb2.SerializedIdentity.FromString(creator)
            admin, workers = by_org.get(identity.mspid, (None, []))
            if who.startswith("admin"):
                admin = who
            else:
                try:
                    workers.append(worker_enrolment(identity.id_bytes))
                except ValueError:  # an identity without enrolment id: the contract refuses it
                    pass
            by_org[identity.mspid] = (admin, workers)
        for msp_id in orgs:
            admin, workers = by_org.get(msp_id, (None, []))
            if admin and workers:
                await self.ok("RegisterWorkers", task_id, workers, who=admin)


def assert_refused(result: InvokeResult, check: str, *fragments: str) -> None:
    """The call failed with a message starting with `check` and containing `fragments`."""
    assert result.status >= 400, result
    assert result.message.startswith(f"{check}: "), result.message
    assert json.loads(result.payload) == {"check": check}
    for fragment in fragments:
        assert fragment in result.message, result.message
