"""Recomputing rounds: the one function the contract and any auditor use to aggregate.

`aggregate_round` turns a base model and a round's submissions into the new encoded model
and its record; ``AdvanceRound`` stores exactly that. `verify_audit` takes the index of
``GetAudit`` with the models and updates it lists (fetched one by one, so no response grows
with the round) and recomputes every aggregated round from the initial model, so anyone
holding a copy of the ledger can check every global model without trusting any peer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from fedfabric.chaincode.fl._aggregation import Update
from fedfabric.chaincode.fl._encoding import decode_update, encode_model, read_header
from fedfabric.chaincode.fl._errors import AggregationError, FLError
from fedfabric.chaincode.fl._task import TaskSpec


def aggregate_round(
    spec: TaskSpec,
    base: bytes,
    submissions: Sequence[tuple[Mapping, bytes]],
    factors: Sequence[int] | None = None,
) -> tuple[bytes, dict]:
    """Aggregate `submissions` (update record, encoded update) onto the encoded `base` model.

    Returns the encoded new model and its record (rule, parameters, digests, updates used,
    excluded and clipped). When the rule cannot run on these updates (`AggregationError`: the
    new model would leave the fixed-point range, say), the round still ends: the model stays
    `base`, every update is excluded with the reason, and the record says ``failed``, so a
    round can always be advanced and the failure is on the record. Raises `UpdateError` if a
    submission does not decode (the contract checked each at submission, so only an altered
    copy given to an auditor can).

    An update of an asynchronous task is known by its ``id`` (``<worker>#<n>``), which its
    entry then carries; `factors` are the staleness factors (`fx.scale`) of its buffer.
    """
    keys = ("digest", "num_samples", "worker") + (("id",) if spec.mode == "async" else ())
    entries = [{k: r[k] for k in keys} for r, _ in submissions]
    updates = [
        Update(
            r.get("id", r["worker"]),
            decode_update(blob, spec.layout),
            r["num_samples"],
            r["msp_id"],
        )
        for r, blob in submissions
    ]
    rule = spec.build_rule()
    try:
        result = rule.aggregate(decode_update(base, spec.layout), updates, spec.weighting, factors)
    except AggregationError as exc:
        reason = f"aggregation failed, the global model is unchanged: {exc}"
        outcome: dict = {"clipped": [], "excluded": [{"id": u.id, "reason": reason}
                         for u in updates], "failed": str(exc), "used": []}  # fmt: skip
        model = base
    else:
        outcome, model = result.record(), encode_model(result.model, spec.layout)
    record = {
        **outcome,
        "base_model_digest": read_header(base)["content_digest"],
        "model_digest": read_header(model)["content_digest"],
        "params": rule.params(),
        "rule": rule.name,
        "updates": entries,
        "weighting": spec.weighting,
    }
    return model, record


def verify_audit(
    audit: Mapping, models: Mapping[int, bytes], updates: Mapping[tuple[int, str], bytes]
) -> list[str]:
    """Recompute every aggregated round of a ``GetAudit`` index; return the problems found.

    `models` maps a round to its encoded global model (``GetGlobalModel``; 0 is the initial
    model) and `updates` maps ``(round, worker)`` to the encoded update (``GetUpdate``). For
    an asynchronous task rounds are versions and the key is ``(version, update id)``: each
    version is recomputed from the one before with its buffer's staleness factors. An
    empty list means every stored global model and aggregate record is exactly what the
    task's rule gives from the stored updates.

    Example (a task whose index fits one page; `fedfabric.fl_worker.ledger` joins pages)::

        audit = json.loads(await contract.evaluate("GetAudit", ["digits", "1"]))
        models = {r: await contract.evaluate("GetGlobalModel", ["digits", str(r)])
                  for r in [0] + [e["round"] for e in audit["rounds"] if e["aggregate"]]}
        updates = {(e["round"], u["worker"]): await contract.evaluate(
                       "GetUpdate", ["digits", str(e["round"]), u["worker"]])
                   for e in audit["rounds"] for u in e["updates"]}
        assert verify_audit(audit, models, updates) == []
    """
    return recompute_audit(audit, models, updates)[0]


def recompute_audit(
    audit: Mapping, models: Mapping[int, bytes], updates: Mapping[tuple[int, str], bytes]
) -> tuple[list[str], dict[int, str]]:
    """`verify_audit`'s problems, and the content digest of each round's recomputed model
    (every round aggregated once)."""
    problems: list[str] = []
    recomputed: dict[int, str] = {}
    stored = audit["task"]
    spec = TaskSpec.from_json(stored["spec"])
    previous = models.get(0, b"")
    if not previous or read_header(previous)["content_digest"] != stored["initial_model_digest"]:
        problems.append("initial model digest differs from the task record")
    for entry in audit["rounds"]:
        round_no, aggregate = entry["round"], entry["aggregate"]
        if aggregate is None:
            continue
        submissions = []
        for record in entry["updates"]:
            key = record.get("id", record["worker"])
            blob = updates.get((round_no, key), b"")
            if hashlib.sha256(blob).hexdigest() != record["sha256"]:
                problems.append(f"round {round_no}: update of {key} altered")
            submissions.append((record, blob))
        try:
            if spec.mode == "async":
                # Imported here: _async builds on this module.
                from fedfabric.chaincode.fl._async import aggregate_version

                model, expected = aggregate_version(spec, previous, round_no - 1, submissions)
            else:
                model, expected = aggregate_round(spec, previous, submissions)
        except FLError as exc:
            problems.append(f"round {round_no}: cannot recompute: {exc}")
            continue
        recomputed[round_no] = read_header(model)["content_digest"]
        stored_model = models.get(round_no, b"")
        if model != stored_model:
            problems.append(f"round {round_no}: stored model differs from the recomputed one")
        for key in sorted(expected):
            if aggregate.get(key) != expected[key]:
                problems.append(f"round {round_no}: aggregate field {key!r} differs")
        previous = stored_model
    return problems, recomputed
