"""Model specs: layouts without torch, deterministic models, weights in and out, validator."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fedfabric.chaincode import fl

MLP = {"arch": "mlp", "sizes": [64, 32, 10]}
CNN = {"arch": "cnn", "input": [1, 8, 8], "channels": [4, 8], "classes": 10}


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_the_layout_names_every_tensor_of_the_built_model_in_order(spec):
    weights = fl.get_weights(fl.build_model(spec, seed=0))

    layout = fl.model_layout(spec)

    assert [(n, s) for n, s in layout.tensors] == [(n, w.shape) for n, w in weights.items()]
    assert all(w.dtype == np.float32 for w in weights.values())
    assert layout.dtype == "float32"


def test_the_mlp_layout_is_what_the_spec_says():
    assert fl.model_layout(MLP).tensors == (
        ("fc0.weight", (32, 64)),
        ("fc0.bias", (32,)),
        ("fc1.weight", (10, 32)),
        ("fc1.bias", (10,)),
    )


@pytest.mark.parametrize("spec", [MLP, CNN], ids=["mlp", "cnn"])
def test_equal_seeds_build_identical_models_and_other_seeds_differ(spec):
    a, b, c = (fl.get_weights(fl.build_model(spec, seed=s)) for s in (3, 3, 4))

    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not any(np.array_equal(a[k], c[k]) for k in a if k.endswith("weight"))


def test_building_a_model_leaves_the_global_torch_rng_alone():
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fl.build_model(MLP, seed=9)

    assert torch.equal(torch.rand(3), expected)


def test_set_weights_then_get_weights_round_trips():
    model = fl.build_model(CNN, seed=0)
    weights = {n: np.full(s, 0.25, np.float32) for n, s in fl.model_layout(CNN).tensors}

    fl.set_weights(model, weights)

    assert all(np.array_equal(fl.get_weights(model)[k], weights[k]) for k in weights)


def test_set_weights_refuses_wrong_names_and_shapes():
    model = fl.build_model(MLP, seed=0)
    weights = fl.get_weights(model)

    with pytest.raises(fl.UpdateError) as missing:
        fl.set_weights(model, {k: v for k, v in weights.items() if k != "fc1.bias"})
    with pytest.raises(fl.UpdateError) as shaped:
        fl.set_weights(model, {**weights, "fc1.bias": np.zeros(3, np.float32)})

    assert missing.value.check == "tensor-names" and "fc1.bias" in str(missing.value)
    assert shaped.value.check == "shapes"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"arch": "rnn"}, "unknown arch 'rnn'"),
        ({"arch": "mlp", "sizes": [64]}, "'sizes' must be a list of at least 2"),
        ({"arch": "mlp", "sizes": [64, 0]}, "positive integers"),
        ({"arch": "mlp", "sizes": [64, 10], "depth": 2}, "unknown keys ['depth']"),
        ({**CNN, "channels": [4, 8, 16, 32]}, "divisible by 2**4"),
        ("mlp", "must be a JSON object"),
    ],
)
def test_bad_specs_are_task_errors_naming_the_model_field(spec, message):
    with pytest.raises(fl.TaskError) as caught:
        fl.model_layout(spec)

    assert caught.value.field == "model"
    assert message in str(caught.value)


def test_torch_loss_scores_a_model_on_the_validation_file(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 64)).astype(np.float32), rng.integers(0, 10, 40)
    path = tmp_path / "val.npz"
    fl.write_validation_data(path, x, y, MLP)
    with np.load(path, allow_pickle=False) as archive:
        data = {k: archive[k] for k in archive.files}
    zero = {n: np.zeros(s, np.float32) for n, s in fl.model_layout(MLP).tensors}

    loss = fl.torch_loss(zero, data)

    assert loss == pytest.approx(np.log(10), rel=1e-6)  # uniform logits


def test_torch_loss_works_as_the_contracts_settings_validator(tmp_path):
    from fedfabric.chaincode.fl._validation import validator_from_settings

    rng = np.random.default_rng(1)
    fl.write_validation_data(
        tmp_path / "val.npz", rng.normal(size=(20, 64)), rng.integers(0, 10, 20), MLP
    )
    validator = validator_from_settings(
        {
            "validator": "fedfabric.chaincode.fl:torch_loss",
            "validation_data": str(tmp_path / "val.npz"),
        }
    )

    assert validator(fl.get_weights(fl.build_model(MLP, seed=0))) > 0


def test_write_validation_data_refuses_data_that_does_not_fit_the_spec(tmp_path):
    with pytest.raises(ValueError, match=r"x \(n, 64\)"):
        fl.write_validation_data(tmp_path / "v.npz", np.zeros((5, 30)), np.zeros(5, int), MLP)
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 10\)"):
        fl.write_validation_data(tmp_path / "v.npz", np.zeros((5, 64)), np.full(5, 10), MLP)


def test_the_chaincode_package_does_not_import_torch():
    code = (
        "import sys, fedfabric.chaincode.fl as fl;"
        "fl.model_layout({'arch': 'mlp', 'sizes': [4, 2]});"
        "print('torch' in sys.modules)"
    )

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)

    assert out.stdout.strip() == "False"


def test_a_model_is_the_same_while_other_threads_use_the_torch_rng():
    import threading

    import torch

    expected = fl.get_weights(fl.build_model(CNN, seed=5))
    stop = threading.Event()

    def other_thread() -> None:  # as concurrent training or another library might
        while not stop.is_set():
            torch.manual_seed(999)
            torch.rand(1000)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        built = [fl.get_weights(fl.build_model(CNN, seed=5)) for _ in range(30)]
    finally:
        stop.set()
        thread.join()

    assert all(np.array_equal(b[k], expected[k]) for b in built for k in expected)
