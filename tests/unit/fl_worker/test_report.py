"""The report folder: the ledger run next to plain FedAvg without validation, and the
refusals per organisation with their reasons."""

from __future__ import annotations

import csv
import json

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.report import LedgerFigures, Report, RoundRow, write_report
from fedfabric.fl_worker.run import baseline_config

ROUNDS = [
    RoundRow(round=1, accuracy=0.70, loss=0.9, submitted=9, committed=7, refused=2,
             refusals={"Org1MSP": {"private-validation": 1}, "Org3MSP": {"private-validation": 1}},
             baseline_accuracy=0.40),
    RoundRow(round=2, accuracy=0.85, loss=0.5, submitted=9, committed=6, refused=3,
             refusals={"Org1MSP": {"private-validation": 1, "norm": 1},
                       "Org3MSP": {"private-validation": 1}},
             baseline_accuracy=0.55),
]  # fmt: skip


def report() -> Report:
    return Report(
        task="digits-0123456789",
        config=RunConfig().to_dict(),
        initial_accuracy=0.1,
        rounds=ROUNDS,
        ledger=LedgerFigures(4, 16, 16, 100_000, 80_000, 80_000),
        contributions={"Org1MSP": {"used": 3}, "Org2MSP": {"used": 6}, "Org3MSP": {"used": 4}},
        final_model=b"model",
        final_model_digest="ab" * 32,
        baseline_final_accuracy=0.55,
        wall_seconds=12.0,
        baseline_seconds=1.0,
        malicious=("org1-worker3", "org3-worker2"),
    )


def test_refusals_add_up_per_organisation_and_check() -> None:
    assert report().refusals() == {
        "Org1MSP": {"norm": 1, "private-validation": 2},
        "Org3MSP": {"private-validation": 2},
    }


def test_the_report_shows_the_ledger_run_next_to_plain_fedavg_and_the_refusals(tmp_path) -> None:
    write_report(report(), tmp_path)

    text = (tmp_path / "report.md").read_text()
    rows = list(csv.DictReader((tmp_path / "rounds.csv").read_text().splitlines()))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "attack gaussian (2 malicious) · org validation threshold 1" in text
    assert "0.850** on the ledger, 0.550 in memory with plain FedAvg and no validation" in text
    assert "- Org1MSP: norm 1, private-validation 2\n- Org3MSP: private-validation 2" in text
    assert "| 2 | 0.850 | 0.550 | 0.500 | 9 | 6 | 3 (Org1MSP 2, Org3MSP 1) |" in text
    assert [(r["accuracy"], r["baseline_accuracy"]) for r in rows] == [
        ("0.7000", "0.4000"),
        ("0.8500", "0.5500"),
    ]
    assert (
        rows[1]["refusals"]
        == "Org1MSP norm=1;Org1MSP private-validation=1;Org3MSP private-validation=1"
    )
    assert summary["refusals"] == report().refusals()
    assert (tmp_path / "accuracy.png").stat().st_size > 0


def test_the_baseline_is_the_same_run_with_plain_fedavg_and_no_validation() -> None:
    config = RunConfig(
        strategy="multi-krum", strategy_params={"f": 2, "m": 5}, min_updates=7, weighting="samples"
    )

    baseline = baseline_config(config)

    assert (baseline.strategy, dict(baseline.strategy_params)) == ("fedavg", {})
    assert (baseline.min_updates, baseline.validation_threshold) == (None, None)
    assert baseline.weighting == "samples"  # FedAvg as Flower computes it
    assert (
        baseline.replace(strategy="multi-krum", strategy_params={"f": 2, "m": 5}).replace(
            min_updates=7, validation_threshold=1.0
        )
        == config
    )
