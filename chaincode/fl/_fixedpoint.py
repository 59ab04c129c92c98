"""Integer fixed-point arithmetic for aggregation, identical on every CPU.

The rule: a float32 value x becomes the int64 ``q = rint(x * 2**24)`` (computed in float64,
where multiplying a float32 by a power of two is exact and `rint` rounds half to even).
Values must satisfy ``|x| <= 2**15``, so ``|q| <= 2**39``. All aggregation then happens on
these integers:

- weighted means are exact: ``round(sum(w_i * q_i) / sum(w_i))`` with rounding to the nearest
  integer, ties toward +infinity; the numerator is split into 20-bit halves so no int64
  overflows while ``sum(w_i) < 2**40``;
- squared L2 norms and distances are exact Python integers (each difference is split into
  20-bit halves, partial sums are taken in chunks that cannot overflow);
- scaling by a factor below one (norm clipping) uses a 30-bit fixed-point factor and
  truncates toward zero, so a clipped vector never exceeds its bound.

Converting back, ``q / 2**24`` is exact in float64 and the final cast to float32 rounds half
to even. Integer addition is associative, so summation order, SIMD width and BLAS choice
cannot change a single bit: every endorsing peer computes the same bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedfabric.chaincode.fl._errors import AggregationError

FRAC_BITS = 24
SCALE = 1 << FRAC_BITS
MAX_ABS = float(1 << 15)
MAX_TOTAL_WEIGHT = 1 << 40
_SPLIT = 20
_LOW_MASK = (1 << _SPLIT) - 1
_CHUNK = 1 << 22
_FACTOR_BITS = 30


def to_fixed(values: np.ndarray) -> np.ndarray:
    """Float array -> int64 fixed point (after a cast to float32).

    Raises `AggregationError` for non-finite values or ``|x| > 2**15``.
    """
    x = np.asarray(values, dtype=np.float32).astype(np.float64)
    if not np.isfinite(x).all():
        raise AggregationError("non-finite value cannot be converted to fixed point")
    if x.size and float(np.max(np.abs(x))) > MAX_ABS:
        raise AggregationError(f"value outside the fixed-point range of +/-{MAX_ABS:g}")
    return np.rint(x * SCALE).astype(np.int64)


def from_fixed(q: np.ndarray) -> np.ndarray:
    """Int64 fixed point -> float32 (exact division, one round-half-even cast)."""
    return (np.asarray(q, dtype=np.int64).astype(np.float64) / SCALE).astype(np.float32)


def fixed_scalar(value: float) -> int:
    """A non-negative float (e.g. a norm bound) in fixed-point units, rounded half to even."""
    return int(np.rint(np.float64(value) * SCALE))


def _split(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q == hi * 2**20 + lo with 0 <= lo < 2**20 (arithmetic shift floors)."""
    return q >> _SPLIT, q & _LOW_MASK


def div_round(numerator: np.ndarray, denominator: int) -> np.ndarray:
    """Round ``numerator / denominator`` to nearest, ties toward +infinity (integers only)."""
    return (2 * numerator + denominator) // (2 * denominator)


def weighted_mean(rows: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Exact ``round(sum_i w_i * rows[i] / sum_i w_i)`` over int64 rows (n, d).

    Weights are positive integers with a sum below 2**40. Raises `AggregationError`
    otherwise.
    """
    if len(weights) != rows.shape[0] or not weights:
        raise AggregationError("one positive weight per row is required")
    if any(type(w) is not int or w < 1 for w in weights):
        raise AggregationError(f"weights must be positive integers, got {list(weights)}")
    if rows.size and int(np.max(np.abs(rows))) > 1 << 39:
        raise AggregationError("fixed-point values exceed 2**39 (|x| > 2**15)")
    total = sum(weights)
    if total >= MAX_TOTAL_WEIGHT:
        raise AggregationError(f"total weight {total} reaches the limit 2**40")
    w = np.array(weights, dtype=np.int64)[:, None]
    hi, lo = _split(rows)
    s_hi = (w * hi).sum(axis=0)
    s_lo = (w * lo).sum(axis=0)
    a = s_hi // total
    rest = ((s_hi - a * total) << _SPLIT) + s_lo
    return (a << _SPLIT) + div_round(rest, total)


def sum_squares(v: np.ndarray) -> int:
    """Exact ``sum(v**2)`` as a Python int, for int64 entries with ``|v| <= 2**40``."""
    hi, lo = _split(np.asarray(v, dtype=np.int64).reshape(-1))
    s_hh = s_hl = s_ll = 0
    for start in range(0, hi.size, _CHUNK):
        h, low = hi[start : start + _CHUNK], lo[start : start + _CHUNK]
        s_hh += int((h * h).sum())
        s_hl += int((h * low).sum())
        s_ll += int((low * low).sum())
    return (s_hh << (2 * _SPLIT)) + (s_hl << (_SPLIT + 1)) + s_ll


def clip_to_norm(v: np.ndarray, bound: int) -> tuple[np.ndarray, bool]:
    """Scale `v` so its L2 norm is at most `bound` (both fixed point); say if it changed.

    The norm is rounded up (integer square root), the factor is ``floor(bound * 2**30 / norm)``
    and each product is truncated toward zero, so the result's norm never exceeds `bound`.
    """
    squares = sum_squares(v)
    if squares <= bound * bound:
        return v, False
    root = math.isqrt(squares)
    norm = root if root * root == squares else root + 1
    factor = (bound << _FACTOR_BITS) // norm
    sign = np.sign(v)
    hi, lo = _split(np.abs(v))
    prod_hi = hi * factor  # < 2**49
    carry_hi = prod_hi >> (_FACTOR_BITS - _SPLIT)
    carry_lo = prod_hi & ((1 << (_FACTOR_BITS - _SPLIT)) - 1)
    tail = ((carry_lo << _SPLIT) + lo * factor) >> _FACTOR_BITS
    return sign * (carry_hi + tail), True
