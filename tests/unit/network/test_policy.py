"""Reading a committed chaincode definition's endorsement policy back (``from_application_policy``),
the way `fedfabric org deploy` tells whether the topology's policy is the committed one."""

from __future__ import annotations

import pytest
from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2
from fabric_protos.peer import policy_pb2

from fedfabric.network._policy import PolicyError, from_application_policy, parse_policy


def _role(msp_id: str, role: int) -> msp_principal_pb2.MSPPrincipal:
    return msp_principal_pb2.MSPPrincipal(
        principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
        principal=msp_principal_pb2.MSPRole(msp_identifier=msp_id, role=role).SerializeToString(),
    )


def _out_of(n: int, *rules: policies_pb2.SignaturePolicy) -> policies_pb2.SignaturePolicy:
    return policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(n=n, rules=list(rules))
    )


def _signed(i: int) -> policies_pb2.SignaturePolicy:
    return policies_pb2.SignaturePolicy(signed_by=i)


def _committed(envelope: policies_pb2.SignaturePolicyEnvelope) -> bytes:
    return policy_pb2.ApplicationPolicy(signature_policy=envelope).SerializeToString()


def test_a_k_of_n_policy_reads_back_as_the_topology_writes_it() -> None:
    peer = msp_principal_pb2.MSPRole.PEER
    envelope = policies_pb2.SignaturePolicyEnvelope(
        rule=_out_of(3, *(_signed(i) for i in range(4))),
        identities=[_role(m, peer) for m in ("AMSP", "BMSP", "CMSP", "DMSP")],
    )
    text = "OutOf(3, 'AMSP.peer', 'BMSP.peer', 'CMSP.peer', 'DMSP.peer')"
    assert from_application_policy(_committed(envelope)) == parse_policy(text)
    assert from_application_policy(_committed(envelope)) != parse_policy(
        "OutOf(2, 'AMSP.peer', 'BMSP.peer', 'CMSP.peer', 'DMSP.peer')"
    )


def test_nested_rules_and_roles_read_back() -> None:
    envelope = policies_pb2.SignaturePolicyEnvelope(
        rule=_out_of(2, _signed(0), _out_of(1, _signed(1), _signed(2))),
        identities=[
            _role("AMSP", msp_principal_pb2.MSPRole.ADMIN),
            _role("BMSP", msp_principal_pb2.MSPRole.MEMBER),
            _role("CMSP", msp_principal_pb2.MSPRole.CLIENT),
        ],
    )
    expected = parse_policy("AND('AMSP.admin', OR('BMSP.member', 'CMSP.client'))")
    assert from_application_policy(_committed(envelope)) == expected


def test_a_channel_policy_reference_is_not_a_signature_policy() -> None:
    reference = policy_pb2.ApplicationPolicy(
        channel_config_policy_reference="/Channel/Application/Endorsement"
    ).SerializeToString()
    assert from_application_policy(reference) is None


def test_bytes_that_are_not_a_policy_are_refused() -> None:
    with pytest.raises(PolicyError, match="not a chaincode endorsement policy"):
        from_application_policy(b"\xff\xff\xff")
    by_identity = policies_pb2.SignaturePolicyEnvelope(
        rule=_signed(0),
        identities=[
            msp_principal_pb2.MSPPrincipal(
                principal_classification=msp_principal_pb2.MSPPrincipal.IDENTITY
            )
        ],
    )
    with pytest.raises(PolicyError, match="other than role"):
        from_application_policy(_committed(by_identity))
