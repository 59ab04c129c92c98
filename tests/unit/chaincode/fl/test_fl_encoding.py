"""The update format: round trips, quantisation error bounds, and every decoding check."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from fedfabric.chaincode.fl import (
    Layout,
    UpdateError,
    content_digest,
    decode_update,
    encode_model,
    encode_update,
    read_header,
)

LAYOUT = Layout.from_json(
    {"tensors": [{"name": "fc.weight", "shape": [10, 64]}, {"name": "fc.bias", "shape": [10]}]}
)
HEADER_SIZE = 84


def tensors(seed: int = 0, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "fc.bias": (rng.standard_normal(10) * scale).astype(np.float32),
        "fc.weight": (rng.standard_normal((10, 64)) * scale).astype(np.float32),
    }


def refuse(check: str, data: bytes, layout: Layout = LAYOUT, **kwargs) -> UpdateError:
    with pytest.raises(UpdateError) as info:
        decode_update(data, layout, **kwargs)
    assert info.value.check == check, str(info.value)
    return info.value


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_float32_round_trip_is_exact(compression):
    original = tensors()
    decoded = decode_update(encode_update(original, LAYOUT, compression=compression), LAYOUT)
    assert list(decoded) == ["fc.weight", "fc.bias"]  # layout order
    for name, value in original.items():
        assert decoded[name].dtype == np.float32
        np.testing.assert_array_equal(decoded[name], value)


@pytest.mark.parametrize("compression", ["none", "zlib"])
def test_int8_error_is_at_most_half_a_step_per_tensor(compression):
    original = tensors(seed=1, scale=0.03)
    data = encode_update(original, LAYOUT, quantization="int8", compression=compression)
    decoded = decode_update(data, LAYOUT)
    for name, value in original.items():
        step = np.abs(value).max() / 127
        error = np.abs(decoded[name] - value).max()
        assert error <= step / 2 * (1 + 1e-5)
        assert error > 0  # the bound is exercised, not trivially met


def test_fp16_relative_error_is_at_most_2_to_minus_11():
    original = tensors(seed=2)
    decoded = decode_update(encode_update(original, LAYOUT, quantization="fp16"), LAYOUT)
    for name, value in original.items():
        relative = np.abs(decoded[name] - value) / np.abs(value)
        assert relative.max() <= 2.0**-11


def test_quantised_round_trip_is_idempotent_and_digest_names_the_decoded_content():
    first = decode_update(encode_update(tensors(), LAYOUT, quantization="int8"), LAYOUT)
    again = encode_update(first, LAYOUT, quantization="float32")
    assert read_header(again)["content_digest"] == content_digest(first, LAYOUT).hex()


def test_zero_tensor_int8_has_zero_scale():
    zeros = {k: np.zeros_like(v) for k, v in tensors().items()}
    decoded = decode_update(encode_update(zeros, LAYOUT, quantization="int8"), LAYOUT)
    assert all(not v.any() for v in decoded.values())


def test_ledger_size_per_update_versus_raw_float32():
    raw = LAYOUT.size * 4
    sizes = {
        q: len(encode_update(tensors(), LAYOUT, quantization=q))
        for q in ("float32", "fp16", "int8")
    }
    table = sum(2 + len(n) + 1 + 4 * len(s) for n, s in LAYOUT.tensors)
    overhead = HEADER_SIZE + table
    assert sizes == {
        "float32": raw + overhead,
        "fp16": raw // 2 + overhead,
        "int8": raw // 4 + 4 * len(LAYOUT.tensors) + overhead,
    }


def test_model_encoding_is_float32_uncompressed_and_stable():
    first = encode_model(tensors(), LAYOUT)
    assert first == encode_model(tensors(), LAYOUT)
    head = read_header(first)
    assert (head["quantization"], head["compression"]) == ("float32", "none")


def test_size_limit():
    data = encode_update(tensors(), LAYOUT)
    error = refuse("size", data, max_bytes=len(data) - 1)
    assert str(len(data)) in str(error)
    assert decode_update(data, LAYOUT, max_bytes=len(data))


def test_encoding_version():
    data = bytearray(encode_update(tensors(), LAYOUT))
    data[4] = 2
    refuse("encoding-version", bytes(data))


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda d: b"XXXX" + d[4:], "format"),
        (lambda d: d[:50], "format"),
        (lambda d: d[:-1], "format"),
        (lambda d: d[:5] + b"\x09" + d[6:], "quantization"),
        (lambda d: d[:6] + b"\x09" + d[7:], "compression"),
        (lambda d: d[:7] + b"\x09" + d[8:], "dtype"),
    ],
)
def test_malformed_headers(mutate, check):
    refuse(check, mutate(encode_update(tensors(), LAYOUT)))


def test_tensor_names_are_checked_against_the_layout():
    other = Layout.from_json(
        {"tensors": [{"name": "fc.weight", "shape": [10, 64]}, {"name": "bias", "shape": [10]}]}
    )
    error = refuse("tensor-names", encode_update(tensors(), LAYOUT), other)
    assert "missing ['bias']" in str(error) and "unexpected ['fc.bias']" in str(error)


def test_tensor_order_is_part_of_the_layout():
    swapped = Layout(tuple(reversed(LAYOUT.tensors)))
    refuse("tensor-names", encode_update(tensors(), LAYOUT), swapped)


def test_shapes_are_checked_against_the_layout():
    other = Layout.from_json(
        {"tensors": [{"name": "fc.weight", "shape": [64, 10]}, {"name": "fc.bias", "shape": [10]}]}
    )
    error = refuse("shapes", encode_update(tensors(), LAYOUT), other)
    assert "'fc.weight'" in str(error)


def test_layout_digest_is_checked():
    data = bytearray(encode_update(tensors(), LAYOUT))
    data[8] ^= 1
    refuse("layout", bytes(data))


def test_non_finite_values_are_refused_in_the_payload():
    data = bytearray(encode_update(tensors(), LAYOUT))
    body = len(data) - LAYOUT.size * 4
    data[body : body + 4] = struct.pack("<f", float("nan"))
    error = refuse("non-finite", bytes(data))
    assert "'fc.weight'" in str(error)


def test_non_finite_int8_scale_is_refused():
    data = bytearray(encode_update(tensors(), LAYOUT, quantization="int8"))
    body = len(data) - (LAYOUT.size + 8)
    data[body : body + 4] = struct.pack("<f", float("inf"))
    refuse("non-finite", bytes(data))


def test_digest_mismatch():
    data = bytearray(encode_update(tensors(), LAYOUT))
    data[-1] ^= 0x01
    error = refuse("digest", bytes(data))
    assert "payload says" in str(error)


def test_zlib_bomb_is_cut_at_the_expected_size():
    data = encode_update(tensors(), LAYOUT, compression="zlib")
    head = read_header(data)
    bomb = zlib.compress(b"\x00" * (LAYOUT.size * 4 + 1000))
    forged = data[:76] + struct.pack("<Q", len(bomb)) + data[84 : head["body_offset"]] + bomb
    refuse("format", forged)


@pytest.mark.parametrize(
    ("values", "check"),
    [
        ({"fc.weight": np.zeros((10, 64))}, "tensor-names"),
        ({"fc.weight": np.zeros((10, 64)), "fc.bias": np.zeros(11)}, "shapes"),
        ({"fc.weight": np.zeros((10, 64)), "fc.bias": np.zeros(10, dtype=np.int32)}, "dtype"),
        ({"fc.weight": np.full((10, 64), np.inf), "fc.bias": np.zeros(10)}, "non-finite"),
    ],
)
def test_encode_refuses_what_decode_would(values, check):
    with pytest.raises(UpdateError) as info:
        encode_update(values, LAYOUT)
    assert info.value.check == check


def test_fp16_overflow_is_refused_at_encoding():
    big = {**tensors(), "fc.bias": np.full(10, 1e6, dtype=np.float32)}
    with pytest.raises(UpdateError, match="fp16") as info:
        encode_update(big, LAYOUT, quantization="fp16")
    assert info.value.check == "non-finite"


@pytest.mark.parametrize(
    "bad",
    [
        None,
        {"tensors": []},
        {"tensors": [{"name": "a", "shape": [0]}]},
        {"tensors": [{"name": "a", "shape": [2]}, {"name": "a", "shape": [2]}]},
        {"tensors": [{"name": "a", "shape": [2]}], "dtype": "float64"},
        {"tensors": [{"name": "a", "shape": [2]}], "encoding": 2},
        {"tensors": [{"name": "a", "shape": [2]}], "extra": 1},
    ],
)
def test_bad_layouts(bad):
    with pytest.raises(UpdateError) as info:
        Layout.from_json(bad)
    assert info.value.check == "layout"


def test_layout_json_round_trip():
    assert Layout.from_json(LAYOUT.to_json()) == LAYOUT
    assert LAYOUT.names == ("fc.weight", "fc.bias") and LAYOUT.size == 650
