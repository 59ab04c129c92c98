"""Which failed submissions a worker or coordinator may simply send again (`is_transient`)."""

from __future__ import annotations

import grpc

from fedfabric.fl_worker.ledger import is_transient
from fedfabric.gateway import EndorseError, ErrorDetail

UNREACHED = (
    "error in simulation: failed to execute transaction 2e68: could not launch chaincode "
    "fl_1.0:0fd4: connection to fl_1.0:0fd4 failed: error creating grpc connection to "
    '127.0.0.1:30261: connection error: desc = "transport: error while dialing: dial tcp '
    '127.0.0.1:30261: connect: connection refused"'
)
REFUSED = "chaincode response 400, private-validation: EnergyMSP refuses"


def endorse_error(*messages: str) -> EndorseError:
    details = [
        ErrorDetail(f"127.0.0.1:{7000 + i}", f"Org{i}MSP", m) for i, m in enumerate(messages)
    ]
    return EndorseError("tx1", code=grpc.StatusCode.ABORTED, grpc_message="failed to collect "
                        "enough transaction endorsements", details=details)  # fmt: skip


def test_chaincode_servers_that_could_not_be_reached_are_transient() -> None:
    assert is_transient(endorse_error(UNREACHED, UNREACHED))


def test_a_chaincode_answer_from_any_peer_is_final() -> None:
    assert not is_transient(endorse_error(UNREACHED, REFUSED))
    assert not is_transient(endorse_error(REFUSED))
    assert not is_transient(endorse_error())  # nothing said who failed: not retried blindly
