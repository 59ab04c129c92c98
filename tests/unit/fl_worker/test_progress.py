"""What `fedfabric run` prints: the round table is whole when the output is a log, not a tty;
the ledger run next to plain FedAvg without validation; the refusals per org and check."""

from __future__ import annotations

import dataclasses
import io

from rich.console import Console

from fedfabric.fl_worker._progress import Progress
from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.report import LedgerFigures, Report, RoundRow

HEADERS = ("round", "accuracy", "plain FedAvg", "committed", "refused", "used", "excluded", "KB")


def report() -> Report:
    rows = [
        RoundRow(
            round=r,
            accuracy=0.9,
            loss=0.3,
            submitted=9,
            committed=123456,
            refused=123456,
            used=123456,
            excluded=123456,
            update_bytes=9_999_999,
            seconds=1234.5,
            baseline_accuracy=0.9,
        )
        for r in range(1, 4)
    ]
    return Report(
        task="digits-0123456789",
        config={},
        initial_accuracy=0.1,
        rounds=rows,
        ledger=LedgerFigures(10, 40, 39, 123_456_789, 1_000_000, 250_000),
        contributions={"TransportMSP": {"used": 3}},
        final_model=b"m",
        final_model_digest="ab" * 32,
        baseline_final_accuracy=0.9,
        wall_seconds=12.0,
        baseline_seconds=1.0,
    )


def test_round_table_in_a_log_keeps_every_header_whole() -> None:
    out = io.StringIO()
    with Progress(RunConfig(), Console(file=out, highlight=False)) as progress:
        progress.summary(report())

    text = out.getvalue()
    header = next(line for line in text.splitlines() if "accuracy" in line)
    for name in HEADERS:
        assert f" {name} " in header, header
    assert "…" not in text.split("ledger:")[0]


def test_the_summary_shows_refusals_per_org_and_check_and_the_plain_fedavg_baseline() -> None:
    rows = [
        RoundRow(round=1, accuracy=0.8, loss=0.5, submitted=9, committed=7, refused=2,
                 refusals={"Org2MSP": {"private-validation": 1}, "Org1MSP": {"norm": 1}},
                 baseline_accuracy=0.6),
        RoundRow(round=2, accuracy=0.9, loss=0.3, submitted=9, committed=7, refused=2,
                 refusals={"Org2MSP": {"private-validation": 2}}, baseline_accuracy=0.7),
    ]  # fmt: skip
    out = io.StringIO()
    with Progress(RunConfig(), Console(file=out, highlight=False)) as progress:
        progress.summary(dataclasses.replace(report(), rounds=rows, baseline_final_accuracy=0.7))

    text = out.getvalue()
    assert "refusals: Org1MSP: norm 1; Org2MSP: private-validation 3" in text
    assert "0.900 on the ledger, 0.700 in memory with plain FedAvg and no validation" in text


def test_an_async_run_shows_progress_per_version_with_its_buffer() -> None:
    from fedfabric.fl_worker.coordinator import RoundOutcome

    aggregate = {
        "excluded": [{"id": "Org1MSP:a#3", "reason": "stale: trained from version 0, ..."}],
        "staleness": [{"staleness": 0}, {"staleness": 2}, {"staleness": 4}],
        "used": ["Org2MSP:b#1", "Org3MSP:c#1"],
    }
    outcome = RoundOutcome("t", 2, "open", (), (), aggregate, b"", "d", 0.5, 1.0, {}, 3)
    out = io.StringIO()
    with Progress(RunConfig(mode="async", rounds=7), Console(file=out)) as progress:
        progress.round(outcome)

    assert "version 2/7: accuracy 0.500" in out.getvalue()
    assert "buffer 3 (staleness 0..4, 1 too stale)" in out.getvalue()


def test_a_long_line_stays_one_line_so_the_services_address_can_be_copied() -> None:
    out = io.StringIO()
    address = "https://127.0.0.1:8480/#token=" + "e" * 400

    with Progress(RunConfig(), console=Console(file=out, width=80, highlight=False)) as progress:
        progress.say(f"TransportMSP's service: {address}")

    assert any(address in line for line in out.getvalue().splitlines()), out.getvalue()
