"""A run's ledgers follow the committed endorsement policy (`Endorsers`): the layer alone,
over a fake gateway network (the real one: tests/fabric/test_late_organisation.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2
from fabric_protos.peer import policy_pb2
from fabric_protos.peer.lifecycle import lifecycle_pb2

from fedfabric.fl_worker.endorsers import Endorsers
from fedfabric.fl_worker.ledger import FLLedger
from fedfabric.gateway import CommitError

POLICY_FAILURE = 10  # TxValidationCode ENDORSEMENT_POLICY_FAILURE
THREE = ["AMSP", "BMSP", "CMSP"]


def majority(msp_ids: list[str], n: int) -> bytes:
    """A committed definition's ``validation_parameter``: `n` of the peers of `msp_ids`."""
    roles = [
        msp_principal_pb2.MSPPrincipal(
            principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
            principal=msp_principal_pb2.MSPRole(
                msp_identifier=m, role=msp_principal_pb2.MSPRole.PEER
            ).SerializeToString(),
        )
        for m in msp_ids
    ]
    rule = policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(
            n=n, rules=[policies_pb2.SignaturePolicy(signed_by=i) for i in range(len(roles))]
        )
    )
    envelope = policies_pb2.SignaturePolicyEnvelope(rule=rule, identities=roles)
    return policy_pb2.ApplicationPolicy(signature_policy=envelope).SerializeToString()


class Chain:
    """A channel whose committed ``fl`` policy is `policy` (n of msp ids): a transaction
    commits only when the organisations it names satisfy it."""

    def __init__(self, msp_ids: list[str], n: int) -> None:
        self.msp_ids, self.n = msp_ids, n
        self.refuse_all = False
        self.reads = 0
        self.asked: list[tuple[str, ...]] = []

    def get_contract(self, name: str) -> Any:
        return Lifecycle(self) if name == "_lifecycle" else Contract(self)


class Lifecycle:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def evaluate(self, name: str, args: list[bytes]) -> bytes:
        assert name == "QueryChaincodeDefinition"
        assert lifecycle_pb2.QueryChaincodeDefinitionArgs.FromString(args[0]).name == "fl"
        self.chain.reads += 1
        found = lifecycle_pb2.QueryChaincodeDefinitionResult(
            sequence=2, validation_parameter=majority(self.chain.msp_ids, self.chain.n)
        )
        return found.SerializeToString()


class Contract:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    async def submit(self, name: str, args: list[Any], *, endorsing_orgs: Any, **_: Any) -> bytes:
        self.chain.asked.append(tuple(endorsing_orgs))
        named = set(endorsing_orgs) & set(self.chain.msp_ids)
        if len(named) < self.chain.n or self.chain.refuse_all:
            raise CommitError(f"tx{len(self.chain.asked)}", POLICY_FAILURE)
        return json.dumps({"done": name}).encode()


def ledger(chain: Chain, endorsers: Endorsers, msp_id: str) -> FLLedger:
    identity = Caller(msp_id, b"a certificate")
    return FLLedger(chain, identity=identity, endorsers=endorsers)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Caller:  # a gateway `Identity`
    msp_id: str
    credentials: bytes


async def test_a_moved_policy_is_read_once_and_every_ledger_asks_its_sets() -> None:
    chain = Chain(THREE, 2)
    endorsers = Endorsers("OutOf(2, 'AMSP.peer', 'BMSP.peer', 'CMSP.peer')", THREE)
    a, b = ledger(chain, endorsers, "AMSP"), ledger(chain, endorsers, "BMSP")
    assert await a._submit("Put") == {"done": "Put"}
    assert chain.asked == [("AMSP", "BMSP")]

    # The consortium adds DMSP, and the definition moves to 3 of 4.
    chain.msp_ids, chain.n = [*THREE, "DMSP"], 3
    chain.asked.clear()
    assert await a._submit("Put") == {"done": "Put"}  # refused once, then sent again
    assert chain.asked == [("AMSP", "BMSP"), ("AMSP", "BMSP", "CMSP")]
    assert await b._submit("Put") == {"done": "Put"}  # no failure: the shared sets moved
    assert chain.asked[-1] == ("BMSP", "AMSP", "CMSP")
    assert chain.reads == 1 and endorsers.version == 1
    assert endorsers.msp_ids == ("AMSP", "BMSP", "CMSP", "DMSP")
    assert ("DMSP", "AMSP", "BMSP") == endorsers.sets("DMSP")[0]


async def test_a_policy_failure_under_the_committed_policy_is_the_callers_error() -> None:
    chain = Chain(THREE, 3)  # the definition already says 3 of 3 when the run starts
    endorsers = Endorsers("OutOf(3, 'AMSP.peer', 'BMSP.peer', 'CMSP.peer')", THREE)
    chain.refuse_all = True  # whatever the definition says
    with pytest.raises(CommitError, match="ENDORSEMENT_POLICY_FAILURE"):
        await ledger(chain, endorsers, "AMSP")._submit("Put")
    assert chain.reads == 1 and endorsers.version == 0  # read, unchanged: not sent again
    assert len(chain.asked) == 1
