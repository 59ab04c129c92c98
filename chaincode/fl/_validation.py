"""Org-private validation: each endorsing org scores an update on data only it holds.

A validator is any callable ``(model: Mapping[str, np.ndarray]) -> float`` returning a loss
(lower is better). The chaincode server gets one from its settings::

    fedfabric-chaincode serve ... --setting validator=mypkg.val:loss \\
                                  --setting validation_data=/secret/org1-val.npz

`validator` names a function ``loss(model, data) -> float`` where `data` is the ``.npz`` file
loaded as a dict of arrays (``allow_pickle=False``). The module is imported, and the data
loaded, on first use, so a torch-based validator costs nothing until an update arrives.

The decision never touches the read/write set: the contract decides every read and write
first and only then asks the validator, which can refuse (the org does not endorse) but not
change what would have been written.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from typing import Protocol

import numpy as np

Model = Mapping[str, np.ndarray]


class Validator(Protocol):
    """Scores a model (name -> float32 array) on org-private data; returns a loss."""

    def __call__(self, model: Model) -> float: ...


class SettingsValidator:
    """A validator built from ``validator=module:function`` and ``validation_data=path``."""

    def __init__(self, target: str, data_path: str) -> None:
        self.target, self.data_path = target, data_path
        self._loss: Callable[[Model, Mapping[str, np.ndarray]], float] | None = None
        self._data: dict[str, np.ndarray] | None = None

    def __call__(self, model: Model) -> float:
        if self._loss is None:
            module_name, _, attr = self.target.partition(":")
            if not module_name or not attr:
                raise ValueError(f"validator {self.target!r} is not 'module:function'")
            self._loss = getattr(importlib.import_module(module_name), attr)
            with np.load(self.data_path, allow_pickle=False) as archive:
                self._data = {k: archive[k] for k in sorted(archive.files)}
        return float(self._loss(model, self._data))


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
