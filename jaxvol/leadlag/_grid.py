"""The grid contrast: ticks binned to cells of ``resolution`` seconds, all lags by blocked FFT.

With tick times on a grid of cells (cell c is the time span (c - 1, c] in units of the
resolution), an x interval covers a run of cells and so does a y interval shifted by k cells;
the two overlap exactly when they share a cell. For two runs of cells,
1{share a cell} = #shared cells - #shared pairs of neighbouring cells, so with

    xs[c] = dx of the x interval that covers cell c              (0 outside every interval)
    xp[c] = xs[c] if cell c + 1 lies in the same interval, else 0  (no x tick in cell c)

the contrast at lag k (in cells) is the exact sum of two discrete cross-correlations,

    U[k] = sum_c xs[c] ys[c + k] - xp[c] yp[c + k] = Re sum_c (xs + i xp)[c] (ys + i yp)[c + k].

It is evaluated block by block (overlap-save): ``blocks`` runs of cells, each correlated with
the stretch of y it can reach through one FFT of a fast length >= block + lags - 1; the
per-block rows are what the block bootstrap reweights. Cost O(cells log(block + lags)).
Several ticks in one cell are merged (the cell keeps the last value), as the lead-lag package
does when it floors times to its precision.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvol.leadlag._series import Series

__all__ = ["block_correlate", "cells", "fast_length", "GUARD", "layout", "spread"]

GUARD = 1e-6  # in cells: a time on the grid (up to rounding) lands in its own cell


def fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes the FFT handles fastest)."""
    best = 1 << max(int(n - 1).bit_length(), 0)
    five = 1
    while five < best:
        three = five
        while three < best:
            size = three
            while size < n:
                size *= 2
            best = min(best, size)
            three *= 3
        five *= 5
    return best


def layout(n_cells: int, n_lags: int, blocks: int):
    """Static block length and FFT length covering ``n_cells`` cells in ``blocks`` blocks."""
    block = max(1, math.ceil(n_cells / blocks))
    return block, fast_length(block + n_lags - 1)


def cells(times, count, origin, resolution):
    """Cell index of each valid tick (int), relative to ``origin`` (a cell number)."""
    raw = jnp.floor(times / resolution + GUARD)
    valid = jnp.arange(times.shape[-1]) < count
    return jnp.where(valid, raw - origin, -1.0).astype(jnp.result_type(int))


def spread(series: Series, cell, n_cells: int):
    """(xs + i xp) over ``n_cells`` cells, and the sum of squared merged increments."""
    n = series.values.shape[-1]
    valid = jnp.arange(n) < series.count
    in_grid = valid & (cell < n_cells)
    ticks = jnp.zeros((n_cells,), jnp.result_type(int)).at[jnp.where(in_grid, cell, n_cells)].add(
        1, mode="drop")
    upto = jnp.cumsum(ticks)                       # ticks in cells <= c
    before = jnp.concatenate([jnp.zeros((1,), upto.dtype), upto[:-1]])  # ticks in cells < c
    last = series.values[jnp.clip(upto[jnp.clip(cell, 0, n_cells - 1)] - 1, 0, n - 1)]
    last = jnp.where(valid, last, 0.0)             # value of the last tick of each tick's cell
    count = upto[-1]
    live = (before >= 1) & (before <= count - 1)
    head = jnp.clip(before, 0, n - 1)
    xs = jnp.where(live, last[head] - series.values[jnp.clip(before - 1, 0, n - 1)], 0.0)
    xp = jnp.where(ticks == 0, xs, 0.0)
    closes = valid & jnp.concatenate([cell[1:] != cell[:-1], jnp.zeros((1,), bool)])
    closes = closes & (jnp.arange(n) < series.count - 1)
    step = jnp.concatenate([last[1:], jnp.zeros((1,), last.dtype)]) - series.values
    variance = jnp.sum(jnp.where(closes, step * step, 0.0))
    return jax.lax.complex(xs, xp), variance, count


def block_correlate(a, b, half: int, n_lags: int, blocks: int, block: int, length: int):
    """Re sum_c a[c] b[c + k] for k = -half .. n_lags - 1 - half, per block of ``block`` cells."""
    span = blocks * block
    a = jnp.pad(a, (0, span - a.shape[-1]))
    b = jnp.pad(b, (half, span + n_lags - 1 - half - b.shape[-1]))

    def one(g):
        head = g * block
        seg_a = jax.lax.dynamic_slice(a, (head,), (block,))[::-1]
        seg_b = jax.lax.dynamic_slice(b, (head,), (block + n_lags - 1,))
        conv = jnp.fft.ifft(jnp.fft.fft(seg_a, length) * jnp.fft.fft(seg_b, length))
        return jnp.real(jax.lax.dynamic_slice(conv, (block - 1,), (n_lags,)))

    return jax.lax.map(one, jnp.arange(blocks))
