"""Data loading, partitions, training and evaluation: seeded, deterministic, no Fabric."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from fedfabric.chaincode import fl
from fedfabric.fl_worker import ml

SEED = 11


def test_the_bundled_sets_load_standardised(digits):
    cancer = ml.load_dataset("breast_cancer")

    assert (digits.x.shape, digits.num_classes) == ((1797, 64), 10)
    assert (cancer.x.shape, cancer.num_classes) == ((569, 30), 2)
    assert digits.x.dtype == np.float32 and digits.y.dtype == np.int64
    assert np.allclose(cancer.x.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(cancer.x.std(axis=0), 1, atol=1e-4)


def test_a_users_npz_and_csv_load(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.arange(12.0).reshape(4, 3), y=np.array([0, 1, 2, 1]))
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n")

    from_npz = ml.load_dataset(tmp_path / "d.npz")
    from_csv = ml.load_dataset(str(tmp_path / "d.csv"))

    assert (from_npz.x.shape, from_npz.num_classes) == ((4, 3), 3)
    assert (from_csv.x.shape, list(from_csv.y)) == ((3, 2), [0, 1, 1])


@pytest.mark.parametrize(
    ("name", "content", "error", "message"),
    [
        ("missing.npz", None, FileNotFoundError, "missing.npz' does not exist"),
        ("d.npz", {"x": np.zeros((3, 2))}, ValueError, "lacks the arrays ['y']"),
        ("d.npz", {"x": np.zeros((3, 2)), "y": np.zeros(4)}, ValueError, "y must have shape (3,)"),
        ("d.npz", {"x": np.zeros(3), "y": np.zeros(3)}, ValueError, "x must have shape (n, "),
        ("d.csv", "1,2,0\n3,x,1\n", ValueError, "d.csv:2: non-numeric value"),
        ("d.csv", "1,2,0\n3,1\n", ValueError, "d.csv:2: 2 columns, expected 3"),
        ("d.csv", "1,2,0.5\n", ValueError, "labels must be whole numbers"),
        ("d.txt", "", ValueError, "use one of ['breast_cancer', 'digits']"),
    ],
)
def test_bad_dataset_files_fail_naming_the_file_and_problem(
    tmp_path, name, content, error, message
):
    path = tmp_path / name
    if isinstance(content, dict):
        np.savez(path, **content)
    elif content is not None:
        path.write_text(content)

    with pytest.raises(error) as caught:
        ml.load_dataset(path)

    assert message in str(caught.value)
    assert name in str(caught.value) or name == "d.txt"


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_a_partition_covers_the_data_once_with_a_test_and_validation_split(digits, alpha):
    parts = ml.partition(digits, orgs=3, workers_per_org=3, alpha=alpha, seed=SEED)
    pieces = [parts.test] + [o.validation for o in parts.orgs] + list(parts.workers)

    assert len(parts.orgs) == 3 and all(len(o.workers) == 3 for o in parts.orgs)
    assert sum(len(p) for p in pieces) == len(digits)
    assert len(parts.test) == round(0.2 * len(digits))
    assert all(len(p) >= 2 for p in pieces)
    # No sample in two places: together the pieces are exactly the data's rows, once each.
    together = np.concatenate([np.column_stack([p.x, p.y]) for p in pieces])
    everything = np.column_stack([digits.x, digits.y])
    assert np.array_equal(
        np.unique(together, axis=0, return_counts=True)[1],
        np.unique(everything, axis=0, return_counts=True)[1],
    )


def test_iid_worker_shares_are_even_and_dirichlet_shares_are_skewed(digits):
    iid = ml.partition(digits, alpha=None, seed=SEED)
    skewed = ml.partition(digits, alpha=0.1, seed=SEED)

    def label_share_spread(parts):
        shares = [np.bincount(w.y, minlength=10) / len(w) for w in parts.workers]
        return float(np.mean([s.max() for s in shares]))

    sizes = [len(w) for w in iid.workers]
    assert max(sizes) - min(sizes) <= 2
    assert label_share_spread(iid) < 0.25
    assert label_share_spread(skewed) > 0.5


def test_partitions_are_a_function_of_the_seed(digits):
    a, b, c = (ml.partition(digits, alpha=0.5, seed=s) for s in (SEED, SEED, SEED + 1))

    assert all(
        np.array_equal(x.y, y.y) and np.array_equal(x.x, y.x)
        for x, y in zip(a.workers, b.workers, strict=True)
    )
    assert not all(
        len(x) == len(z) and np.array_equal(x.y, z.y)
        for x, z in zip(a.workers, c.workers, strict=True)
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha must be > 0"),
        ({"orgs": 0}, "orgs and workers_per_org must be >= 1"),
        ({"test_fraction": 1.0}, "test_fraction must be in [0, 1)"),
        ({"orgs": 1000}, "orgs: 1438 samples cannot give 1000 parts 2 samples each"),
        ({"orgs": 500, "workers_per_org": 3}, "workers of org 1: 2 samples cannot give 3 parts"),
    ],
)
def test_impossible_partitions_are_refused(digits, kwargs, message):
    with pytest.raises(ValueError) as caught:
        ml.partition(digits, **kwargs)

    assert message in str(caught.value)


def _trained(digits, seed, **options):
    parts = ml.partition(digits, seed=SEED)
    model = fl.build_model(ml.default_model_spec(digits), seed=SEED)
    ml.train(model, parts.orgs[0].workers[0], epochs=2, lr=0.1, batch_size=16, seed=seed, **options)
    return fl.get_weights(model)


def test_training_is_deterministic_for_a_seed(digits):
    a, b, c = _trained(digits, 1), _trained(digits, 1), _trained(digits, 2)

    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["fc0.weight"], c["fc0.weight"])


def test_training_clearly_improves_accuracy(digits):
    parts = ml.partition(digits, orgs=1, workers_per_org=1, seed=SEED)
    model = fl.build_model(ml.default_model_spec(digits), seed=SEED)
    _, before = ml.evaluate(model, parts.test)

    ml.train(model, parts.workers[0], epochs=5, lr=0.1, batch_size=32, seed=SEED)
    loss, after = ml.evaluate(model, parts.test)

    assert before < 0.2 and after > 0.9 and loss < 0.5


def test_the_proximal_term_keeps_weights_nearer_the_start(digits):
    start = fl.get_weights(fl.build_model(ml.default_model_spec(digits), seed=SEED))
    plain = _trained(digits, 1)
    prox = _trained(digits, 1, proximal_mu=1.0)

    def drift(w):
        return sum(float(np.sum((w[k] - start[k]) ** 2)) for k in w)

    assert drift(prox) < 0.9 * drift(plain)


def test_the_delta_is_local_minus_global_in_float32():
    local = {"w": np.array([1.5, 2.0], np.float64)}
    global_model = {"w": np.array([1.0, 3.0], np.float32)}

    delta = ml.weight_delta(local, global_model)

    assert delta["w"].dtype == np.float32 and list(delta["w"]) == [0.5, -1.0]


def test_the_task_module_imports_nothing_of_fabric_or_asyncio():
    tree = ast.parse(Path(ml.__file__).read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}

    assert not {m for m in imported if m.startswith(("asyncio", "grpc", "fedfabric"))}
