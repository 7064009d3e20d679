"""The exact one-pass contrast: every overlapping interval pair adds to a contiguous lag range.

x interval i is (tx[i], tx[i+1]], y interval j is (ty[j], ty[j+1]]. Shifted by a lag theta
(y's interval moved to (ty[j] - theta, ty[j+1] - theta]) the two overlap by more than the tie
tolerance ``tol`` exactly when

    ty[j] - tx[i+1] + tol  <  theta  <  ty[j+1] - tx[i] - tol,

an open interval of lags, so on a sorted lag grid the pair contributes dx_i dy_j to a
contiguous run of grid indices [k_lo, k_hi). Each pair writes +v at k_lo and -v at k_hi of a
difference array; one cumulative sum gives the contrast at every lag. The pairs that overlap
at some lag of the grid are enumerated in fixed-size chunks (a flat pair index p -> (i, j)
through the prefix sums of the per-interval counts), so memory is O(chunk + lags) and the work
is O(n + m + pairs), never a pass per lag.

Contributions can go to ``blocks`` groups of consecutive x intervals (one row each), which the
block bootstrap of :mod:`jaxvol.leadlag.estimate` reweights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvol.leadlag._series import Series, increments, search

__all__ = ["block_contrast", "block_differences", "CHUNK", "pair_counts"]

CHUNK = 1 << 16


def pair_counts(sx: Series, sy: Series, lag_first, lag_last, tol):
    """Per x interval: the first y interval that can overlap and how many can, over the grid."""
    tx, ty = sx.times, sy.times
    valid = jnp.arange(tx.shape[-1] - 1) < sx.count - 1
    start = jnp.maximum(search(ty, tx[:-1] + lag_first + tol, "right") - 1, 0)
    end = jnp.minimum(search(ty, tx[1:] + lag_last - tol, "left"),
                      sy.count - 1)
    count = jnp.where(valid, jnp.maximum(end - start, 0), 0)
    return start, count


def block_differences(sx: Series, sy: Series, lags, tol, blocks: int, chunk: int = CHUNK):
    """Difference arrays [blocks, lags + 1] of the contrast, and the number of pairs."""
    dx, dy = increments(sx), increments(sy)
    tx, ty = sx.times, sy.times
    start, count = pair_counts(sx, sy, lags[0], lags[-1], tol)
    int_dtype = jnp.result_type(int)
    ends = jnp.cumsum(count.astype(int_dtype))
    firsts = ends - count
    total = ends[-1] if ends.shape[-1] else jnp.zeros((), int_dtype)
    intervals = jnp.maximum(sx.count - 1, 1).astype(int_dtype)
    n_lags = lags.shape[-1]

    def chunk_step(carry):
        base, diff = carry
        p = base + jnp.arange(chunk, dtype=int_dtype)
        live = p < total
        i = jnp.minimum(search(ends, p, "right"), dx.shape[-1] - 1)
        j = jnp.clip(start[i] + (p - firsts[i]), 0, dy.shape[-1] - 1)
        low = ty[j] - tx[i + 1] + tol
        high = ty[j + 1] - tx[i] - tol
        k_lo = search(lags, low, "right")
        k_hi = search(lags, high, "left")
        live = live & (k_lo < k_hi)
        value = jnp.where(live, dx[i] * dy[j], 0.0)
        row = (i.astype(int_dtype) * blocks) // intervals
        diff = diff.at[row, k_lo].add(value).at[row, jnp.minimum(k_hi, n_lags)].add(-value)
        return base + chunk, diff

    diff = jnp.zeros((blocks, n_lags + 1), dx.dtype)
    _, diff = jax.lax.while_loop(lambda c: c[0] < total, chunk_step,
                                 (jnp.zeros((), int_dtype), diff))
    return diff, total


def block_contrast(sx: Series, sy: Series, lags, tol, blocks: int = 1, chunk: int = CHUNK):
    """Contrast per block of x intervals [blocks, lags], and the number of pairs."""
    diff, total = block_differences(sx, sy, lags, tol, blocks, chunk)
    return jnp.cumsum(diff, axis=-1)[..., :-1], total
