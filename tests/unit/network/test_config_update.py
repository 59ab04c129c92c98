"""Config updates as files: what an update adds, who signed it, and what a majority is."""

from __future__ import annotations

import pytest
from fabric_protos.common import common_pb2, configtx_pb2
from fabric_protos.msp import identities_pb2

from fedfabric.network import NetworkError
from fedfabric.network.fabric._config_update import application_update, read_update
from fedfabric.network.fabric._consortium import Signatures


def _config() -> configtx_pb2.Config:
    config = configtx_pb2.Config()
    config.channel_group.version = 4
    app = config.channel_group.groups["Application"]
    app.version = 2
    app.mod_policy = "Admins"
    for i, msp in enumerate(("AMSP", "BMSP", "CMSP")):
        app.groups[msp].version = i
    app.policies["Admins"].version = 1
    return config


def _sign(envelope: bytes, msp_id: str) -> bytes:
    env = common_pb2.Envelope.FromString(envelope)
    payload = common_pb2.Payload.FromString(env.payload)
    wrapped = configtx_pb2.ConfigUpdateEnvelope.FromString(payload.data)
    creator = identities_pb2.SerializedIdentity(mspid=msp_id, id_bytes=b"cert")
    header = common_pb2.SignatureHeader(creator=creator.SerializeToString(), nonce=b"n")
    wrapped.signatures.add(signature_header=header.SerializeToString(), signature=b"sig")
    payload.data = wrapped.SerializeToString()
    env.payload = payload.SerializeToString()
    return env.SerializeToString()


def test_an_addition_keeps_every_member_at_its_version_and_adds_one_group() -> None:
    config = _config()
    new = configtx_pb2.ConfigGroup(mod_policy="Admins")
    new.values["MSP"].value = b"msp"

    def change(read: configtx_pb2.ConfigGroup, write: configtx_pb2.ConfigGroup) -> None:
        write.version = 3
        write.mod_policy = "Admins"
        write.groups["DMSP"].CopyFrom(new)

    update, signers = read_update(_sign(application_update(config, "ch", change), "AMSP"))
    assert signers == ["AMSP"]
    assert update.channel_id == "ch"
    read, write = update.read_set.groups["Application"], update.write_set.groups["Application"]
    assert (read.version, write.version) == (2, 3)
    assert {m: g.version for m, g in read.groups.items()} == {"AMSP": 0, "BMSP": 1, "CMSP": 2}
    assert {m: g.version for m, g in write.groups.items() if m != "DMSP"} == {
        m: g.version for m, g in read.groups.items()
    }  # kept: the orderer rebuilds the group from what the write set lists
    assert write.groups["DMSP"] == new
    assert read.policies["Admins"].version == write.policies["Admins"].version == 1


def test_bytes_that_are_not_a_config_update_are_refused() -> None:
    with pytest.raises(NetworkError, match="not a channel config update"):
        read_update(b"\x0a\x03abc")
    header = common_pb2.ChannelHeader(type=common_pb2.ENDORSER_TRANSACTION, channel_id="ch")
    payload = common_pb2.Payload(
        header=common_pb2.Header(channel_header=header.SerializeToString())
    )
    envelope = common_pb2.Envelope(payload=payload.SerializeToString()).SerializeToString()
    with pytest.raises(NetworkError, match="not CONFIG_UPDATE"):
        read_update(envelope)


def test_a_majority_of_the_members_is_needed_and_the_missing_are_named() -> None:
    one = Signatures("DMSP", ("AMSP", "BMSP", "CMSP"), ("AMSP",))
    assert (one.needed, one.enough, one.missing) == (2, False, ("BMSP", "CMSP"))
    assert "waiting for 1 of BMSP, CMSP" in one.describe()
    two = Signatures("DMSP", ("AMSP", "BMSP", "CMSP"), ("AMSP", "CMSP"))
    assert two.enough and "waiting" not in two.describe()
    assert Signatures("EMSP", ("A", "B", "C", "D"), ("A", "B")).needed == 3
