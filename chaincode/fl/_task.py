"""The task specification given to ``CreateTask``, parsed and checked.

Task JSON (fields without a default are required)::

    {
      "id": "digits",                              # [A-Za-z0-9._-], at most 64 characters
      "layout": {"encoding": 1, "dtype": "float32",
                 "tensors": [{"name": "fc.weight", "shape": [10, 64]}, ...]},
      "rounds": 20,
      "min_updates": 3,                            # per round, before AdvanceRound may end it
      "max_samples": 1000000,                      # default 1000000: the most samples one
                                                   # update may claim (its aggregation weight)
      "norm_bound": 10.0,                          # L2 bound of each update, <= 32768
      "max_update_bytes": 1000000,                 # at most MAX_UPDATE_BYTES
      "aggregation": {"rule": "median", "params": {}},
      "weighting": "org",                          # default "org": the rule runs over one
                                                   # merged update per organisation; or
                                                   # "samples" / "equal" (per update)
      "allowed_orgs": ["Org1MSP", "Org2MSP", "Org3MSP"],
      "max_workers_per_org": 10,                   # default 10, at most 100000: the workers
                                                   # (or devices) each org's admin may register
      "batch_refusal": "entry",                    # default "entry": an invalid entry of a
                                                   # device batch (SubmitBatch) is refused
                                                   # alone; "batch": the whole batch is
      "coordinators": ["Org1MSP"],                 # default []: the creating organisation;
                                                   # whose admins may advance rounds
      "validation_threshold": 0.05,                # default null: no org-private validation;
                                                   # else the largest increase of an org's
                                                   # validation loss an update may cause
      "own_org_threshold": 0.1,                    # default null: validation_threshold; the
                                                   # same for updates of the org's own workers
      "model": {"arch": "mlp", "sizes": [64, 32, 10]},  # default null; else the model spec
                                                   # (`model_layout`), which must give `layout`
      "mode": "async",                             # default "sync": rounds (see below)
      "buffer_size": 5,                            # async only (required): K updates a version
      "max_staleness": 3,                          # async only (required): versions an update
                                                   # may lag behind the version it makes
      "staleness": {"rule": "polynomial", "exponent": 0.5}   # async only; this is the
                                                   # default; or {"rule": "constant"}
    }

Modes: ``sync`` (the default) runs rounds (``AdvanceRound``). ``async`` is buffered
asynchronous aggregation (FedBuff): ``rounds`` is the number of model versions to produce,
each aggregated from ``buffer_size`` committed updates, each update damped by its staleness
(`fedfabric.chaincode.fl._async`). An async task's ``buffer_size`` must be reachable (at most
``len(allowed_orgs) * max_workers_per_org``, since a worker has one pending update at a time)
and must always give the rule enough rows: with ``weighting: "org"`` a buffer of K updates
spans at least ``ceil(K / max_workers_per_org)`` organisations, so K must exceed
``(rule minimum - 1) * max_workers_per_org``.

The initial global model travels as a separate bytes argument of ``CreateTask``.

Who submits: only workers that their own organisation's admin registered for the task
(``RegisterWorkers``), at most ``max_workers_per_org`` per organisation over the task's life,
each at most once per round. So a round holds at most ``len(allowed_orgs) *
max_workers_per_org`` updates (`TaskSpec.max_round_updates`), and `TaskSpec.from_json` refuses
a task whose aggregation at that size could exceed `AGGREGATION_BUDGET_S` (by the rule's
`Rule.cost`) or whose sample weights could overflow the fixed-point sums. ``allowed_orgs``
are the founding organisations; the task's driving admins may admit more while it runs
(``AdmitOrganisation``, which leaves the stored spec as it is): every size rule then counts
them too (`TaskSpec.with_orgs`), and an admission the rules would refuse is refused.

The default is the safe one against one malicious organisation of three: with
``weighting: "org"`` an organisation has one row however many identities it registers, and
``median`` over three rows ignores the one that is off.

`MAX_UPDATE_BYTES` is the largest update (and float32 global model) a transaction can carry
on our network; `TaskSpec.from_json` refuses a ``max_update_bytes`` above it and a layout whose
float32 model encoding exceeds it (see `fedfabric.chaincode.fl._contract` for the measurement).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fedfabric.chaincode.fl._aggregation import (
    AGGREGATION_BUDGET_S,
    WEIGHTINGS,
    Rule,
    make_rule,
)
from fedfabric.chaincode.fl._encoding import Layout, encoded_size
from fedfabric.chaincode.fl._errors import AggregationError, TaskError, UpdateError
from fedfabric.chaincode.fl._fixedpoint import MAX_ABS, MAX_TOTAL_WEIGHT
from fedfabric.chaincode.fl._models import model_layout

# Measured on Fabric 3.1.5 and the 3.0 snapshot 695dd57e (fedfabric.chaincode.fl._contract): a
# 50.0 MB update commits, 52 MB does not, because its bytes travel twice per transaction and
# message.
MAX_UPDATE_BYTES = 50_000_000
# The default bound on the samples an update may claim (a task's max_samples stays below
# 2**31). Claims weigh FedAvg and Multi-Krum: the bound keeps weights and their sum finite and
# far from overflow, but does not stop one large claim outweighing small ones.
DEFAULT_MAX_SAMPLES = 1_000_000
BATCH_REFUSALS = ("entry", "batch")
"""A task's ``batch_refusal``: refuse an invalid entry of a device batch alone (default), or
the whole batch."""
DEFAULT_MAX_WORKERS_PER_ORG = 10
MAX_WORKERS_PER_ORG = 100_000

_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FIELDS = {
    "id",
    "layout",
    "rounds",
    "min_updates",
    "max_samples",
    "norm_bound",
    "max_update_bytes",
    "aggregation",
    "weighting",
    "allowed_orgs",
    "max_workers_per_org",
    "coordinators",
    "validation_threshold",
    "own_org_threshold",
    "model",
    "mode",
    "buffer_size",
    "max_staleness",
    "staleness",
    "batch_refusal",
}
MODES = ("sync", "async")
STALENESS_RULES = ("polynomial", "constant")
DEFAULT_STALENESS = {"exponent": 0.5, "rule": "polynomial"}
MAX_STALENESS_EXPONENT = 4.0
MAX_STALENESS = 1000
_ASYNC_FIELDS = ("buffer_size", "max_staleness", "staleness")


def _int(obj: Mapping, name: str, low: int) -> int:
    value = obj.get(name)
    if type(value) is not int or value < low:
        raise TaskError(name, f"must be an integer >= {low}, got {value!r}")
    return value


def _float(obj: Mapping, name: str, high: float) -> float:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
        raise TaskError(name, f"must be a number in (0, {high:g}], got {value!r}")
    return float(value)


def _strings(obj: Mapping, name: str) -> tuple[str, ...]:
    value = obj.get(name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise TaskError(name, f"must be a non-empty list of strings, got {value!r}")
    return tuple(sorted(set(value)))


def _threshold(obj: Mapping, name: str) -> float | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise TaskError(name, f"must be null or >= 0, got {value!r}")
    return float(value)


def _model(value: object, layout: Layout) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TaskError("model", f"must be null or a model spec object, got {value!r}")
    try:
        described = model_layout(value)
    except TaskError as exc:
        raise TaskError("model", exc.detail) from exc
    if described.to_json() != layout.to_json():
        raise TaskError("model", "the model spec's tensor layout differs from 'layout'")
    return json.loads(json.dumps(value, sort_keys=True))


def _staleness(value: object) -> tuple[tuple[str, Any], ...]:
    """The staleness rule as sorted (key, value) pairs; `TaskError` naming what is wrong."""
    if value is None:
        value = DEFAULT_STALENESS
    if not isinstance(value, Mapping) or value.get("rule") not in STALENESS_RULES:
        raise TaskError(
            "staleness",
            f"must be {{'rule': 'polynomial', 'exponent': a}} or {{'rule': 'constant'}}, "
            f"got {value!r}",
        )
    if value["rule"] == "constant":
        if set(value) != {"rule"}:
            raise TaskError("staleness", f"rule 'constant' takes no parameters, got {value!r}")
        return (("rule", "constant"),)
    exponent = value.get("exponent", DEFAULT_STALENESS["exponent"])
    if set(value) - {"rule", "exponent"} or (
        isinstance(exponent, bool)
        or not isinstance(exponent, int | float)
        or not 0 <= exponent <= MAX_STALENESS_EXPONENT
    ):
        raise TaskError(
            "staleness",
            f"rule 'polynomial' takes one parameter 'exponent', a number in "
            f"[0, {MAX_STALENESS_EXPONENT:g}], got {value!r}",
        )
    return (("exponent", float(exponent)), ("rule", "polynomial"))


@dataclass(frozen=True)
class TaskSpec:
    """A validated FL task. Build with `TaskSpec.from_json`; `to_json` is canonical."""

    id: str
    layout: Layout
    rounds: int
    min_updates: int
    max_samples: int
    norm_bound: float
    max_update_bytes: int
    rule: str
    rule_params: tuple[tuple[str, Any], ...]
    weighting: str
    allowed_orgs: tuple[str, ...]
    max_workers_per_org: int
    coordinators: tuple[str, ...]
    validation_threshold: float | None
    own_org_threshold: float | None
    model: Mapping[str, Any] | None = None
    mode: str = "sync"
    buffer_size: int = 0
    max_staleness: int = 0
    staleness: tuple[tuple[str, Any], ...] = ()
    batch_refusal: str = "entry"

    @classmethod
    def from_json(cls, obj: object) -> TaskSpec:
        """Parse and check a task JSON object. Raises `TaskError` naming the field."""
        if not isinstance(obj, Mapping):
            raise TaskError("task", "must be a JSON object")
        for key in sorted(obj, key=str):
            try:
                json.dumps(obj[key], allow_nan=False).encode("utf-8")
                json.dumps(obj[key], ensure_ascii=False).encode("utf-8")
            except (ValueError, UnicodeEncodeError) as exc:
                field = str(key).encode("utf-8", "backslashreplace").decode()
                raise TaskError(
                    field, f"must be plain JSON (finite numbers, valid text): {exc}"
                ) from exc
        unknown = sorted(set(obj) - _FIELDS)
        if unknown:
            raise TaskError(unknown[0], f"unknown field; known fields are {sorted(_FIELDS)}")
        task_id = obj.get("id")
        if not isinstance(task_id, str) or not _ID.fullmatch(task_id):
            raise TaskError("id", f"must match {_ID.pattern}, got {task_id!r}")
        try:
            layout = Layout.from_json(obj.get("layout"))
        except UpdateError as exc:
            raise TaskError("layout", exc.detail) from exc
        aggregation = obj.get("aggregation")
        if not isinstance(aggregation, Mapping) or set(aggregation) - {"rule", "params"}:
            raise TaskError("aggregation", "must be {'rule': str, 'params': {...}}")
        params = aggregation.get("params", {})
        if not isinstance(params, Mapping):
            raise TaskError("aggregation", "'params' must be an object")
        weighting = obj.get("weighting", "org")
        if weighting not in WEIGHTINGS:
            raise TaskError("weighting", f"must be one of {list(WEIGHTINGS)}, got {weighting!r}")
        threshold = _threshold(obj, "validation_threshold")
        own_threshold = _threshold(obj, "own_org_threshold")
        if own_threshold is not None and threshold is None:
            raise TaskError("own_org_threshold", "needs a validation_threshold")
        batch_refusal = obj.get("batch_refusal", "entry")
        if batch_refusal not in BATCH_REFUSALS:
            raise TaskError(
                "batch_refusal",
                f"must be one of {list(BATCH_REFUSALS)} (refuse an invalid entry of a device "
                f"batch alone, or the whole batch), got {batch_refusal!r}",
            )
        coordinators = obj.get("coordinators", [])
        if coordinators != []:
            coordinators = list(_strings(obj, "coordinators"))
        spec = cls(
            id=task_id,
            layout=layout,
            rounds=_int(obj, "rounds", 1),
            min_updates=_int(obj, "min_updates", 1),
            max_samples=_int({"max_samples": DEFAULT_MAX_SAMPLES, **obj}, "max_samples", 1),
            norm_bound=_float(obj, "norm_bound", MAX_ABS),
            max_update_bytes=_int(obj, "max_update_bytes", 1),
            rule=str(aggregation.get("rule")),
            rule_params=tuple(sorted(params.items())),
            weighting=weighting,
            allowed_orgs=_strings(obj, "allowed_orgs"),
            max_workers_per_org=_int(
                {"max_workers_per_org": DEFAULT_MAX_WORKERS_PER_ORG, **obj},
                "max_workers_per_org",
                1,
            ),
            coordinators=tuple(coordinators),
            validation_threshold=threshold,
            own_org_threshold=own_threshold,
            model=_model(obj.get("model"), layout),
            **_mode(obj),
            batch_refusal=batch_refusal,
        )
        if spec.max_samples >= 2**31:
            raise TaskError("max_samples", f"must be below 2**31, got {spec.max_samples}")
        if spec.max_workers_per_org > MAX_WORKERS_PER_ORG:
            raise TaskError(
                "max_workers_per_org",
                f"must be at most {MAX_WORKERS_PER_ORG}, got {spec.max_workers_per_org}",
            )
        if spec.max_update_bytes > MAX_UPDATE_BYTES:
            raise TaskError(
                "max_update_bytes",
                f"{spec.max_update_bytes} exceeds {MAX_UPDATE_BYTES}, the largest update a "
                "Fabric transaction carries",
            )
        model_bytes = encoded_size(layout, "float32")
        if model_bytes > MAX_UPDATE_BYTES:
            raise TaskError(
                "layout",
                f"the float32 model of {layout.size} parameters is {model_bytes} bytes; the "
                f"largest that fits a Fabric transaction is {MAX_UPDATE_BYTES} bytes",
            )
        try:
            strategy = spec.build_rule()
        except AggregationError as exc:
            raise TaskError("aggregation", str(exc)) from exc
        if spec.weighting == "org" and len(spec.allowed_orgs) < strategy.min_updates:
            raise TaskError(
                "allowed_orgs",
                f"rule {spec.rule!r} with weighting 'org' needs at least "
                f"{strategy.min_updates} organisations, the task allows {len(spec.allowed_orgs)}",
            )
        if spec.weighting != "org" and spec.min_updates < strategy.min_updates:
            raise TaskError(
                "min_updates",
                f"rule {spec.rule!r} needs at least {strategy.min_updates}, got {spec.min_updates}",
            )
        if spec.mode == "async":
            spec._check_buffer(strategy)
        spec._check_size(strategy)
        return spec

    def with_orgs(self, msp_ids: Iterable[str]) -> TaskSpec:
        """This task with organisations admitted while it runs (``AdmitOrganisation``)
        counted among its allowed ones: the spec on which the size rules hold once they
        submit (`max_round_updates`, `aggregation_cost`; an async buffer stays reachable,
        since more organisations only add places). Raises `TaskError` when the larger rounds
        could overflow the weight sums or exceed the aggregation budget."""
        orgs = tuple(sorted({*self.allowed_orgs, *msp_ids}))
        spec = dataclasses.replace(self, allowed_orgs=orgs)
        spec._check_size(spec.build_rule())
        return spec

    def to_json(self) -> dict:
        """The task as canonical JSON-ready data (defaults filled in, lists sorted).

        ``model`` and ``coordinators`` appear only when set, ``batch_refusal`` only when not
        the default, so tasks without them keep their canonical form.
        """
        data = {
            "aggregation": {"params": dict(self.rule_params), "rule": self.rule},
            "allowed_orgs": list(self.allowed_orgs),
            "id": self.id,
            "layout": self.layout.to_json(),
            "max_samples": self.max_samples,
            "max_update_bytes": self.max_update_bytes,
            "max_workers_per_org": self.max_workers_per_org,
            "min_updates": self.min_updates,
            "norm_bound": self.norm_bound,
            "rounds": self.rounds,
            "validation_threshold": self.validation_threshold,
            "weighting": self.weighting,
        }
        if self.own_org_threshold is not None:
            data["own_org_threshold"] = self.own_org_threshold
        if self.model is not None:
            data["model"] = json.loads(json.dumps(self.model))
        if self.coordinators:
            data["coordinators"] = list(self.coordinators)
        if self.mode == "async":
            data.update(
                buffer_size=self.buffer_size,
                max_staleness=self.max_staleness,
                mode=self.mode,
                staleness=dict(self.staleness),
            )
        if self.batch_refusal != "entry":
            data["batch_refusal"] = self.batch_refusal
        return data

    def _check_size(self, rule: Rule) -> None:
        """A full round must keep its weight sums in range and its aggregation in budget."""
        if self.max_round_updates * self.max_samples >= MAX_TOTAL_WEIGHT:
            raise TaskError(
                "max_samples",
                f"{self.max_round_updates} updates of up to {self.max_samples} samples could "
                f"overflow the aggregation's weight sum (limit 2**40); lower max_samples or "
                "max_workers_per_org",
            )
        seconds = self.aggregation_cost(rule)
        if seconds > AGGREGATION_BUDGET_S:
            raise TaskError(
                "max_workers_per_org",
                f"aggregating a full round ({self.max_round_updates} updates of "
                f"{self.layout.size} parameters, rule {self.rule!r}, weighting "
                f"{self.weighting!r}) could take {seconds:.1f}s, over the "
                f"{AGGREGATION_BUDGET_S:g}s budget; allow fewer workers per organisation or "
                "use a smaller model",
            )

    def _check_buffer(self, rule: Rule) -> None:
        """An async buffer must be reachable and always give `rule` enough rows."""
        if self.buffer_size > self.max_round_updates:
            raise TaskError(
                "buffer_size",
                f"{self.buffer_size} exceeds the {self.max_round_updates} updates that can be "
                f"pending at once (one per worker: {len(self.allowed_orgs)} organisations x "
                f"max_workers_per_org {self.max_workers_per_org})",
            )
        needed = buffer_floor(rule.min_updates, self.weighting, self.max_workers_per_org)
        unit = "updates"
        if self.weighting == "org":
            unit = f"updates so that every buffer spans {rule.min_updates} organisations"
        if self.buffer_size < needed:
            raise TaskError(
                "buffer_size",
                f"rule {self.rule!r} with weighting {self.weighting!r} needs at least "
                f"{needed} {unit}, got {self.buffer_size}",
            )

    def build_rule(self) -> Rule:
        """The task's aggregation rule. Raises `AggregationError` if it cannot be built."""
        return make_rule(self.rule, dict(self.rule_params))

    @property
    def max_round_updates(self) -> int:
        """The most updates one round can hold (each allowed org's registry full)."""
        return len(self.allowed_orgs) * self.max_workers_per_org

    def aggregation_cost(self, rule: Rule | None = None) -> float:
        """Estimated seconds to aggregate a full round (`Rule.cost`: each org's merge, then
        the rule over organisations, for weighting ``org``)."""
        rule = rule or self.build_rule()
        size, n = self.layout.size, self.max_round_updates
        if self.weighting != "org":
            return rule.cost(n, size)
        orgs = len(self.allowed_orgs)
        return orgs * rule.cost(self.max_workers_per_org, size) + rule.cost(orgs, size)


def buffer_floor(rule_rows: int, weighting: str, workers_per_org: int) -> int:
    """The smallest async buffer that always gives a rule needing `rule_rows` rows enough:
    with weighting ``org`` one organisation fills at most `workers_per_org` places."""
    if weighting == "org":
        return (rule_rows - 1) * workers_per_org + 1
    return rule_rows


def _mode(obj: Mapping) -> dict[str, Any]:
    """The mode fields of a task JSON, checked (async fields only in async mode)."""
    mode = obj.get("mode", "sync")
    if mode not in MODES:
        raise TaskError("mode", f"must be one of {list(MODES)}, got {mode!r}")
    if mode == "sync":
        given = [f for f in _ASYNC_FIELDS if f in obj]
        if given:
            raise TaskError(given[0], "is a setting of mode 'async'; this task is 'sync'")
        return {}
    for name in ("buffer_size", "max_staleness"):
        if name not in obj:
            raise TaskError(name, "is required in mode 'async'")
    max_staleness = _int(obj, "max_staleness", 0)
    if max_staleness > MAX_STALENESS:
        raise TaskError("max_staleness", f"must be at most {MAX_STALENESS}, got {max_staleness}")
    return {
        "mode": mode,
        "buffer_size": _int(obj, "buffer_size", 1),
        "max_staleness": max_staleness,
        "staleness": _staleness(obj.get("staleness")),
    }


def task_drivers(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The organisations whose admins may advance a task's rounds, from its stored record
    (``GetTask``): the spec's ``coordinators``, or else the organisation that created it."""
    return tuple(record["spec"].get("coordinators") or (record["created_by"],))
