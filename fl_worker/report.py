"""The report of a `fedfabric run`: tables per round, ledger figures, contributions, a plot.

Written into one folder: ``report.md`` (everything, readable), ``rounds.csv`` (one row per
round, ledger run and baseline side by side), ``summary.json`` (the numbers), ``accuracy.png``
(accuracy per round, ledger vs baseline) and ``final_model.bin`` (the global model as committed
on the ledger, for ``fedfabric audit --model``).

The baseline is the same run in memory (same data, workers, attackers and seed) aggregated by
plain FedAvg with no org-private validation: what the consortium would get without the
ledger's endorsement. Refusals are counted per organisation and per check (the contract's
check name, e.g. ``private-validation``), as the refusing organisations reported them to the
workers; ``?`` stands for refusals no organisation answered (the encoder's, before
submitting, or a transaction invalidated at commit).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RoundRow:
    """One round of the ledger run (and the same round of the baseline)."""

    round: int
    accuracy: float
    loss: float
    submitted: int
    committed: int
    refused: int
    refusals: dict[str, dict[str, int]] = field(default_factory=dict)  # MSP id → check → count
    used: int = 0
    excluded: int = 0
    update_bytes: int = 0
    seconds: float = 0.0
    baseline_accuracy: float | None = None
    baseline_seconds: float | None = None


@dataclass(frozen=True)
class LedgerFigures:
    """What the run left on the channel: blocks, transactions (valid or not) and bytes."""

    blocks: int
    transactions: int
    valid_transactions: int
    bytes: int
    raw_update_bytes: int  # the same updates as raw float32 tensors
    ledger_update_bytes: int  # the encoded updates the ledger stores


@dataclass(frozen=True)
class Report:
    task: str
    config: dict[str, Any]
    initial_accuracy: float
    rounds: Sequence[RoundRow]
    ledger: LedgerFigures
    contributions: dict[str, dict[str, int]]
    final_model: bytes
    final_model_digest: str
    baseline_final_accuracy: float | None
    wall_seconds: float
    baseline_seconds: float | None
    malicious: Sequence[str] = ()

    def refusals(self) -> dict[str, dict[str, int]]:
        """Refusals of the whole run: MSP id → check → count (see the module docstring)."""
        total: dict[str, dict[str, int]] = {}
        for r in self.rounds:
            for org, checks in r.refusals.items():
                for check, n in checks.items():
                    total.setdefault(org, {})[check] = total.setdefault(org, {}).get(check, 0) + n
        return {org: dict(sorted(checks.items())) for org, checks in sorted(total.items())}

    def contribution_scores(self) -> dict[str, float]:
        """Per org: its share of the updates the aggregates used (sums to 1)."""
        used = {org: c.get("used", 0) for org, c in self.contributions.items()}
        total = sum(used.values())
        return {org: (n / total if total else 0.0) for org, n in sorted(used.items())}


def write_report(report: Report, folder: Path) -> Path:
    """Write every file of the report into ``folder``; return the path of report.md."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "final_model.bin").write_bytes(report.final_model)
    _write_csv(report, folder / "rounds.csv")
    _plot(report, folder / "accuracy.png")
    summary = {k: v for k, v in asdict(report).items() if k not in ("final_model", "rounds")}
    summary["rounds"] = [asdict(r) for r in report.rounds]
    summary["contribution_scores"] = report.contribution_scores()
    summary["refusals"] = report.refusals()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    path = folder / "report.md"
    path.write_text(_markdown(report))
    return path


def _write_csv(report: Report, path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "round",
                "accuracy",
                "loss",
                "submitted",
                "committed",
                "refused",
                "refusals",
                "used",
                "excluded",
                "update_bytes",
                "seconds",
                "baseline_accuracy",
                "baseline_seconds",
            ]
        )
        for r in report.rounds:
            refusals = ";".join(
                f"{org} {check}={n}"
                for org, checks in sorted(r.refusals.items())
                for check, n in sorted(checks.items())
            )
            writer.writerow(
                [
                    r.round,
                    f"{r.accuracy:.4f}",
                    f"{r.loss:.4f}",
                    r.submitted,
                    r.committed,
                    r.refused,
                    refusals,
                    r.used,
                    r.excluded,
                    r.update_bytes,
                    f"{r.seconds:.2f}",
                    "" if r.baseline_accuracy is None else f"{r.baseline_accuracy:.4f}",
                    "" if r.baseline_seconds is None else f"{r.baseline_seconds:.2f}",
                ]
            )


def _plot(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rounds = [0] + [r.round for r in report.rounds]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ax.plot(
        rounds,
        [report.initial_accuracy] + [r.accuracy for r in report.rounds],
        "o-",
        label="on the ledger"
        + (
            ": endorsed after each org's validation"
            if report.config.get("validation_threshold") is not None
            else " (endorsed, committed updates)"
        ),
    )
    base = [r.baseline_accuracy for r in report.rounds]
    if all(b is not None for b in base):
        ax.plot(
            rounds,
            [report.initial_accuracy] + base,
            "s--",
            alpha=0.7,
            label="in memory: plain FedAvg, no validation (same attackers)",
        )
    ax.set_xlabel("round")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"fedfabric task {report.task}")
    ax.legend(loc="lower right")
    refused = "; ".join(refusal_lines(report.refusals())) or "none"
    fig.text(0.5, 0.01, f"updates refused, by organisation: {refused}", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def refusal_lines(refusals: dict[str, dict[str, int]]) -> list[str]:
    """One line per organisation: ``Org2MSP: private-validation 14, norm 1``."""
    return [
        f"{org}: " + ", ".join(f"{check} {n}" for check, n in sorted(checks.items()))
        for org, checks in sorted(refusals.items())
    ]


def _async_note(c: dict[str, Any]) -> list[str]:
    """For an asynchronous run: each row of the tables is a model version."""
    if c.get("mode") != "async":
        return []
    from fedfabric.fl_worker.config import RunConfig

    size = RunConfig.from_dict(c).versions_buffer
    return [
        f"Asynchronous (FedBuff, {c['async_order']} arrival order): each round below is a "
        f"model version, made from a buffer of {size} updates (max staleness "
        f"{c['max_staleness']}, staleness exponent {c['staleness_exponent']}).",
        "",
    ]


def _markdown(report: Report) -> str:
    c = report.config
    lines = [
        f"# fedfabric run: task `{report.task}`",
        "",
        f"{c.get('dataset')} · {c.get('orgs')} orgs × {c.get('workers_per_org')} workers · "
        f"{c.get('rounds')} rounds · strategy {c.get('strategy')} · "
        f"attack {c.get('attack') or 'none'} ({len(report.malicious)} malicious) · "
        f"org validation "
        + (
            "off"
            if c.get("validation_threshold") is None
            else f"threshold {c['validation_threshold']:g}"
        )
        + f" · {c.get('quantization')}/{c.get('compression')} · seed {c.get('seed')}",
        "",
        f"Final accuracy **{report.rounds[-1].accuracy:.3f}** on the ledger"
        + (
            f", {report.baseline_final_accuracy:.3f} in memory with plain FedAvg and no validation"
            if report.baseline_final_accuracy is not None
            else ""
        )
        + f" (initial model {report.initial_accuracy:.3f}).",
        "",
        f"Final global model digest `{report.final_model_digest}`; check it with "
        f"`fedfabric audit --task {report.task} --model final_model.bin`.",
        "",
        *_async_note(c),
        "## Rounds",
        "",
        "Baseline: the same run in memory (same data, workers, attackers and seed), "
        "aggregated by plain FedAvg without org-private validation.",
        "",
        "| round | accuracy | baseline | loss | submitted | committed | refused (by org) "
        "| used | excluded | update bytes | s (ledger) | s (baseline) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rounds:
        by = ", ".join(f"{org} {sum(c.values())}" for org, c in sorted(r.refusals.items())) or "-"
        base = "-" if r.baseline_accuracy is None else f"{r.baseline_accuracy:.3f}"
        bsec = "-" if r.baseline_seconds is None else f"{r.baseline_seconds:.2f}"
        lines.append(
            f"| {r.round} | {r.accuracy:.3f} | {base} | {r.loss:.3f} | {r.submitted} | "
            f"{r.committed} | {r.refused} ({by}) | {r.used} | {r.excluded} | "
            f"{r.update_bytes} | {r.seconds:.2f} | {bsec} |"
        )
    led = report.ledger
    ratio = led.ledger_update_bytes / led.raw_update_bytes if led.raw_update_bytes else 0.0
    lines += [
        "",
        "## What the ledger added, and what it cost",
        "",
        "| figure | value |",
        "|---|---|",
        f"| blocks | {led.blocks} |",
        f"| transactions (valid) | {led.transactions} ({led.valid_transactions}) |",
        f"| bytes in those blocks | {led.bytes:,} |",
        f"| update bytes on the ledger vs raw float32 | {led.ledger_update_bytes:,} vs "
        f"{led.raw_update_bytes:,} ({ratio:.2f}×) |",
        f"| wall time with the ledger | {report.wall_seconds:.1f} s |",
    ]
    if report.baseline_seconds is not None:
        lines.append(f"| wall time in memory (same training) | {report.baseline_seconds:.1f} s |")
    lines += ["", "## Refusals per organisation", ""]
    lines += [f"- {line}" for line in refusal_lines(report.refusals())] or ["None."]
    lines += [
        "",
        "## Contributions per organisation",
        "",
        "| org | updates | samples | used | excluded | score |",
        "|---|---|---|---|---|---|",
    ]
    scores = report.contribution_scores()
    for org, counts in sorted(report.contributions.items()):
        lines.append(
            f"| {org} | {counts.get('updates', 0)} | {counts.get('samples', 0)} | "
            f"{counts.get('used', 0)} | {counts.get('excluded', 0)} | "
            f"{scores.get(org, 0.0):.2f} |"
        )
    if report.malicious:
        lines += ["", f"Malicious workers (experiment): {', '.join(report.malicious)}."]
    lines += ["", "![accuracy per round](accuracy.png)", ""]
    return "\n".join(lines)
