"""Machine learning, framework-free: data, partitions, local training and evaluation.

Pure torch and numpy; nothing here knows about Fabric, the ledger or asyncio. Models are
built from JSON model specs by `fedfabric.chaincode.fl.build_model`, so the worker, the
in-memory run and an org's private validator all build the same network.

Every random choice is drawn from a generator seeded by the caller: the same seed gives the
same partition, the same batches and the same weights, in any process.

Example::

    data = load_dataset("digits")
    parts = partition(data, orgs=3, workers_per_org=3, alpha=0.5, seed=7)
    model = build_model(default_model_spec(data), seed=7)
    before = get_weights(model)
    train(model, parts.orgs[0].workers[0], epochs=1, lr=0.1, batch_size=32, seed=1)
    update = weight_delta(get_weights(model), before)
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

_BUILTIN = ("breast_cancer", "digits")
_MIN_PER_PART = 2
_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class Dataset:
    """Features `x` (n, features) float32, labels `y` (n,) int64 in [0, num_classes)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: np.ndarray) -> Dataset:
        """The rows at `indices` (same name and number of classes)."""
        return Dataset(self.name, self.x[indices], self.y[indices], self.num_classes)


@dataclass(frozen=True)
class OrgData:
    """One organisation's data: one training set per worker and its private validation set."""

    workers: tuple[Dataset, ...]
    validation: Dataset


@dataclass(frozen=True)
class Partition:
    """The federation's data: per-org data and a global test set nobody trains on."""

    orgs: tuple[OrgData, ...]
    test: Dataset

    @property
    def workers(self) -> tuple[Dataset, ...]:
        """Every worker's training set, org by org."""
        return tuple(w for org in self.orgs for w in org.workers)


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            missing = sorted({"x", "y"} - set(archive.files))
            if missing:
                raise ValueError(
                    f"dataset {str(path)!r} lacks the arrays {missing} (found {archive.files})"
                )
            x, y = archive["x"], archive["y"]
    elif path.suffix == ".csv":
        with path.open(newline="") as handle:
            table = _numeric_rows(path, [row for row in csv.reader(handle) if row])
        if table.shape[1] < 2:
            raise ValueError(f"dataset {str(path)!r} needs feature columns and a label column")
        x, y = table[:, :-1], table[:, -1]
    else:
        raise ValueError(f"dataset {str(path)!r}: use a .npz (arrays x, y) or .csv file")
    x = np.asarray(x)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"dataset {str(path)!r}: x must have shape (n, features), got {x.shape}")
    x = x.reshape(len(x), -1)
    if np.shape(y) != (len(x),):
        raise ValueError(f"dataset {str(path)!r}: y must have shape ({len(x)},), got {np.shape(y)}")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x.astype(np.float64)).all():
        raise ValueError(f"dataset {str(path)!r}: x must be finite numbers, got {x.dtype}")
    return x.astype(np.float64), np.asarray(y)


def _numeric_rows(path: Path, rows: list[list[str]]) -> np.ndarray:
    """Every CSV row as floats; a first row that is not numeric is taken as a header."""
    if not rows:
        raise ValueError(f"dataset {str(path)!r} is empty")
    body = rows
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        body = rows[1:]
    if not body:
        raise ValueError(f"dataset {str(path)!r} has no data rows")
    width = len(body[0])
    values = []
    for number, row in enumerate(body, start=len(rows) - len(body) + 1):
        if len(row) != width:
            raise ValueError(f"{path}:{number}: {len(row)} columns, expected {width}")
        try:
            values.append([float(v) for v in row])
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: non-numeric value ({exc})") from exc
    return np.array(values, dtype=np.float64)


def _labels(path: str, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer class labels 0..C-1 (labels that are floats must be whole numbers)."""
    if not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"dataset {path!r}: labels must be numbers, got {y.dtype}")
    if not np.all(np.isfinite(y)) or not np.all(np.asarray(y) == np.rint(y)):
        raise ValueError(f"dataset {path!r}: labels must be whole numbers (class indices)")
    y = np.rint(y).astype(np.int64)
    if y.min() < 0:
        raise ValueError(f"dataset {path!r}: labels must be >= 0, got {int(y.min())}")
    return y, int(y.max()) + 1


def standardize(x: np.ndarray) -> np.ndarray:
    """Each column to mean 0 and standard deviation 1 (constant columns to 0), as float32."""
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    return ((x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def load_dataset(source: str | os.PathLike) -> Dataset:
    """Load a bundled data set by name or a user's own file, standardised per column.

    `source` is ``"digits"`` (8x8 images, 10 classes) or ``"breast_cancer"`` (30 features,
    2 classes), both shipped with scikit-learn (nothing is downloaded); or a path to a
    ``.npz`` file with arrays ``x`` (n, ...) and ``y`` (n,), or a ``.csv`` file whose last
    column is the label (an optional non-numeric first row is a header).

    The column statistics are those of the whole file: a fixed, agreed preprocessing, the
    same for every organisation. Raises FileNotFoundError for a missing file and ValueError
    naming the file and the problem for a bad one.
    """
    if isinstance(source, str) and source in _BUILTIN:
        from sklearn import datasets

        loader = datasets.load_digits if source == "digits" else datasets.load_breast_cancer
        bunch = loader()
        x, y, name = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target), source
    else:
        path = Path(source)
        if path.suffix not in (".npz", ".csv"):
            raise ValueError(
                f"unknown dataset {str(source)!r}; use one of {list(_BUILTIN)} "
                f"or a path to a .npz or .csv file"
            )
        x, y = _read_file(path)
        name = str(path)
    labels, num_classes = _labels(name, y)
    return Dataset(name, standardize(x), labels, num_classes)


def default_model_spec(data: Dataset, *, hidden: int = 32) -> dict[str, Any]:
    """An MLP sized to `data`: features -> `hidden` -> classes (64-32-10 for digits)."""
    return {"arch": "mlp", "sizes": [int(data.x.shape[1]), hidden, data.num_classes]}


def _split_sizes(count: int, fractions: np.ndarray) -> np.ndarray:
    """Cut points of `count` items in proportion to `fractions`."""
    return (np.cumsum(fractions)[:-1] * count).astype(int)


def _assign(
    y: np.ndarray, parts: int, alpha: float | None, rng: np.random.Generator, what: str
) -> list[np.ndarray]:
    """Positions of `y` for each of `parts`: IID, or per class by Dirichlet(alpha) shares."""
    if parts * _MIN_PER_PART > len(y):
        raise ValueError(
            f"{what}: {len(y)} samples cannot give {parts} parts {_MIN_PER_PART} samples each"
        )
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(y)), parts)]
    for _ in range(_DIRICHLET_TRIES):
        chosen: list[list[np.ndarray]] = [[] for _ in range(parts)]
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            shares = rng.dirichlet(np.full(parts, alpha))
            for i, piece in enumerate(np.split(members, _split_sizes(len(members), shares))):
                chosen[i].append(piece)
        result = [np.sort(np.concatenate(c)) for c in chosen]
        if min(len(r) for r in result) >= _MIN_PER_PART:
            return result
    raise ValueError(
        f"{what}: alpha={alpha} left a part with fewer than {_MIN_PER_PART} samples in "
        f"{_DIRICHLET_TRIES} draws; use a larger alpha or fewer workers"
    )


def partition(
    data: Dataset,
    *,
    orgs: int = 3,
    workers_per_org: int = 3,
    alpha: float | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> Partition:
    """Split `data` into a global test set and, per org, private validation and worker sets.

    First a random `test_fraction` becomes the test set. The rest is divided among `orgs`
    (IID when `alpha` is None, else label shares drawn from Dirichlet(alpha): smaller alpha,
    more skew); each org keeps a random `validation_fraction` of its share as its private
    validation set and divides the remainder among its workers the same way. No sample is
    in two places. Everything is drawn from ``numpy.random.default_rng(seed)``.

    Raises ValueError for counts below 1, fractions outside [0, 1), alpha <= 0, or too
    little data for every part to hold at least two samples.
    """
    if orgs < 1 or workers_per_org < 1:
        raise ValueError(f"orgs and workers_per_org must be >= 1, got {orgs}, {workers_per_org}")
    for name, value in (
        ("test_fraction", test_fraction),
        ("validation_fraction", validation_fraction),
    ):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if alpha is not None and not alpha > 0:
        raise ValueError(f"alpha must be > 0 (or None for IID), got {alpha}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data))
    cut = int(round(test_fraction * len(data)))
    test, pool = np.sort(order[:cut]), order[cut:]
    org_data = []
    for org, org_positions in enumerate(_assign(data.y[pool], orgs, alpha, rng, "orgs"), 1):
        mine = pool[org_positions]
        shuffled = rng.permutation(mine)
        n_val = max(1, int(round(validation_fraction * len(mine)))) if validation_fraction else 0
        validation, rest = np.sort(shuffled[:n_val]), shuffled[n_val:]
        shares = _assign(data.y[rest], workers_per_org, alpha, rng, f"workers of org {org}")
        workers = [rest[p] for p in shares]
        org_data.append(
            OrgData(tuple(data.subset(np.sort(w)) for w in workers), data.subset(validation))
        )
    return Partition(tuple(org_data), data.subset(test))


def derive_seed(*parts: int) -> int:
    """A 63-bit seed determined by `parts` (e.g. run seed, round, worker index)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def train(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    proximal_mu: float = 0.0,
) -> float:
    """Train `model` in place with SGD for `epochs` passes over `data`; return the mean loss.

    Batches are drawn in an order fixed by `seed` (a local ``torch.Generator``); the models
    of `fedfabric.chaincode.fl.build_model` have no other randomness (no dropout), so equal
    inputs give identical weights in any thread, and torch's global RNG is never touched.
    With ``proximal_mu > 0`` the FedProx term
    ``mu / 2 * ||w - w_start||**2`` keeps the weights near those the model had on entry
    (the global model).
    """
    if epochs < 1 or batch_size < 1 or not lr > 0 or proximal_mu < 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, lr > 0, proximal_mu >= 0; got {epochs}, "
            f"{batch_size}, {lr}, {proximal_mu}"
        )
    x = torch.from_numpy(np.asarray(data.x, dtype=np.float32))
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    anchor = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            objective = loss
            if proximal_mu > 0:
                drift = sum(
                    ((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=True)
                )
                objective = loss + proximal_mu / 2 * drift
            objective.backward()
            optimizer.step()
            total += loss.item() * len(batch)
            count += len(batch)
    return total / count


def evaluate(model: nn.Module, data: Dataset) -> tuple[float, float]:
    """``(mean cross-entropy loss, accuracy in [0, 1])`` of `model` on `data`."""
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(data.x, dtype=np.float32)))
        y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        loss = float(nn.functional.cross_entropy(logits, y))
        accuracy = float((logits.argmax(dim=1) == y).float().mean())
    return loss, accuracy


def weight_delta(
    local: Mapping[str, np.ndarray], global_model: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The update a worker submits: ``local - global`` per tensor, as float32."""
    if sorted(local) != sorted(global_model):
        raise ValueError(f"tensor names differ: {sorted(local)} vs {sorted(global_model)}")
    return {
        name: (np.asarray(local[name], np.float32) - np.asarray(global_model[name], np.float32))
        for name in global_model
    }
