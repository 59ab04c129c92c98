"""Integer fixed-point arithmetic for aggregation, identical on every CPU.

The rule: a float32 value x becomes the int64 ``q = rint(x * 2**24)`` (computed in float64,
where multiplying a float32 by a power of two is exact and `rint` rounds half to even).
Values must satisfy ``|x| <= 2**15``, so ``|q| <= 2**39``. All aggregation then happens on
these integers:

- weighted means are exact: ``round(sum(w_i * q_i) / sum(w_i))`` with rounding to the nearest
  integer, ties toward +infinity; the numerator is split into 20-bit halves so no int64
  overflows while ``sum(w_i) < 2**40``;
- squared L2 norms are exact Python integers (values split into 20-bit halves, partial sums
  taken in chunks that cannot overflow); squared distances between updates come from an
  exact Gram matrix: rows cut into limbs whose float64 products and chunk sums stay integers
  below 2**53, so a BLAS matrix product of the limbs is exact (see `gram`);
- scaling by a factor below one (norm clipping) uses a 30-bit fixed-point factor and
  truncates toward zero, so a clipped vector never exceeds its bound.

Converting back, ``q / 2**24`` is exact in float64 and the final cast to float32 rounds half
to even. Integer addition is associative, so summation order, SIMD width and BLAS choice
cannot change a single bit: every endorsing peer computes the same bytes.
"""

from __future__ import annotations

import hashlib
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
FACTOR_BITS = 30


def to_fixed(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Float array -> int64 fixed point (after a cast to float32); into `out` if given.

    Raises `AggregationError` for non-finite values or ``|x| > 2**15``.
    """
    x = np.asarray(values, dtype=np.float32)
    if x.size:
        low, high = float(x.min()), float(x.max())  # NaN propagates into min/max
        if not (math.isfinite(low) and math.isfinite(high)):
            raise AggregationError("non-finite value cannot be converted to fixed point")
        if max(-low, high) > MAX_ABS:
            raise AggregationError(f"value outside the fixed-point range of +/-{MAX_ABS:g}")
    # x * 2**24 is exact in float32 (no overflow below 2**15) and every float32 of magnitude
    # >= 2**23 is already an integer, so float32 rint equals the float64 rule above.
    scaled = np.rint(x * np.float32(SCALE))
    if out is None:
        return scaled.astype(np.int64)
    out[...] = scaled.reshape(out.shape)
    return out


def measure(arrays: Sequence[np.ndarray]) -> tuple[int, str | None]:
    """The exact squared L2 norm (fixed-point units squared) of `arrays` and their
    fingerprint, in one pass: the SHA-256 (hex) of their fixed-point values, in order, with
    their shapes, so two updates with the same fingerprint aggregate identically (a copy
    moved by less than the resolution has the same one). The fingerprint is None when every
    value is zero, the update that changes nothing. Raises `AggregationError` as `to_fixed`.
    """
    digest, squares, zero = hashlib.sha256(), 0, True
    for array in arrays:
        q = to_fixed(array)
        squares += sum_squares(q)
        zero = zero and not q.any()
        digest.update(repr(q.shape).encode())
        digest.update(q.astype("<i8").tobytes())
    return squares, None if zero else digest.hexdigest()


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


def peak(rows: np.ndarray) -> int:
    """``max |rows|`` as a Python int (0 for an empty array), without a temporary array."""
    return max(int(rows.max()), -int(rows.min())) if rows.size else 0


def weighted_mean(rows: np.ndarray, weights: Sequence[int]) -> np.ndarray:
    """Exact ``round(sum_i w_i * rows[i] / sum_i w_i)`` over int64 rows (n, d).

    Weights are positive integers with a sum below 2**40. Raises `AggregationError`
    otherwise.
    """
    if len(weights) != rows.shape[0] or not weights:
        raise AggregationError("one positive weight per row is required")
    if any(type(w) is not int or w < 1 for w in weights):
        raise AggregationError(f"weights must be positive integers, got {list(weights)}")
    largest = peak(rows)
    if largest > 1 << 39:
        raise AggregationError("fixed-point values exceed 2**39 (|x| > 2**15)")
    total = sum(weights)
    if total >= MAX_TOTAL_WEIGHT:
        raise AggregationError(f"total weight {total} reaches the limit 2**40")
    if largest * total < 1 << 61:
        # The usual case: every partial sum, and 2 * sum + total, fits in int64, so the
        # direct sum is the same exact integer as the split one below.
        acc = rows[0] * weights[0]
        term = np.empty_like(acc)
        for row, w_i in zip(rows[1:], weights[1:], strict=True):
            np.multiply(row, w_i, out=term)
            acc += term
        return div_round(acc, total)
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
    return scale(v, (bound << FACTOR_BITS) // norm), True


def scale(v: np.ndarray, factor: int) -> np.ndarray:
    """``v * factor / 2**30`` for a fixed-point `factor` in ``[0, 2**30]``, each product
    truncated toward zero (so the result never grows), in exact int64 arithmetic."""
    if not 0 <= factor <= 1 << FACTOR_BITS:
        raise AggregationError(f"scale factor {factor} is outside [0, 2**{FACTOR_BITS}]")
    sign = np.sign(v)
    hi, lo = _split(np.abs(v))
    prod_hi = hi * factor  # < 2**49
    carry_hi = prod_hi >> (FACTOR_BITS - _SPLIT)
    carry_lo = prod_hi & ((1 << (FACTOR_BITS - _SPLIT)) - 1)
    tail = ((carry_lo << _SPLIT) + lo * factor) >> FACTOR_BITS
    return sign * (carry_hi + tail)


_EXACT_BITS = 52  # float64 holds every integer of magnitude up to 2**53
_GRAM_BLOCK = 1 << 23  # float64 values per limb block (64 MB)


def gram(rows: np.ndarray) -> np.ndarray:
    """Exact ``rows @ rows.T`` (an object array of Python ints) for int64 rows (n, d).

    Entries must satisfy ``|v| <= 2**40``. Each row is cut into limbs of `b` bits (unsigned
    low limbs, a signed top limb), so the product of two limbs is below 2**(2b); summed over
    a chunk of at most 2**(52 - 2b) columns it stays an integer below 2**53. A float64
    matrix product (BLAS) of such limbs is therefore exact whatever its summation order, FMA
    use or thread count; the limb products are recombined with Python ints.
    """
    n, d = rows.shape
    bits = max(peak(rows).bit_length(), 1) + 1  # sign included
    limbs = 1
    while 2 * -(-bits // limbs) > _EXACT_BITS - 12:  # chunks of at least 4096 columns
        limbs += 1
    b = -(-bits // limbs)
    chunk = min(1 << (_EXACT_BITS - 2 * b), max(4096, _GRAM_BLOCK // (n * limbs)))
    mask = (1 << b) - 1
    total = np.zeros((n * limbs, n * limbs), dtype=object)
    for start in range(0, d, chunk):
        block = rows[:, start : start + chunk]
        parts = [(block >> (b * k)) & mask for k in range(limbs - 1)]
        parts.append(block >> (b * (limbs - 1)))
        stacked = np.concatenate(parts).astype(np.float64)
        total += (stacked @ stacked.T).astype(np.int64).astype(object)
    result = np.zeros((n, n), dtype=object)
    for a in range(limbs):
        for c in range(limbs):
            result += total[a * n : (a + 1) * n, c * n : (c + 1) * n] * (1 << (b * (a + c)))
    return result


def squared_distances(rows: np.ndarray) -> list[list[int]]:
    """Exact squared L2 distances between int64 rows (``|v| <= 2**39``), as Python ints."""
    g = gram(rows)
    diag = g.diagonal()
    return (diag[:, None] + diag[None, :] - 2 * g).tolist()
