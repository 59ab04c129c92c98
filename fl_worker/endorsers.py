"""Which organisations' peers endorse a run's transactions, following the chaincode's
committed endorsement policy.

A run names its endorsers (the smallest sets of organisations that satisfy the policy, the
caller's own first: `fedfabric.network.endorsing_sets`) instead of letting the gateway plan
each transaction. It starts from the topology's policy. The consortium may move the policy
while the run goes on: adding an organisation makes a 2-of-3 definition 3 of 4. The sets of
2 then commit as ``ENDORSEMENT_POLICY_FAILURE`` (invalid: nothing written). `Endorsers.follow`
reads the committed definition from the ledger (``_lifecycle QueryChaincodeDefinition``, which
any member may evaluate), and every ledger sharing the `Endorsers` asks the new sets from then
on; the transaction that found the change is sent once more (`FLLedger` does this).

Example::

    endorsers = Endorsers("OutOf(2, 'A.peer', 'B.peer', 'C.peer')", ["A", "B", "C"])
    endorsers.sets("B")              # [("B", "A"), ("B", "C")]
    await endorsers.follow(network, "fl", endorsers.version)   # True: the policy moved
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fabric_protos.peer.lifecycle import lifecycle_pb2

from fedfabric.gateway import Network
from fedfabric.network import (
    Rule,
    endorsing_sets,
    from_application_policy,
    parse_policy,
    principals,
)

POLICY_FAILURE = "ENDORSEMENT_POLICY_FAILURE"


class Endorsers:
    """The endorsement policy a run's ledgers follow (see the module doc); shared by them.

    `policy`: a policy string or a parsed rule. `msp_ids`: the order in which other
    organisations are tried (default: as the policy names them); organisations a later
    policy adds come after them.
    """

    def __init__(self, policy: str | Rule, msp_ids: Sequence[str] = ()) -> None:
        self.rule = parse_policy(policy) if isinstance(policy, str) else policy
        self.msp_ids = tuple(dict.fromkeys([*msp_ids, *self._named()]))
        self.version = 0  # how many times the policy moved since the run started
        self._lock = asyncio.Lock()
        self._sets: dict[str, list[tuple[str, ...]]] = {}  # by own organisation

    def sets(self, own: str) -> list[tuple[str, ...]]:
        """The sets of organisations to ask, in order, for a transaction of `own` (its own
        organisation first); empty when no set holding `own` satisfies the policy."""
        if own not in self._sets:
            self._sets[own] = endorsing_sets(self.rule, own, self.msp_ids)
        return self._sets[own]

    async def follow(self, network: Network, chaincode: str, seen: int) -> bool:
        """After a transaction by a ledger that asked the sets of `version` `seen` committed
        as ``ENDORSEMENT_POLICY_FAILURE``: read `chaincode`'s committed definition; True when
        the sets changed since `seen` (so the transaction is worth sending again)."""
        async with self._lock:  # the ledgers that hit the change together read it once
            if self.version != seen:
                return True
            args = lifecycle_pb2.QueryChaincodeDefinitionArgs(name=chaincode)
            raw = await network.get_contract("_lifecycle").evaluate(
                "QueryChaincodeDefinition", [args.SerializeToString()]
            )
            found = lifecycle_pb2.QueryChaincodeDefinitionResult.FromString(raw)
            rule = from_application_policy(found.validation_parameter)
            if rule is None or rule == self.rule:  # a channel policy: the gateway plans it
                return False
            self.rule = rule
            self.msp_ids = tuple(dict.fromkeys([*self.msp_ids, *self._named()]))
            self._sets.clear()
            self.version += 1
            return True

    def _named(self) -> list[str]:
        return [p.msp_id for p in principals(self.rule)]


__all__ = ["POLICY_FAILURE", "Endorsers"]
