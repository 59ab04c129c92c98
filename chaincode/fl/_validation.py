"""Org-private validation: each endorsing org scores an update on data only it holds.

A validator is any callable ``(model: Mapping[str, np.ndarray]) -> float`` returning a loss
(lower is better). The chaincode server gets one from its settings::

    python -m fedfabric.chaincode serve ... --setting validator=mypkg.val:loss \\
                                            --setting validation_data=/secret/org1-val.npz

`validator` names a function ``loss(model, data) -> float`` where `data` is the ``.npz`` file
loaded as a dict of arrays (``allow_pickle=False``). The module is imported, and the data
loaded, on first use, so a torch-based validator costs nothing until an update arrives.
When `validation_data` is a directory, each task has its own file in it, ``<task id>.npz``
(`task_validator`), so one server validates several tasks, each on its own data, and a new
task needs a new file, not a restart.

The decision never touches the read/write set: the contract decides every read and write
first and only then asks the validator, which can refuse (the org does not endorse) but not
change what would have been written.

Besides functions of your own (numpy is enough, as above), one validator ships here:
`torch_loss`, the cross-entropy of a classifier built from a model spec (see `_models`).
Its data file, written by `write_validation_data`, holds ``x``, ``y`` and the model spec::

    --setting validator=fedfabric.chaincode.fl:torch_loss \\
    --setting validation_data=/secret/org1-val.npz
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from fedfabric.chaincode.fl._models import build_model, forward, model_inputs, set_weights

Model = Mapping[str, np.ndarray]


class Validator(Protocol):
    """Scores a model (name -> float32 array) on org-private data; returns a loss."""

    def __call__(self, model: Model) -> float: ...


class SettingsValidator:
    """A validator built from ``validator=module:function`` and ``validation_data=path`` (a
    file, or a directory of ``<task id>.npz`` files: see `for_task`)."""

    def __init__(self, target: str, data_path: str) -> None:
        self.target, self.data_path = target, data_path
        self._loss: Callable[[Model, Mapping[str, np.ndarray]], float] | None = None
        self._data: dict[str, np.ndarray] | None = None
        self._tasks: dict[str, SettingsValidator] = {}

    def for_task(self, task: str) -> SettingsValidator:
        """The validator of `task`: this one, or with a directory of data its
        ``<task>.npz`` (FileNotFoundError naming it when the task has none)."""
        folder = Path(self.data_path)
        if not folder.is_dir():
            return self
        if task not in self._tasks:
            path = folder / f"{task}.npz"
            if not path.is_file():
                raise FileNotFoundError(f"no validation data for task {task!r}: {path} is missing")
            self._tasks[task] = SettingsValidator(self.target, str(path))
        return self._tasks[task]

    def __call__(self, model: Model) -> float:
        if self._loss is None or self._data is None:
            module_name, _, attr = self.target.partition(":")
            if not module_name or not attr:
                raise ValueError(f"validator {self.target!r} is not 'module:function'")
            loss = getattr(importlib.import_module(module_name), attr)
            with np.load(self.data_path, allow_pickle=False) as archive:
                data = {k: archive[k] for k in sorted(archive.files)}
            self._loss, self._data = loss, data  # both or neither
        return float(self._loss(model, self._data))


def task_validator(validator: Validator, task: str) -> Validator:
    """The validator to use for `task`: ``validator.for_task(task)`` when it has one (per-task
    data), else `validator` itself."""
    pick = getattr(validator, "for_task", None)
    return pick(task) if callable(pick) else validator


def validator_from_settings(settings: Mapping[str, str]) -> Validator | None:
    """The validator the settings configure, or None. Raises ValueError if half-configured."""
    target, data = settings.get("validator"), settings.get("validation_data")
    if target is None and data is None:
        return None
    if not target or not data:
        raise ValueError("settings 'validator' and 'validation_data' must be given together")
    return SettingsValidator(target, data)


def apply_update(model: Model, update: Model) -> dict[str, np.ndarray]:
    """The model a worker proposes: global plus its delta, in float32."""
    return {k: (model[k] + update[k]).astype(np.float32) for k in model}


def judge(baseline: float, candidate: float, threshold: float) -> str | None:
    """None if `candidate` loss is acceptable, else the reason (losses and threshold)."""
    if math.isfinite(candidate) and candidate <= baseline + threshold:
        return None
    return (
        f"validation loss {candidate:.6g} exceeds baseline {baseline:.6g} "
        f"+ threshold {threshold:.6g}"
    )


def write_validation_data(
    path: str | os.PathLike, x: np.ndarray, y: np.ndarray, model_spec: Mapping[str, Any]
) -> None:
    """Write an org's private validation set for `torch_loss`: features, labels, model spec.

    `x` is (n, features) and `y` (n,) holds integer class labels. Raises `TaskError`
    (field ``model``) for a bad spec and ValueError when the data does not fit it.
    """
    features, classes = model_inputs(model_spec)
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != features or y.shape != (x.shape[0],) or not len(y):
        raise ValueError(
            f"validation data must be x (n, {features}) and y (n,) with n >= 1, "
            f"got x {x.shape} and y {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must be integers in [0, {classes}), got {y.dtype}")
    spec_json = json.dumps(dict(model_spec), sort_keys=True)
    np.savez(path, x=x, y=y.astype(np.int64), model_spec=np.array(spec_json))


def numpy_loss(model: Model, data: Mapping[str, np.ndarray]) -> float:
    """Mean cross-entropy of `model` on org-private data, computed with numpy (`forward`):
    the validator of `fedfabric run`, which needs no torch on the chaincode server. The same
    files and errors as `torch_loss`, and the same loss to float32 precision.

    Example (settings of a chaincode server)::

        validator=fedfabric.chaincode.fl:numpy_loss
        validation_data=/secret/org1-val.npz
    """
    return numpy_metrics(model, data)[0]


def numpy_metrics(model: Model, data: Mapping[str, np.ndarray]) -> tuple[float, float]:
    """The mean cross-entropy (`numpy_loss`) and the accuracy of `model` on `data` (a file
    from `write_validation_data`), with numpy."""
    logits = forward(json.loads(str(data["model_spec"])), model, np.asarray(data["x"]))
    target = np.asarray(data["y"], dtype=np.int64)
    top = logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    loss = float(np.mean(log_sum - logits[np.arange(len(target)), target]))
    return loss, float(np.mean(logits.argmax(axis=1) == target))


def torch_loss(model: Model, data: Mapping[str, np.ndarray]) -> float:
    """Mean cross-entropy of `model` on org-private data; the torch-based validator.

    `data` is a file from `write_validation_data`: ``x`` (n, features) float32, ``y`` (n,)
    class labels and ``model_spec`` (the model spec as a JSON string). Raises KeyError when a
    key is missing, `TaskError` for a bad spec and `UpdateError` when the model's tensors do
    not fit the spec; the contract turns any of these into a ``private-validation`` refusal.

    Example (settings of a chaincode server)::

        validator=fedfabric.chaincode.fl:torch_loss
        validation_data=/secret/org1-val.npz
    """
    import torch

    net = build_model(json.loads(str(data["model_spec"])))
    set_weights(net, model)
    net.eval()
    with torch.no_grad():
        logits = net(torch.from_numpy(np.asarray(data["x"], dtype=np.float32)))
        target = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))
        return float(torch.nn.functional.cross_entropy(logits, target))
