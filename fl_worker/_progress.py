"""What `fedfabric run` shows while it works: steps, then a live table of rounds (rich)."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.table import Table

from fedfabric.fl_worker.config import RunConfig
from fedfabric.fl_worker.report import refusal_lines

WIDE = 160  # columns of output that is not a terminal


class Progress:
    """Prints each step with its elapsed time and a row per round as rounds commit."""

    def __init__(self, config: RunConfig, console: Console | None = None) -> None:
        self.config = config
        self.console = console or Console(highlight=False)
        if not self.console.is_terminal:  # a log or CI: never cut the table to 80 columns
            self.console.width = max(self.console.width, WIDE)
        self._status: Any = None
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        self._status = self.console.status("starting")
        self._status.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._status.__exit__(exc_type, exc, tb)

    def say(self, message: str) -> None:
        self._print(message)
        self._status.update(message)

    def _print(self, message: str) -> None:
        # soft wrap: a long line (the service's address with its token) stays one line
        line = f"[{time.monotonic() - self._started:6.1f}s] {message}"
        self.console.print(line, markup=False, soft_wrap=True)

    def round(self, outcome: Any) -> None:
        """One committed round: accuracy, loss, and what happened to the updates, by org."""
        orgs = outcome.per_org
        submitted = sum(s.submitted for s in orgs.values())
        accepted = sum(s.accepted for s in orgs.values())
        refused = {msp: s.refused for msp, s in orgs.items() if s.refused}
        by = {}
        for _, _, refusal in outcome.refused:
            for org in refusal.orgs:
                by[org] = by.get(org, 0) + 1
        refused_text = f"{sum(refused.values())}"
        if by:
            refused_text += " (by " + ", ".join(f"{k} {v}" for k, v in sorted(by.items())) + ")"
        acc = "-" if outcome.accuracy is None else f"{outcome.accuracy:.3f}"
        loss = "-" if outcome.loss is None else f"{outcome.loss:.3f}"
        unit, buffer = "round", ""
        if self.config.mode == "async":
            unit = "version"
            taus = [s["staleness"] for s in outcome.aggregate.get("staleness", ())]
            stale = sum(1 for e in outcome.aggregate.get("excluded", ()) if "stale" in e["reason"])
            buffer = (
                f"buffer {len(taus)} (staleness {min(taus, default=0)}..{max(taus, default=0)}, "
                f"{stale} too stale), "
            )
        self._print(
            f"{unit} {outcome.round}/{self.config.rounds}: accuracy {acc}  loss {loss}  "
            f"{buffer}updates submitted {submitted}, committed {accepted}, refused "
            f"{refused_text}, used {len(outcome.used)}, excluded {len(outcome.excluded)}  "
            f"[{outcome.timings.get('total', 0):.1f}s]"
        )
        self._status.update(f"{unit} {outcome.round + 1}/{self.config.rounds}: training")

    def summary(self, report: Any) -> None:
        table = Table(title=f"task {report.task}: {len(report.rounds)} rounds")
        for column in (
            "round",
            "accuracy",
            "plain FedAvg",
            "committed",
            "refused",
            "used",
            "excluded",
            "KB",
            "s",
        ):
            table.add_column(column, justify="right")
        for r in report.rounds:
            table.add_row(
                str(r.round),
                f"{r.accuracy:.3f}",
                "-" if r.baseline_accuracy is None else f"{r.baseline_accuracy:.3f}",
                str(r.committed),
                str(r.refused),
                str(r.used),
                str(r.excluded),
                f"{r.update_bytes / 1024:.1f}",
                f"{r.seconds:.1f}",
            )
        self._status.stop()
        self.console.print(table)
        led = report.ledger
        self.console.print(
            f"ledger: {led.blocks} blocks, {led.transactions} transactions "
            f"({led.valid_transactions} valid), {led.bytes:,} bytes; updates "
            f"{led.ledger_update_bytes:,} bytes vs {led.raw_update_bytes:,} raw float32"
        )
        refusals = refusal_lines(report.refusals())
        self.console.print("refusals: " + ("; ".join(refusals) if refusals else "none"))
        if report.baseline_final_accuracy is not None:
            self.console.print(
                f"final accuracy {report.rounds[-1].accuracy:.3f} on the ledger, "
                f"{report.baseline_final_accuracy:.3f} in memory with plain FedAvg and no "
                "validation (the 'plain FedAvg' column)"
            )
        scores = ", ".join(
            f"{org} {score:.2f}" for org, score in report.contribution_scores().items()
        )
        self.console.print(f"contribution scores: {scores}")
        self.console.print(
            f"final model {report.final_model_digest[:16]}…; wall time "
            f"{report.wall_seconds:.1f}s with the ledger"
            + (
                f", {report.baseline_seconds:.1f}s without"
                if report.baseline_seconds is not None
                else ""
            )
        )
