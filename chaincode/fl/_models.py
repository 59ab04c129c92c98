"""Model specifications: small JSON descriptions of torch models, and their tensor layouts.

A model spec is plain JSON, so it can travel in a config file, a task record or an org's
validation file::

    {"arch": "mlp", "sizes": [64, 32, 10]}                      # Linear-ReLU-...-Linear
    {"arch": "cnn", "input": [1, 8, 8], "channels": [8, 16], "classes": 10}

Every model takes flat float32 features ``(batch, prod(input))`` and returns class logits.
A ``cnn`` reshapes its input to ``input`` (channels, height, width), then per entry of
``channels`` applies a 3x3 convolution (padding 1), ReLU and 2x2 max pooling, and ends in one
linear layer; height and width must be divisible by ``2 ** len(channels)``.

`model_layout` needs only numpy, so the chaincode can check a spec without torch. torch is
imported inside `build_model`, `get_weights` and `set_weights` only: chaincode servers are
deployed without torch unless their org runs torch-based private validation.
Bad specs raise `TaskError` with field ``model``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedfabric.chaincode.fl._encoding import Layout, _check_names_and_shapes
from fedfabric.chaincode.fl._errors import TaskError

_KEYS = {"mlp": {"arch", "sizes"}, "cnn": {"arch", "input", "channels", "classes"}}
_KERNEL = 3


def _positive_ints(spec: Mapping, key: str, *, length: int | None = None, least: int = 1):
    value = spec.get(key)
    if (
        not isinstance(value, list | tuple)
        or not all(type(v) is int and v > 0 for v in value)
        or (length is not None and len(value) != length)
        or len(value) < least
    ):
        count = f"{length}" if length is not None else f"at least {least}"
        raise TaskError(
            "model", f"'{key}' must be a list of {count} positive integers, got {value!r}"
        )
    return [int(v) for v in value]


def _parse(spec: object) -> dict[str, Any]:
    """Check a spec and return it as a canonical dict (lists, sorted keys)."""
    if not isinstance(spec, Mapping):
        raise TaskError("model", f"a model spec must be a JSON object, got {spec!r}")
    arch = spec.get("arch")
    if arch not in _KEYS:
        raise TaskError("model", f"unknown arch {arch!r}; known: {sorted(_KEYS)}")
    unknown = sorted(set(spec) - _KEYS[arch])
    missing = sorted(_KEYS[arch] - set(spec))
    if unknown or missing:
        raise TaskError(
            "model",
            f"{arch} spec has unknown keys {unknown} and lacks {missing}; "
            f"expected {sorted(_KEYS[arch])}",
        )
    if arch == "mlp":
        return {"arch": arch, "sizes": _positive_ints(spec, "sizes", least=2)}
    shape = _positive_ints(spec, "input", length=3)
    channels = _positive_ints(spec, "channels")
    classes = spec.get("classes")
    if type(classes) is not int or classes < 1:
        raise TaskError("model", f"'classes' must be a positive integer, got {classes!r}")
    factor = 2 ** len(channels)
    if shape[1] % factor or shape[2] % factor:
        raise TaskError(
            "model",
            f"input height and width {shape[1:]} must be divisible by 2**{len(channels)} "
            f"(one 2x2 pooling per convolution)",
        )
    return {"arch": arch, "channels": channels, "classes": classes, "input": shape}


def _tensor_shapes(spec: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    if spec["arch"] == "mlp":
        sizes = spec["sizes"]
        shapes = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            shapes += [(f"fc{i}.weight", (n_out, n_in)), (f"fc{i}.bias", (n_out,))]
        return shapes
    c_in, height, width = spec["input"]
    shapes = []
    for i, c_out in enumerate(spec["channels"]):
        shapes.append((f"conv{i}.weight", (c_out, c_in, _KERNEL, _KERNEL)))
        shapes.append((f"conv{i}.bias", (c_out,)))
        c_in, height, width = c_out, height // 2, width // 2
    classes = spec["classes"]
    return shapes + [("fc.weight", (classes, c_in * height * width)), ("fc.bias", (classes,))]


def model_layout(spec: Mapping[str, Any]) -> Layout:
    """The `Layout` (tensor names, shapes, float32) of the model `spec` describes.

    Needs no torch. Raises `TaskError` (field ``model``) for a malformed spec.

    Example::

        layout = model_layout({"arch": "mlp", "sizes": [64, 32, 10]})
        assert layout.names == ("fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias")
    """
    return Layout(tuple(_tensor_shapes(_parse(spec))))


def forward(
    spec: Mapping[str, Any], tensors: Mapping[str, np.ndarray], x: np.ndarray
) -> np.ndarray:
    """The class logits ``(batch, classes)`` of the model `spec` with weights `tensors` for
    flat features `x` ``(batch, features)``: what `build_model`'s module computes, in numpy
    (float64), so a chaincode server scores models without torch. Raises `TaskError` for a
    malformed spec and `KeyError` for a missing tensor."""
    parsed = _parse(spec)
    out = np.asarray(x, dtype=np.float64)
    if parsed["arch"] == "mlp":
        layers = len(parsed["sizes"]) - 1
        for i in range(layers):
            out = _linear(out, tensors[f"fc{i}.weight"], tensors[f"fc{i}.bias"])
            if i < layers - 1:
                out = np.maximum(out, 0.0)
        return out
    out = out.reshape(len(out), *parsed["input"])
    for i in range(len(parsed["channels"])):
        weight = np.asarray(tensors[f"conv{i}.weight"], dtype=np.float64)
        padded = np.pad(out, ((0, 0), (0, 0), (1, 1), (1, 1)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (_KERNEL, _KERNEL), axis=(2, 3))
        n, _, h, w = windows.shape[:4]
        columns = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * h * w, -1)  # im2col
        out = (columns @ weight.reshape(len(weight), -1).T).reshape(n, h, w, -1)
        out = (
            out.transpose(0, 3, 1, 2)
            + np.asarray(tensors[f"conv{i}.bias"], dtype=np.float64)[None, :, None, None]
        )
        out = np.maximum(out, 0.0)
        n, c, h, w = out.shape
        out = out.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    return _linear(out.reshape(len(out), -1), tensors["fc.weight"], tensors["fc.bias"])


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, dtype=np.float64)


def model_inputs(spec: Mapping[str, Any]) -> tuple[int, int]:
    """``(features, classes)``: the flat input size and the number of outputs of `spec`."""
    parsed = _parse(spec)
    if parsed["arch"] == "mlp":
        return parsed["sizes"][0], parsed["sizes"][-1]
    return math.prod(parsed["input"]), parsed["classes"]


def build_model(spec: Mapping[str, Any], *, seed: int = 0):
    """A freshly initialised ``torch.nn.Module`` for `spec`, identical for equal seeds.

    Every weight and bias is drawn from a local ``torch.Generator`` seeded with `seed`,
    uniformly in ``±1/sqrt(fan_in)`` (PyTorch's default bounds for these layers), so no other
    thread's use of torch's global RNG can change the model. Raises `TaskError` (field
    ``model``) for a malformed spec.
    """
    import torch
    from torch import nn

    parsed = _parse(spec)
    layers: list[tuple[str, nn.Module]] = []
    # Layers on the meta device: no memory, and no draw from torch's global RNG.
    if parsed["arch"] == "mlp":
        sizes = parsed["sizes"]
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            if i:
                layers.append((f"act{i - 1}", nn.ReLU()))
            layers.append((f"fc{i}", nn.Linear(n_in, n_out, device="meta")))
    else:
        c_in, height, width = parsed["input"]
        layers.append(("unflatten", nn.Unflatten(1, (c_in, height, width))))
        for i, c_out in enumerate(parsed["channels"]):
            layers.append((f"conv{i}", nn.Conv2d(c_in, c_out, _KERNEL, padding=1, device="meta")))
            layers.append((f"act{i}", nn.ReLU()))
            layers.append((f"pool{i}", nn.MaxPool2d(2)))
            c_in, height, width = c_out, height // 2, width // 2
        layers.append(("flatten", nn.Flatten()))
        layers.append(("fc", nn.Linear(c_in * height * width, parsed["classes"], device="meta")))
    model = nn.Sequential(OrderedDict(layers)).to_empty(device="cpu")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear | nn.Conv2d):
                bound = 1 / math.sqrt(module.weight[0].numel())
                module.weight.uniform_(-bound, bound, generator=generator)
                assert module.bias is not None  # every layer here has one
                module.bias.uniform_(-bound, bound, generator=generator)
    return model


def get_weights(model) -> dict[str, np.ndarray]:
    """The model's tensors as name -> float32 numpy copies, in state-dict (layout) order."""
    return {
        name: tensor.detach().cpu().numpy().astype(np.float32, copy=True)
        for name, tensor in model.state_dict().items()
    }


def set_weights(model, weights: Mapping[str, np.ndarray]) -> None:
    """Load `weights` (name -> array) into `model` in place, cast to float32.

    Raises `UpdateError` (``tensor-names`` or ``shapes``) when the names or shapes differ
    from the model's.
    """
    import torch

    own = model.state_dict()
    layout = Layout(tuple((n, tuple(t.shape)) for n, t in own.items()))
    _check_names_and_shapes(
        list(weights), {k: np.shape(v) for k, v in weights.items()}, layout, ordered=False
    )
    model.load_state_dict(
        {n: torch.from_numpy(np.array(weights[n], dtype=np.float32)) for n in own}, strict=True
    )
