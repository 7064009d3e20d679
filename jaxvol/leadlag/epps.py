"""The Epps curve: realised correlation of previous-tick sampled series against the interval.

Sampling both series every ``interval`` seconds on a common grid (previous tick: the last
value at or before each grid time) and taking the realised correlation
sum dX dY / sqrt(sum dX^2 sum dY^2) gives a correlation that falls towards 0 as the interval
shrinks below the tick spacing (Epps 1979): the synchronisation bias the Hayashi–Yoshida
estimator avoids. :func:`epps_curve` returns it for each interval together with the HY
correlation of the same data (the level the curve should approach from below on a
noise-free market; microstructure noise bends it down again at the shortest intervals).

The grid runs from the later of the two first ticks, ``floor`` of the common span into whole
intervals. Without materialising the grid: the grid increment of x over (g_k, g_k+1] is the
sum of the x increments whose tick falls in it, so sum_k dX_k dY_k = sum_i dx_i dY_(k(i)),
with dY_(k) read from previous-tick look-ups of y at g_k and g_k+1 (O((n + m) log) per
interval, any interval, no static grid size).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol.leadlag import _edge
from jaxvol.leadlag._pair import exact_pair
from jaxvol.leadlag._series import Series, increments, prepare, search
from jaxvol.leadlag.options import LeadLagOptions
from jaxvol.leadlag.status import LeadLagStatus

__all__ = ["EppsCurve", "epps_curve"]


class EppsCurve(NamedTuple):
    """``intervals`` [k] seconds, ``correlation`` [..., k] previous-tick realised correlation,
    ``samples`` [..., k] grid increments per interval, ``hayashi_yoshida`` [...] the HY
    correlation, ``status`` [...] (per interval: NaN where fewer than 2 grid increments)."""

    intervals: jax.Array
    correlation: jax.Array
    samples: jax.Array
    hayashi_yoshida: jax.Array
    status: jax.Array


def _previous(series: Series, at):
    """Previous-tick value of the series at times ``at`` (clipped at the first tick)."""
    index = search(series.times, at, "right") - 1
    return series.values[jnp.clip(index, 0, series.values.shape[-1] - 1)]


def _grid_sums(own: Series, other: Series, start, stop, interval, tol):
    """sum_k dA_k dB_k over grid bins, A = ``own`` (by its ticks), B = ``other``; a tick within
    ``tol`` seconds of a grid time counts as at it (float grids never split a shared time)."""
    d = increments(own)
    tick = own.times[1:]
    bin_ = jnp.ceil((tick - start - tol) / interval) - 1.0
    live = (d != 0) & (bin_ >= 0) & (start + (bin_ + 1) * interval <= stop + tol)
    bin_ = jnp.where(live, bin_, 0.0)
    low = start + bin_ * interval
    high = low + interval
    change = _previous(other, high + tol) - _previous(other, low + tol)
    return jnp.sum(jnp.where(live, d * change, 0.0))


def _epps_lane(tx, x, mx, ty, y, my, intervals, *, series_opts):
    sx = prepare(tx, x, mx, **series_opts)
    sy = prepare(ty, y, my, **series_opts)
    start = jnp.maximum(sx.times[0], sy.times[0])
    stop = jnp.minimum(sx.times[jnp.maximum(sx.count - 1, 0)],
                       sy.times[jnp.maximum(sy.count - 1, 0)])

    def one(interval):
        whole = jnp.floor((stop - start) / interval + 1e-9)
        end = start + whole * interval
        tol = series_opts["tie_tolerance"]
        cov = _grid_sums(sx, sy, start, end, interval, tol)
        var_x = _grid_sums(sx, sx, start, end, interval, tol)
        var_y = _grid_sums(sy, sy, start, end, interval, tol)
        ok = (whole >= 2) & (var_x > 0) & (var_y > 0)
        corr = cov / jnp.sqrt(jnp.where(ok, var_x * var_y, 1.0))
        return jnp.where(ok, corr, jnp.nan), whole

    corr, samples = jax.vmap(one)(intervals)
    hy = exact_pair(tx, x, mx, ty, y, my, jnp.zeros((1,), tx.dtype), series_opts=series_opts,
                    tol=series_opts["tie_tolerance"], blocks=1, chunk=4096)
    scale = jnp.sqrt(hy.variance_x * hy.variance_y)
    status = hy.status
    hy_corr = jnp.where((status == LeadLagStatus.OK) & (scale > 0),
                        hy.rows[0, 0] / jnp.where(scale > 0, scale, 1.0), jnp.nan)
    bad = (status != LeadLagStatus.OK) & (status != LeadLagStatus.NO_OVERLAP)
    return jnp.where(bad, jnp.nan, corr), samples, hy_corr, status


@functools.partial(jax.jit, static_argnames=("series_opts",))
def _epps(tx, x, mx, ty, y, my, intervals, *, series_opts):
    kernel = functools.partial(_epps_lane, intervals=intervals, series_opts=dict(series_opts))
    return jax.vmap(kernel)(tx, x, mx, ty, y, my)


def epps_curve(t_x, x, t_y, y, intervals, *, mask_x=None, mask_y=None,
               options: LeadLagOptions = LeadLagOptions()) -> EppsCurve:
    """Previous-tick realised correlation at each sampling interval (seconds, [k]) and the HY
    correlation, for series [..., n] and [..., m] (see the module docstring)."""
    (tx, xv, mx, ty, yv, my), batch, dtype = _edge.pair_batch(t_x, x, mask_x, t_y, y, mask_y)
    intervals = jnp.asarray(intervals, dtype)
    if intervals.ndim != 1 or intervals.shape[0] == 0:
        raise ValueError(f"intervals must be a non-empty 1-D array of seconds, got shape "
                         f"{intervals.shape}")
    got = _edge.concrete(intervals)
    if got is not None and not (got[0] > 0).all():
        raise ValueError("intervals must be positive seconds")
    corr, samples, hy, status = _epps(
        tx, xv, mx, ty, yv, my, intervals,
        series_opts=tuple(sorted(options.series_options().items())))
    k = intervals.shape[0]
    return EppsCurve(intervals, corr.reshape(batch + (k,)), samples.reshape(batch + (k,)),
                     hy.reshape(batch), status.reshape(batch))
