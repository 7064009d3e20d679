"""One pair of series -> per-block contrast rows, by either engine (the vmapped kernels)."""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxvol.leadlag import _exact, _grid
from jaxvol.leadlag._series import Series, increments, prepare
from jaxvol.leadlag.status import LeadLagStatus

__all__ = ["binned_pair", "exact_pair", "PairRows"]


class PairRows(NamedTuple):
    rows: jnp.ndarray        # [blocks, lags] contrast per block (their sum is U)
    variance_x: jnp.ndarray  # sum of squared x increments used
    variance_y: jnp.ndarray
    status: jnp.ndarray      # int32: the series' checks, GRID_TOO_SMALL, DEGENERATE, NO_OVERLAP


def _combine(*codes):
    status = jnp.int32(LeadLagStatus.OK)
    for code in reversed(codes):
        status = jnp.where(code != LeadLagStatus.OK, code, status)
    return status


def _value_status(sx, sy, variance_x, variance_y, pairs, extra=LeadLagStatus.OK):
    degenerate = jnp.where((variance_x <= 0) | (variance_y <= 0),
                           jnp.int32(LeadLagStatus.DEGENERATE), jnp.int32(LeadLagStatus.OK))
    overlap = jnp.where(pairs <= 0, jnp.int32(LeadLagStatus.NO_OVERLAP),
                        jnp.int32(LeadLagStatus.OK))
    return _combine(sx.status, sy.status, jnp.int32(extra), degenerate, overlap)


def _variance(series):
    dv = increments(series)
    return jnp.sum(dv * dv)


def exact_pair(tx, x, mx, ty, y, my, lags, *, series_opts, tol, blocks, chunk):
    """Raw times, any sorted lag grid (seconds)."""
    sx = prepare(tx, x, mx, **series_opts)
    sy = prepare(ty, y, my, **series_opts)
    rows, pairs = _exact.block_contrast(sx, sy, lags, tol, blocks, chunk)
    vx, vy = _variance(sx), _variance(sy)
    return PairRows(rows, vx, vy, _value_status(sx, sy, vx, vy, pairs))


def _binned(series: Series, origin, resolution):
    cell = _grid.cells(series.times, series.count, origin, resolution)
    valid = jnp.arange(cell.shape[-1]) < series.count
    merged = prepare(cell.astype(series.times.dtype), series.values, valid, tie_tolerance=0.5,
                     merge_ties=True, subsample=1, preaverage=1)
    status = jnp.where(series.status != LeadLagStatus.OK, series.status, merged.status)
    return merged._replace(status=status), cell


def binned_pair(tx, x, mx, ty, y, my, *, series_opts, half, resolution, method, n_cells,
                blocks, chunk):
    """Times floored to cells of ``resolution`` seconds; lags -half .. half cells."""
    sx = prepare(tx, x, mx, **series_opts)
    sy = prepare(ty, y, my, **series_opts)
    origin = jnp.floor(jnp.minimum(sx.times[0], sy.times[0]) / resolution + _grid.GUARD)
    origin = jnp.where(jnp.isfinite(origin), origin, 0.0)
    cx, _ = _binned(sx, origin, resolution)
    cy, _ = _binned(sy, origin, resolution)
    vx, vy = _variance(cx), _variance(cy)
    n_lags = 2 * half + 1
    if method == "exact":
        lags = jnp.arange(-half, half + 1).astype(tx.dtype)
        rows, pairs = _exact.block_contrast(cx, cy, lags, 0.5, blocks, chunk)
        extra = LeadLagStatus.OK
    else:
        last = jnp.maximum(cx.times[jnp.maximum(cx.count - 1, 0)],
                           cy.times[jnp.maximum(cy.count - 1, 0)])
        too_small = jnp.isfinite(last) & (last >= n_cells)
        extra = jnp.where(too_small, jnp.int32(LeadLagStatus.GRID_TOO_SMALL),
                          jnp.int32(LeadLagStatus.OK))
        int_cell = lambda s: jnp.where(jnp.arange(s.times.shape[-1]) < s.count,
                                       s.times, -1.0).astype(jnp.result_type(int))
        a, _, _ = _grid.spread(cx, int_cell(cx), n_cells)
        b, _, _ = _grid.spread(cy, int_cell(cy), n_cells)
        block, length = _grid.layout(n_cells, n_lags, blocks)
        rows = _grid.block_correlate(a, b, half, n_lags, blocks, block, length)
        start, count = _exact.pair_counts(cx, cy, jnp.asarray(-half, tx.dtype),
                                          jnp.asarray(half, tx.dtype), 0.5)
        pairs = jnp.sum(count)
    return PairRows(rows, vx, vy, _value_status(sx, sy, vx, vy, pairs, extra))
