"""Auditing a task from the ledger alone: recompute every round, check a claimed model.

`audit_task` reads the ``GetAudit`` index, fetches each global model (``GetGlobalModel``)
and each update (``GetUpdate``) one by one, recomputes every aggregated round with the
contract's own `fedfabric.chaincode.fl.aggregate_round` and `verify_audit`, and reports per
round whether the committed model is the recomputed one, who contributed (per org) and which
updates the rule excluded, and why. `verify_model` tells whether a model file someone hands
you is the one the ledger committed.

Example::

    report = await audit_task(ledger, "digits")
    assert report.ok, report.problems
    check = await verify_model(ledger, "digits", Path("final-model.bin"))
    assert check.matches, check.reason
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedfabric.chaincode import fl
from fedfabric.fl_worker.ledger import Ledger


@dataclass(frozen=True)
class RoundAudit:
    """One round: committed vs recomputed model digest, contributors, exclusions.

    `contributors` maps each MSP id to the worker ids whose updates the round holds;
    `excluded` pairs each excluded worker id with the rule's reason. For a round without
    an aggregate, both digests are None and `match` is False.
    """

    round: int
    status: str
    committed_digest: str | None
    recomputed_digest: str | None
    match: bool
    contributors: Mapping[str, tuple[str, ...]]
    used: tuple[str, ...]
    excluded: tuple[tuple[str, str], ...]
    update_bytes: int


@dataclass(frozen=True)
class AuditReport:
    """The audit of a task: every round, and every problem `verify_audit` found.

    `ok` is true when there are no problems and every aggregated round matches.
    """

    task: str
    rounds: tuple[RoundAudit, ...]
    problems: tuple[str, ...]
    initial_model_digest: str

    @property
    def ok(self) -> bool:
        """No problems, and every aggregated round recomputes to its committed model."""
        return not self.problems and all(r.match for r in self.rounds if r.status == "aggregated")

    @property
    def final_model_digest(self) -> str | None:
        """Digest of the last committed global model (None before the first aggregate)."""
        aggregated = [r for r in self.rounds if r.status == "aggregated"]
        return aggregated[-1].committed_digest if aggregated else None


@dataclass(frozen=True)
class ModelCheck:
    """Whether a claimed model equals the ledger's global model after `round`."""

    round: int
    matches: bool
    claimed_digest: str | None
    ledger_digest: str
    reason: str


async def _fetch_all(
    ledger: Ledger, task: str, audit: Mapping[str, Any], concurrency: int
) -> tuple[dict[int, bytes], dict[tuple[int, str], bytes]]:
    slots = asyncio.Semaphore(concurrency)

    async def fetch(call: Any) -> bytes:
        async with slots:
            return await call()

    model_rounds = [0] + [e["round"] for e in audit["rounds"] if e["aggregate"]]
    update_keys = [
        (e["round"], u.get("id", u["worker"])) for e in audit["rounds"] for u in e["updates"]
    ]
    blobs = await asyncio.gather(
        *(fetch(lambda r=r: ledger.global_model(task, r)) for r in model_rounds),
        *(fetch(lambda k=k: ledger.update(task, k[0], k[1])) for k in update_keys),
    )
    models = dict(zip(model_rounds, blobs[: len(model_rounds)], strict=True))
    updates = dict(zip(update_keys, blobs[len(model_rounds) :], strict=True))
    return models, updates


async def audit_task(ledger: Ledger, task: str, *, concurrency: int = 16) -> AuditReport:
    """Recompute every round of `task` from the ledger; see the module docstring.

    Raises the ledger's query errors (e.g. `EvaluateError` with ``not-found`` for an
    unknown task). `concurrency` bounds the parallel ``GetUpdate`` / ``GetGlobalModel``.
    """
    audit = await ledger.audit(task)
    models, updates = await _fetch_all(ledger, task, audit, concurrency)
    problems, recomputed = await asyncio.to_thread(fl.recompute_audit, audit, models, updates)
    rounds = []
    for entry in audit["rounds"]:
        round_no, aggregate = entry["round"], entry["aggregate"] or {}
        committed = None
        if round_no in models and aggregate:
            committed = fl.read_header(models[round_no])["content_digest"]
        contributors: dict[str, list[str]] = {}
        for u in entry["updates"]:
            contributors.setdefault(u["msp_id"], []).append(u["worker"])
        rounds.append(
            RoundAudit(
                round=round_no,
                status=entry["state"]["status"],
                committed_digest=committed,
                recomputed_digest=recomputed.get(round_no),
                match=committed is not None and committed == recomputed.get(round_no),
                contributors={m: tuple(w) for m, w in sorted(contributors.items())},
                used=tuple(aggregate.get("used", ())),
                excluded=tuple((e["id"], e["reason"]) for e in aggregate.get("excluded", ())),
                update_bytes=sum(int(u.get("size", 0)) for u in entry["updates"]),
            )
        )
    return AuditReport(task, tuple(rounds), tuple(problems), audit["task"]["initial_model_digest"])


async def verify_model(
    ledger: Ledger, task: str, model: bytes | str | os.PathLike[str], *, round_no: int | None = None
) -> ModelCheck:
    """Compare a claimed model (encoded bytes, or a file of them) with the ledger's.

    `round_no` defaults to the last round with a committed aggregate (0: the initial
    model). The check is on the exact bytes; `reason` says what differs.
    """
    claimed = model if isinstance(model, bytes) else Path(model).read_bytes()
    if round_no is None:
        audit = await ledger.audit(task)
        done = [e["round"] for e in audit["rounds"] if e["aggregate"]]
        round_no = max(done, default=0)
    stored = await ledger.global_model(task, round_no)
    ledger_digest = fl.read_header(stored)["content_digest"]
    try:
        claimed_digest: str | None = fl.read_header(claimed)["content_digest"]
    except fl.FLError as exc:
        return ModelCheck(round_no, False, None, ledger_digest, f"not an encoded model: {exc}")
    if claimed == stored:
        return ModelCheck(round_no, True, claimed_digest, ledger_digest, "identical bytes")
    if claimed_digest != ledger_digest:
        reason = f"digest {claimed_digest[:16]}… differs from the ledger's {ledger_digest[:16]}…"
    else:
        reason = "same header digest but different bytes (tampered body or header)"
    return ModelCheck(round_no, False, claimed_digest, ledger_digest, reason)


__all__ = ["AuditReport", "ModelCheck", "RoundAudit", "audit_task", "verify_model"]
