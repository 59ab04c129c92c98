"""The numpy validator (`numpy_loss`, over `forward`) scores a model as torch does: the same
cross-entropy, for MLPs and CNNs, so chaincode servers validate without torch."""

from __future__ import annotations

import numpy as np
import pytest

from fedfabric.chaincode.fl import build_model, forward, get_weights, numpy_loss, torch_loss
from fedfabric.chaincode.fl._errors import TaskError

SPECS = [
    {"arch": "mlp", "sizes": [64, 32, 10]},
    {"arch": "mlp", "sizes": [30, 2]},
    {"arch": "cnn", "input": [1, 8, 8], "channels": [8, 16], "classes": 10},
    {"arch": "cnn", "input": [3, 4, 4], "channels": [5], "classes": 3},
]


def data_for(spec: dict, n: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    features = spec["sizes"][0] if spec["arch"] == "mlp" else int(np.prod(spec["input"]))
    classes = spec["sizes"][-1] if spec["arch"] == "mlp" else spec["classes"]
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, features)).astype(np.float32),
        "y": rng.integers(0, classes, size=n).astype(np.int64),
        "model_spec": np.array(__import__("json").dumps(spec, sort_keys=True)),
    }


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s['arch']}-{len(str(s))}")
def test_numpy_gives_torchs_logits_and_loss(spec: dict) -> None:
    torch = pytest.importorskip("torch")
    net = build_model(spec, seed=3)
    weights = get_weights(net)
    data = data_for(spec)
    with torch.no_grad():
        expected = net(torch.from_numpy(data["x"])).numpy()

    logits = forward(spec, weights, data["x"])

    assert logits.shape == expected.shape
    assert np.allclose(logits, expected, atol=1e-4)
    assert numpy_loss(weights, data) == pytest.approx(torch_loss(weights, data), abs=1e-5)


def test_a_missing_tensor_or_a_bad_spec_is_named() -> None:
    spec = SPECS[0]
    weights = get_weights(build_model(spec))
    del weights["fc1.bias"]
    with pytest.raises(KeyError, match="fc1.bias"):
        numpy_loss(weights, data_for(spec))
    with pytest.raises(TaskError, match="unknown arch"):
        forward({"arch": "rnn"}, weights, data_for(spec)["x"])
