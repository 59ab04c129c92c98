"""fedfabric.chaincode.fl: the federated-learning contract and its pure, deterministic math.

- `FLContract` (contract name ``fl``) keeps tasks, rounds, updates and global models on the
  channel ledger and checks every update at endorsement (see `_contract`).
- `encode_update` / `decode_update` define what an update is on the wire and on the ledger
  (see `_encoding` for the byte format and the content digest).
- `Rule` subclasses are the aggregation rules (``aggregation.rule`` of a task), computed in
  integer fixed point so every peer and every worker gets identical bytes (see `_fixedpoint`);
  `Registry` is the one helper behind every by-name registry (rules here, client strategies
  and attacks in `fedfabric.fl_worker`).
- `encode_batch` / `decode_batch` / `entry_message` define a device batch (``SubmitBatch``:
  many devices' signed updates in one transaction, see `_batch`).
- `check_update` runs every content check of an update (what endorsers refuse on bytes
  alone); `verify_audit` recomputes every round from ``GetAudit``.
- `model_layout` / `build_model` / `get_weights` / `set_weights` turn a JSON model spec into
  its layout and a torch model (torch is imported only when a model is built, see `_models`);
  `numpy_loss` is the org-private validator `fedfabric run` uses (no torch needed),
  `torch_loss` the same loss computed by torch (see `_validation`).
- Asynchronous tasks (``mode: "async"``, FedBuff): `aggregate_version` makes the next model
  version from a buffer with `staleness_factor` (see `_async`).

Errors::

    FLError                 anything this package refuses
     ├── UpdateError        an encoded update or model fails a named check (.check)
     ├── AggregationError   an aggregation rule cannot be built or cannot run
     └── TaskError          a task specification is invalid (.field)

Inside the contract each becomes a `ChaincodeError` whose message starts with the check name.
"""

from __future__ import annotations

from fedfabric.chaincode.fl._aggregation import (
    AGGREGATION_BUDGET_S,
    WEIGHTINGS,
    AggregateResult,
    Combination,
    Exclusion,
    FedAvg,
    Krum,
    Median,
    MultiKrum,
    Rule,
    TrimmedMean,
    Update,
    krum_scores,
    make_rule,
    register_rule,
    rule_names,
)
from fedfabric.chaincode.fl._async import aggregate_version, staleness_factor
from fedfabric.chaincode.fl._audit import aggregate_round, recompute_audit, verify_audit
from fedfabric.chaincode.fl._batch import (
    MAX_BATCH_ENTRIES,
    BatchEntry,
    decode_batch,
    encode_batch,
    entry_message,
    entry_size,
)
from fedfabric.chaincode.fl._contract import (
    AUDIT_PAGE_UPDATES,
    MAX_REASON,
    FLContract,
    check_update,
    worker_enrolment,
    worker_id,
)
from fedfabric.chaincode.fl._encoding import (
    COMPRESSIONS,
    FORMAT_VERSION,
    QUANTIZATIONS,
    Layout,
    content_digest,
    decode_update,
    encode_model,
    encode_update,
    read_header,
)
from fedfabric.chaincode.fl._errors import AggregationError, FLError, TaskError, UpdateError
from fedfabric.chaincode.fl._models import (
    build_model,
    forward,
    get_weights,
    model_inputs,
    model_layout,
    set_weights,
)
from fedfabric.chaincode.fl._registry import Registry
from fedfabric.chaincode.fl._task import (
    BATCH_REFUSALS,
    MAX_STALENESS_EXPONENT,
    MAX_UPDATE_BYTES,
    MODES,
    TaskSpec,
    buffer_floor,
    task_drivers,
)
from fedfabric.chaincode.fl._validation import (
    Validator,
    numpy_loss,
    numpy_metrics,
    torch_loss,
    write_validation_data,
)

__all__ = [
    "AGGREGATION_BUDGET_S",
    "AUDIT_PAGE_UPDATES",
    "AggregateResult",
    "AggregationError",
    "BATCH_REFUSALS",
    "BatchEntry",
    "COMPRESSIONS",
    "Combination",
    "Exclusion",
    "FLContract",
    "FLError",
    "FORMAT_VERSION",
    "FedAvg",
    "Krum",
    "Layout",
    "MAX_BATCH_ENTRIES",
    "MAX_REASON",
    "MAX_STALENESS_EXPONENT",
    "MAX_UPDATE_BYTES",
    "MODES",
    "Median",
    "MultiKrum",
    "QUANTIZATIONS",
    "Registry",
    "Rule",
    "TaskError",
    "TaskSpec",
    "TrimmedMean",
    "Update",
    "UpdateError",
    "Validator",
    "WEIGHTINGS",
    "aggregate_round",
    "aggregate_version",
    "buffer_floor",
    "build_model",
    "check_update",
    "content_digest",
    "decode_batch",
    "decode_update",
    "encode_batch",
    "encode_model",
    "encode_update",
    "entry_message",
    "entry_size",
    "forward",
    "get_weights",
    "krum_scores",
    "make_rule",
    "model_inputs",
    "model_layout",
    "numpy_loss",
    "numpy_metrics",
    "read_header",
    "recompute_audit",
    "register_rule",
    "rule_names",
    "set_weights",
    "staleness_factor",
    "task_drivers",
    "torch_loss",
    "verify_audit",
    "worker_enrolment",
    "worker_id",
    "write_validation_data",
]
