"""The topology file: the default parses; every invalid file names the offending field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fedfabric.network import (
    TopologyError,
    endorsing_sets,
    load_topology,
    majority_policy,
    parse_policy,
    parse_topology,
)
from fedfabric.network._policy import OutOf, PolicyError, Principal
from tests.conftest import topology_data, with_addresses


def test_default_topology_is_three_orgs_three_raft_orderers_majority_policy() -> None:
    t = load_topology()

    assert [o.msp_id for o in t.organizations] == ["TransportMSP", "EnergyMSP", "HealthMSP"]
    assert len(t.orderer_org.orderers) == 3 and t.consensus.type == "etcdraft"
    rule = parse_policy(t.endorsement_policy)
    assert isinstance(rule, OutOf) and rule.n == 2 and len(rule.rules) == 3
    assert t.chaincode("fl").endorsement_policy == t.endorsement_policy


def test_any_number_of_peers_per_org() -> None:
    data = topology_data()
    data["organizations"][0]["peers"].append(
        {
            "name": "peer1",
            "port": 7451,
            "chaincode_port": 7452,
            "operations_port": 9454,
            "chaincode_server_port": 7460,
        }
    )

    t = parse_topology(data)

    assert [p.host for p in t.org("transport").peers] == [
        "peer0.transport.smartcity.example",
        "peer1.transport.smartcity.example",
    ]


def test_nodes_are_on_127_0_0_1_unless_their_org_or_they_have_an_address() -> None:
    data = with_addresses(topology_data(), energy="10.77.0.3", ordering="fd00:77::10")
    data["orderer_org"]["orderers"][2]["address"] = "orderer2.example.org"

    t = parse_topology(data)

    assert [(p.bind_host, p.address) for p in t.peers] == [
        ("127.0.0.1", "127.0.0.1:7151"),
        ("10.77.0.3", "10.77.0.3:7251"),
        ("127.0.0.1", "127.0.0.1:7351"),
    ]
    assert t.org("energy").address == "10.77.0.3" and t.org("health").address == "127.0.0.1"
    assert [o.address for o in t.orderer_org.orderers] == [
        "[fd00:77::10]:7050",
        "[fd00:77::10]:7060",
        "orderer2.example.org:7070",
    ]
    assert t.orderer_org.orderers[0].address_at(7053) == "[fd00:77::10]:7053"


def test_nodes_on_different_addresses_may_share_a_port() -> None:
    data = with_addresses(topology_data(), energy="10.77.0.3")
    data["organizations"][1]["peers"][0].update(data["organizations"][0]["peers"][0])

    t = parse_topology(data)

    assert t.org("energy").peers[0].port == t.org("transport").peers[0].port
    with pytest.raises(TopologyError, match="port clash: .* = 7151 is also .* on 10.77.0.3"):
        parse_topology(with_addresses(data, transport="10.77.0.3"))


@pytest.mark.parametrize(
    ("where", "address", "words"),
    [
        (("organizations", 1), "10.77.0.256", "'10.77.0.256' is no IP address or DNS name"),
        (("organizations", 1, "peers", 0), "0.0.0.0", "binds every interface"),
        (("organizations", 1), "::", "binds every interface"),
        (("orderer_org",), "energy_host", "'energy_host' is no IP address or DNS name"),
        (("orderer_org", "orderers", 1), "-a.example", "is no IP address or DNS name"),
        (("organizations", 0), "", "is no IP address or DNS name"),
        (("organizations", 0), 28950577413072, "as a string (quote it)"),
    ],
)
def test_a_bad_address_is_refused_naming_the_field(
    where: tuple[str | int, ...], address: object, words: str
) -> None:
    data = topology_data()
    entry: Any = data
    for key in where:
        entry = entry[key]
    entry["address"] = address
    field = "topology" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)

    with pytest.raises(TopologyError) as info:
        parse_topology(data)

    assert str(info.value).startswith(f"{field}.address: ") and words in str(info.value)


def test_policy_defaults_to_majority_of_the_orgs() -> None:
    data = topology_data()
    del data["endorsement_policy"]

    t = parse_topology(data)

    assert t.endorsement_policy == majority_policy(["TransportMSP", "EnergyMSP", "HealthMSP"])


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            lambda d: d.update(endorsement_policy="OutOf(2, 'TransportMSP.peer', 'WaterMSP.peer')"),
            "endorsement_policy",
            "unknown organization 'WaterMSP'",
        ),
        (
            lambda d: d.update(
                endorsement_policy="OutOf(4, 'TransportMSP.peer', 'EnergyMSP.peer', "
                "'HealthMSP.peer')"
            ),
            "endorsement_policy",
            "1 <= n <= 3",
        ),
        (
            lambda d: d["organizations"][1].update(name="transport"),
            "organizations",
            "duplicate name 'transport'",
        ),
        (
            lambda d: d["organizations"][1].update(msp_id="TransportMSP"),
            "msp_id",
            "duplicate name 'TransportMSP'",
        ),
        (
            lambda d: d["organizations"][2]["peers"][0].update(port=7050),
            "port clash",
            "= 7050 is also orderer0.ordering.smartcity.example port",
        ),
        (
            lambda d: d["orderer_org"]["orderers"][1].update(name="orderer0"),
            "orderer_org.orderers",
            "duplicate name",
        ),
        (
            lambda d: d["organizations"][0]["peers"][0].update(port=80),
            "organizations[0].peers[0].port",
            "[1024, 65535]",
        ),
        (lambda d: d["organizations"][0].pop("msp_id"), "organizations[0].msp_id", "missing"),
        (lambda d: d.update(organizations=[]), "topology.organizations", "at least 1"),
        (lambda d: d["consensus"].update(type="BFT"), "consensus.type", "only 'etcdraft'"),
        (lambda d: d["chaincodes"][0].update(server="java"), "chaincodes[0].server", "'python'"),
        (
            lambda d: d["chaincodes"][0].update(endorsement_policy="OR('Nope.peer')"),
            "chaincodes[0].endorsement_policy",
            "unknown organization 'Nope'",
        ),
        (lambda d: d.update(name="Smart City"), "topology.name", "lowercase"),
    ],
)
def test_invalid_topology_names_the_field(change, field: str, words: str) -> None:  # noqa: ANN001
    data = topology_data()
    change(data)

    with pytest.raises(TopologyError) as info:
        parse_topology(data)

    assert field in str(info.value) and words in str(info.value)


def test_unreadable_and_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read topology file"):
        load_topology(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(TopologyError, match="not valid YAML"):
        load_topology(bad)
    bad.write_text(yaml.safe_dump(["a", "list"]))
    with pytest.raises(TopologyError, match="expected a mapping"):
        load_topology(bad)


def test_policy_language() -> None:
    assert parse_policy("AND('A.peer', OR('B.admin', 'C.member'))") == OutOf(
        2, (Principal("A", "peer"), OutOf(1, (Principal("B", "admin"), Principal("C", "member"))))
    )
    for bad, words in [
        ("OutOf(2, 'A.peer')", "1 <= n <= 1"),
        ("OR('A.boss')", "role"),
        ("OR('A.peer'", "expected ')'"),
        ("XOR('A.peer')", "unexpected 'XOR'"),
        ("OR('A.peer')) ", "after the end"),
    ]:
        with pytest.raises(PolicyError, match=words.replace("(", r"\(").replace(")", r"\)")):
            parse_policy(bad)


def test_endorsing_sets_are_the_smallest_that_satisfy_the_policy_own_org_first() -> None:
    orgs = ["A", "B", "C"]

    majority = endorsing_sets("OutOf(2, 'A.peer', 'B.peer', 'C.peer')", "B", orgs)
    every = endorsing_sets("AND('A.peer', 'B.member', 'C.peer')", "C", orgs)
    either = endorsing_sets("OR('A.peer', 'B.peer')", "C", orgs)

    assert majority == [("B", "A"), ("B", "C")]
    assert every == [("C", "A", "B")]
    assert either == [("C", "A"), ("C", "B")]  # the own org endorses every FL update
    assert endorsing_sets("AND('A.peer', 'B.admin')", "A", orgs) == []  # peers are no admins
