"""The HRY lead–lag estimate with block-bootstrap intervals, and the lead–lag matrix.

:func:`estimate` evaluates the contrast U on the grid -max_lag..max_lag (``resolution`` apart,
times floored to the resolution, see :func:`jaxvol.leadlag.contrast_grid`) and returns

- ``lag``: argmax over the grid of |U(theta)| (Hoffmann, Rosenbaum & Yoshida 2013), seconds,
  positive when x leads y;
- ``llr``: the lead–lag ratio of Huth & Abergel (2014), sum_{theta>0} U^2 / sum_{theta<0} U^2,
  above 1 when x leads y;
- ``correlation``: the signed HY correlation at ``lag``, U(lag) / sqrt(sum dx^2 sum dy^2)
  (a ratio of the HY covariance to realised variances, not an inner product of two vectors:
  on a finite sample it can leave [-1, 1] slightly);
- ``lag_low``/``lag_high``, ``llr_low``/``llr_high``: percentile intervals (two-sided
  ``options.level``) of a Gaussian multiplier block bootstrap. The contrast is a sum over blocks
  of consecutive x intervals (or cells), U = sum_g U_g; a replicate is
  U* = U + sum_g e_g (U_g - mean_g U_g) with e_g ~ N(0, 1), whose lag and LLR are recomputed.
  The block rows come out of the same single pass, so B replicates cost a [B, blocks] x
  [blocks, lags] product, not B passes. The interval is widened to contain the point estimate.
- ``status``: :class:`LeadLagStatus` (``AT_BOUND``: the lag is an end of the grid, widen it).

A grid finer than the tick spacing resolves the lag only to about one spacing: a shift smaller
than the intervals keeps most pairs overlapping, so |U| is nearly flat there and the argmax can
sit anywhere on that plateau (HRY's consistency is for spacings going to 0). The bootstrap
interval shows that width; sub-sampling widens it, pre-averaging smears the peak.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol.leadlag import _edge
from jaxvol.leadlag.hry import binned_rows
from jaxvol.leadlag.options import LeadLagOptions
from jaxvol.leadlag.status import LeadLagStatus

__all__ = ["LeadLagEstimate", "estimate", "lead_lag_matrix"]


class LeadLagEstimate(NamedTuple):
    """Lead–lag estimate per lane (see the module docstring); seconds, positive = x leads."""

    lag: jax.Array
    lag_low: jax.Array
    lag_high: jax.Array
    llr: jax.Array
    llr_low: jax.Array
    llr_high: jax.Array
    correlation: jax.Array
    status: jax.Array


def _ratio(u, positive, negative):
    u2 = u * u
    up = jnp.sum(jnp.where(positive, u2, 0.0), axis=-1)
    down = jnp.sum(jnp.where(negative, u2, 0.0), axis=-1)
    return jnp.where(down > 0, up / jnp.where(down > 0, down, 1.0),
                     jnp.where(up > 0, jnp.inf, jnp.nan))


def _summary(rows, variance_x, variance_y, status, key, lags, *, replicates, level):
    u = jnp.sum(rows, axis=0)
    size = jnp.abs(u)
    best = jnp.argmax(size)
    positive, negative = lags > 0, lags < 0
    lag = lags[best]
    llr = _ratio(u, positive, negative)
    scale = jnp.sqrt(variance_x * variance_y)
    corr = u[best] / jnp.where(scale > 0, scale, 1.0)
    if replicates:
        centred = rows - jnp.mean(rows, axis=0)
        weights = jax.random.normal(key, (replicates, rows.shape[0]), rows.dtype)
        star = u + weights @ centred
        lag_star = lags[jnp.argmax(jnp.abs(star), axis=-1)]
        llr_star = _ratio(star, positive, negative)
        tail = (1.0 - level) / 2.0
        lag_low = jnp.minimum(jnp.quantile(lag_star, tail, method="lower"), lag)
        lag_high = jnp.maximum(jnp.quantile(lag_star, 1 - tail, method="higher"), lag)
        llr_low = jnp.minimum(jnp.quantile(llr_star, tail, method="lower"), llr)
        llr_high = jnp.maximum(jnp.quantile(llr_star, 1 - tail, method="higher"), llr)
    else:
        lag_low = lag_high = llr_low = llr_high = jnp.full((), jnp.nan, u.dtype)
    status = jnp.where((status == LeadLagStatus.OK) & (size[best] <= 0),
                       jnp.int32(LeadLagStatus.UNIDENTIFIED), status)
    edge = (best == 0) | (best == lags.shape[-1] - 1)
    status = jnp.where((status == LeadLagStatus.OK) & edge, jnp.int32(LeadLagStatus.AT_BOUND),
                       status)
    usable = (status == LeadLagStatus.OK) | (status == LeadLagStatus.AT_BOUND)
    values = (lag, lag_low, lag_high, llr, llr_low, llr_high, corr)
    values = tuple(jnp.where(usable, v, jnp.nan) for v in values)
    return LeadLagEstimate(*values, status)


@functools.partial(jax.jit, static_argnames=("replicates", "level"))
def _summaries(rows, variance_x, variance_y, status, key, lags, *, replicates, level):
    keys = jax.vmap(lambda lane: jax.random.fold_in(key, lane))(jnp.arange(status.shape[0]))
    kernel = functools.partial(_summary, lags=lags, replicates=replicates, level=level)
    lanes = _edge.lane_batch(max(replicates, 1) * lags.shape[0] * 24)
    return _edge.map_lanes(kernel, (rows, variance_x, variance_y, status, keys), lanes)


def estimate(t_x, x, t_y, y, *, max_lag, resolution, mask_x=None, mask_y=None,
             options: LeadLagOptions = LeadLagOptions(), key=None,
             n_cells=None) -> LeadLagEstimate:
    """Lead–lag of x on y: lag, LLR, correlation, bootstrap intervals and status per lane.

    ``t_x``/``x``: [..., n], ``t_y``/``y``: [..., m] (batch shapes broadcast: many days or
    windows, padded, with ``mask_x``/``mask_y`` marking real ticks), seconds. The lag grid is
    -max_lag..max_lag every ``resolution`` seconds (Python numbers; max_lag a whole number of
    resolutions); tick times are floored to the resolution. ``key`` (a jax.random key; default
    key 0, so results are reproducible) drives the bootstrap, lane ``l`` uses
    ``fold_in(key, l)`` of the flattened batch.
    """
    rows, lags, batch = binned_rows(t_x, x, t_y, y, mask_x=mask_x, mask_y=mask_y,
                                    max_lag=max_lag, resolution=resolution, options=options,
                                    n_cells=n_cells)
    key = jax.random.key(0) if key is None else key
    out = _summaries(rows.rows, rows.variance_x, rows.variance_y, rows.status, key, lags,
                     replicates=int(options.bootstrap), level=float(options.level))
    return LeadLagEstimate(*(v.reshape(batch) for v in out))


def lead_lag_matrix(times, values, *, max_lag, resolution, mask=None,
                    options: LeadLagOptions = LeadLagOptions(), key=None,
                    n_cells=None) -> LeadLagEstimate:
    """:func:`estimate` for every pair of ``instruments`` series ``times``/``values``
    [instruments, ticks] (padded, ``mask`` marks real ticks): fields [instruments, instruments],
    entry (a, b) with x = instrument a, y = instrument b (positive lag: a leads b).

    Each unordered pair is estimated once; (b, a) is its mirror: lag and bounds negated, LLR
    and bounds inverted, the same correlation and status. The diagonal is lag 0, LLR 1,
    correlation 1, status OK.
    """
    times, values = jnp.asarray(times), jnp.asarray(values)
    if times.ndim != 2 or times.shape != values.shape:
        raise ValueError("times and values must have the same shape [instruments, ticks], got "
                         f"{times.shape} and {values.shape}")
    mask = jnp.ones(times.shape, bool) if mask is None else jnp.asarray(mask, bool)
    count = times.shape[0]
    first, second = np.triu_indices(count, 1)
    pair = estimate(times[first], values[first], times[second], values[second],
                    max_lag=max_lag, resolution=resolution, mask_x=mask[first],
                    mask_y=mask[second], options=options, key=key, n_cells=n_cells)
    dtype = pair.lag.dtype

    def fill(upper, lower, diagonal):
        full = jnp.full((count, count), diagonal, upper.dtype)
        return full.at[first, second].set(upper).at[second, first].set(lower)

    return LeadLagEstimate(
        lag=fill(pair.lag, -pair.lag, 0.0), lag_low=fill(pair.lag_low, -pair.lag_high, 0.0),
        lag_high=fill(pair.lag_high, -pair.lag_low, 0.0), llr=fill(pair.llr, 1 / pair.llr, 1.0),
        llr_low=fill(pair.llr_low, 1 / pair.llr_high, 1.0),
        llr_high=fill(pair.llr_high, 1 / pair.llr_low, 1.0),
        correlation=fill(pair.correlation, pair.correlation, jnp.asarray(1.0, dtype)),
        status=fill(pair.status, pair.status, 0))
