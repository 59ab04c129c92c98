"""What `fedfabric serve` shows of the FL tasks, read from the ledger and kept while true.

A round's page (``GetRoundUpdates``: state, committed updates, declines, aggregate) no longer
changes once the round is aggregated, so it is kept; the open round's page is read again
after any event of its task, or after `FRESH` seconds. From the pages come each round's
summary (committed, refused and excluded updates, per organisation), the contributions per
organisation and per worker, and each round's metrics: the loss and accuracy of the round's
global model on this organisation's own validation data (`fl.numpy_metrics`), computed here
and never served raw. The audit of a task (`audit_task`: every round recomputed from the
ledger) runs in the background after a round is aggregated, one at a time per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedfabric.chaincode import fl
from fedfabric.fl_worker.audit import AuditReport, audit_task
from fedfabric.fl_worker.ledger import Ledger

FRESH = 2.0  # seconds an open round's page is served without reading it again


class NoRounds(Exception):
    """The task is asynchronous (FedBuff): it has model versions, not rounds."""


class Views:
    """Tasks, rounds, contributions, models and audits of the ledger `ledger` reads;
    `validation`: this organisation's validation data (a ``.npz`` file of
    `fl.write_validation_data`, or a folder of ``<task>.npz``), None for no metrics."""

    def __init__(self, ledger: Ledger, validation: Path | None = None) -> None:
        self.ledger = ledger
        self.validation = validation
        self._tasks: dict[str, dict[str, Any]] = {}  # task records (they never change)
        self._pages: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
        self._metrics: dict[tuple[str, int], dict[str, float] | None] = {}
        self._audits: dict[str, AuditReport] = {}
        self._auditing: dict[str, asyncio.Task[None]] = {}
        self._data: dict[str, Mapping[str, np.ndarray] | None] = {}

    def on_message(self, message: Mapping[str, Any]) -> None:
        """An event was logged: its task's open round is read again next time."""
        task = (
            (message.get("payload") or {}).get("task") if message["kind"] == "chaincode" else None
        )
        for key, (_, page) in list(self._pages.items()):
            if key[0] == task and page["state"]["status"] != "aggregated":
                del self._pages[key]

    async def tasks(self) -> list[dict[str, Any]]:
        listed = await self.ledger.tasks()
        for entry in listed:
            if entry["mode"] == "sync":
                rounds = await self._round_pages(entry["id"], entry["rounds"])
                entry["round"], entry["status"] = _progress(rounds, entry["rounds"])
            else:
                entry["round"], entry["status"] = None, "asynchronous"
        return listed

    async def task(self, task: str) -> dict[str, Any]:
        """The task record (`LookupError` naming it when there is no such task)."""
        if task not in self._tasks:
            record = await self.ledger.task(task)
            if record is None:
                raise LookupError(f"no task {task!r} on this channel")
            self._tasks[task] = record
        return self._tasks[task]

    async def _planned(self, task: str) -> int:
        """The task's rounds (`NoRounds` for an asynchronous one)."""
        spec = (await self.task(task))["spec"]
        if spec.get("mode", "sync") != "sync":
            raise NoRounds(
                f"task {task!r} is asynchronous: it has model versions, not rounds "
                "(the service shows the rounds of synchronous tasks)"
            )
        return int(spec["rounds"])

    async def rounds(self, task: str) -> dict[str, Any]:
        planned = await self._planned(task)
        pages = await self._round_pages(task, planned)
        rows = []
        for page in pages:
            row = _summary(page)
            if row["status"] == "aggregated":
                row["metrics"] = await self._round_metrics(task, page["round"])
                audit = self._audits.get(task)
                row["audit"] = _audit_state(audit, page["round"]) if audit else None
            rows.append(row)
        if any(r["status"] == "aggregated" and r["audit"] is None for r in rows):
            self._start_audit(task)
        current, status = _progress(pages, planned)
        return {"task": task, "rounds_planned": planned, "round": current, "status": status,
                "rounds": rows}  # fmt: skip

    async def round(self, task: str, round_no: int) -> dict[str, Any]:
        planned = await self._planned(task)
        if not 1 <= round_no <= planned:
            raise LookupError(f"task {task!r} has rounds 1 to {planned}, not {round_no}")
        page = await self._page(task, round_no)
        return {"task": task, "round": round_no, "status": page["state"]["status"],
                "updates": _updates(page), "aggregate": page.get("aggregate")}  # fmt: skip

    async def contributions(self, task: str) -> dict[str, Any]:
        planned = await self._planned(task)
        orgs: dict[str, dict[str, int]] = {}
        workers: dict[str, dict[str, Any]] = {}
        for page in await self._round_pages(task, planned):
            for u in _updates(page):
                org = orgs.setdefault(u["msp_id"], _counts(samples=0))
                worker = workers.setdefault(u["worker"], {"msp_id": u["msp_id"], **_counts()})
                for counts in (org, worker):
                    counts["updates"] += u["state"] != "refused"
                    if u["state"] in ("used", "excluded", "refused"):
                        counts[u["state"]] += 1
                org["samples"] += u["num_samples"] or 0
        return {"task": task, "orgs": dict(sorted(orgs.items())),
                "workers": dict(sorted(workers.items()))}  # fmt: skip

    async def model(self, task: str, round_no: int) -> bytes:
        """The encoded global model after `round_no` (0: the initial one)."""
        await self.task(task)
        return await self.ledger.global_model(task, round_no)

    async def audit(self, task: str, round_no: int) -> dict[str, Any]:
        """Round `round_no` recomputed from the ledger (the task's audit, run now if the one
        kept does not cover it yet)."""
        page = await self._page(task, round_no)
        running = self._auditing.get(task)
        if not self._covers(task, round_no) and running is not None and not running.done():
            await asyncio.shield(running)  # the background audit may cover it: not twice
        if not self._covers(task, round_no):
            self._audits[task] = await audit_task(self.ledger, task)
        report = self._audits[task]
        entry = next((r for r in report.rounds if r.round == round_no), None)
        if entry is None or page["state"]["status"] != "aggregated":
            return {"task": task, "round": round_no, "status": page["state"]["status"],
                    "match": None, "reason": "the round is not aggregated yet"}  # fmt: skip
        return {
            "task": task, "round": round_no, "status": entry.status, "match": entry.match,
            "committed_digest": entry.committed_digest,
            "recomputed_digest": entry.recomputed_digest,
            "contributors": {m: list(w) for m, w in entry.contributors.items()},
            "used": list(entry.used),
            "excluded": [{"worker": w, "reason": r} for w, r in entry.excluded],
            "problems": [p for p in report.problems if f"round {round_no}" in p],
        }  # fmt: skip

    def _covers(self, task: str, round_no: int) -> bool:
        report = self._audits.get(task)
        return report is not None and any(r.round == round_no for r in report.rounds)

    async def _round_pages(self, task: str, planned: int) -> list[dict[str, Any]]:
        """The pages of the rounds opened so far (round 1 on, to the first new one)."""
        pages = []
        for round_no in range(1, planned + 1):
            page = await self._page(task, round_no)
            if page["state"]["status"] == "new":
                break
            pages.append(page)
        return pages

    async def _page(self, task: str, round_no: int) -> dict[str, Any]:
        kept = self._pages.get((task, round_no))
        if kept is not None and (
            kept[1]["state"]["status"] == "aggregated" or time.monotonic() - kept[0] < FRESH
        ):
            return kept[1]
        page = await self.ledger.round_updates(task, round_no)
        self._pages[(task, round_no)] = (time.monotonic(), page)
        return page

    async def _round_metrics(self, task: str, round_no: int) -> dict[str, float] | None:
        if (task, round_no) not in self._metrics:
            data = self._validation_data(task)
            metrics = None
            if data is not None:
                raw = await self.ledger.global_model(task, round_no)
                spec = (await self.task(task))["spec"]
                model = fl.decode_update(raw, fl.Layout.from_json(spec["layout"]))
                with contextlib.suppress(ValueError, KeyError):  # data of another model
                    loss, accuracy = await asyncio.to_thread(fl.numpy_metrics, model, data)
                    metrics = {"loss": round(loss, 6), "accuracy": round(accuracy, 6)}
            self._metrics[(task, round_no)] = metrics
        return self._metrics[(task, round_no)]

    def _validation_data(self, task: str) -> Mapping[str, np.ndarray] | None:
        if self.validation is None:
            return None
        path = self.validation / f"{task}.npz" if self.validation.is_dir() else self.validation
        if str(path) not in self._data:
            self._data[str(path)] = None
            if path.is_file():
                with np.load(path, allow_pickle=False) as archive:
                    self._data[str(path)] = {k: archive[k] for k in archive.files}
        return self._data[str(path)]

    def _start_audit(self, task: str) -> None:
        running = self._auditing.get(task)
        if running is not None and not running.done():
            return

        async def run() -> None:
            with contextlib.suppress(Exception):  # shown as "not audited yet"; the route says why
                self._audits[task] = await audit_task(self.ledger, task)

        self._auditing[task] = asyncio.ensure_future(run())

    async def close(self) -> None:
        for running in self._auditing.values():
            running.cancel()
        await asyncio.gather(*self._auditing.values(), return_exceptions=True)


def _counts(**extra: int) -> dict[str, int]:
    return {"updates": 0, "used": 0, "excluded": 0, "refused": 0, **extra}


def _updates(page: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A round page's updates, each ``used``, ``excluded`` (by the rule, with its reason) or
    ``committed`` (not aggregated yet), then its declines: ``refused``, with their reason."""
    aggregate = page.get("aggregate") or {}
    used = set(aggregate.get("used", ()))
    excluded = {e["id"]: e["reason"] for e in aggregate.get("excluded", ())}
    updates = []
    for u in page["updates"]:
        state = "used" if u["worker"] in used else "committed"
        state = "excluded" if u["worker"] in excluded else state
        updates.append({"worker": u["worker"], "msp_id": u["msp_id"], "state": state,
                        "reason": excluded.get(u["worker"]), "num_samples": u["num_samples"],
                        "digest": u.get("digest"), "tx_id": u["tx_id"]})  # fmt: skip
    for d in page.get("declined", ()):
        updates.append({"worker": d["worker"], "msp_id": d["worker"].split(":")[0],
                        "state": "refused", "reason": d["reason"], "num_samples": None,
                        "digest": None, "tx_id": d["declined_tx"]})  # fmt: skip
    return updates


def _summary(page: Mapping[str, Any]) -> dict[str, Any]:
    """One row of a task's rounds: counts in all and per organisation (`_updates`)."""
    orgs: dict[str, dict[str, int]] = {}
    for u in _updates(page):
        org = orgs.setdefault(u["msp_id"], {"committed": 0, "refused": 0, "excluded": 0})
        org["refused" if u["state"] == "refused" else "committed"] += 1
        org["excluded"] += u["state"] == "excluded"
    counts = {k: sum(o[k] for o in orgs.values()) for k in ("committed", "refused", "excluded")}
    aggregate = page.get("aggregate") or {}
    return {
        "round": page["round"],
        "status": page["state"]["status"],
        **counts,
        "orgs": dict(sorted(orgs.items())),
        "model_digest": aggregate.get("model_digest"),
        "metrics": None,
        "audit": None,
    }


def _progress(pages: list[dict[str, Any]], planned: int) -> tuple[int, str]:
    """(the open round, or the last one; "running" or "finished")."""
    aggregated = sum(p["state"]["status"] == "aggregated" for p in pages)
    if aggregated >= planned:
        return planned, "finished"
    return aggregated + 1, "running"


def _audit_state(report: AuditReport, round_no: int) -> str | None:
    entry = next((r for r in report.rounds if r.round == round_no), None)
    if entry is None or entry.committed_digest is None:
        return None
    return "ok" if entry.match else "mismatch"


__all__ = ["NoRounds", "Views"]
