"""Divergence events: standardised z, hysteresis detection, the event table, event-aligned mean
paths against the OU decay, and the OU first-passage prediction of the time to half-close.

z = (D - mu) / sqrt(eta^2 / (2 lam)) with (lam, mu, eta) from :func:`jaxvol.ou.fit`. An event
opens when |z| >= ``enter`` and closes when |z| <= ``exit`` (hysteresis: between the two the
state does not change). Each event row says which pattern opened it (``kind``):

* ``iv_lag``: spot moved more than ``jump_sd`` of its local sd in the ``lookback`` before the
  start while the IV did not follow;
* ``iv_leads``: the IV jumped with no spot move (hedging follows);
* ``spread_blowout``: the option spread at the start exceeds ``blowout`` x its median;
* ``other``: none of these.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol.ou import simulate

__all__ = ["standardise", "hysteresis", "events", "aligned_mean", "half_close_prediction",
           "EVENT_COLUMNS"]

EVENT_COLUMNS = ("series", "kind", "sign", "start", "peak", "end", "duration", "peak_z",
                 "half_close", "spread_at_start", "quote_age_at_start")


def standardise(d, lam, mu, eta):
    """z = (D - mu) / sqrt(eta^2 / (2 lam)) (broadcasts; lam, mu, eta per series)."""
    d, lam, mu, eta = (jnp.asarray(a) for a in (d, lam, mu, eta))
    return (d - mu) / (eta / jnp.sqrt(2.0 * lam))


@jax.jit
def _hysteresis(z, enter, exit_):
    def step(state, zi):
        inside = state != 0
        opened = (~inside) & (jnp.abs(zi) >= enter)
        closed = inside & ((jnp.abs(zi) <= exit_) | (jnp.sign(zi) != state))
        new = jnp.where(opened, jnp.sign(zi), jnp.where(closed, 0.0, state))
        new = jnp.where(jnp.isfinite(zi), new, state)
        return new, new

    def one(series):
        _, states = jax.lax.scan(step, jnp.zeros((), z.dtype), series)
        return states

    return jax.vmap(one)(z.reshape(-1, z.shape[-1])).reshape(z.shape)


def hysteresis(z, *, enter: float = 4.0, exit: float = 1.0):
    """Per-tick event state (+1 / -1 inside a positive / negative event, 0 outside) for
    [..., ticks] z, scanning each series once (vmapped)."""
    if not exit < enter:
        raise ValueError(f"exit ({exit}) must be below enter ({enter})")
    z = jnp.asarray(z)
    return _hysteresis(z, jnp.asarray(enter, z.dtype), jnp.asarray(exit, z.dtype))


def _classify(t0, t_spot, spot, t_iv, iv, spread, lookback, jump_sd, blowout, spread_median,
              spot_sd):
    """Pattern of an event starting at t0 (see the module docstring)."""
    if spread is not None and spread_median > 0 and spread > blowout * spread_median:
        return "spread_blowout"
    if t_spot is not None and t_spot.size > 1:
        i1 = np.searchsorted(t_spot, t0, side="right") - 1
        i0 = np.searchsorted(t_spot, t0 - lookback, side="right") - 1
        if i0 >= 0 and i1 >= 0:
            move = abs(math.log(spot[i1] / spot[i0]))
            if move > jump_sd * spot_sd * math.sqrt(lookback):
                return "iv_lag"
        return "iv_leads"
    return "other"


def events(times, d, *, lam, mu, eta, enter: float = 4.0, exit: float = 1.0, spread=None,
           quote_age=None, t_spot=None, spot=None, lookback: float = 2.0,
           jump_sd: float = 4.0, blowout: float = 3.0, series: str = ""):
    """Event table of one residual series (a pandas DataFrame with :data:`EVENT_COLUMNS`).

    Args:
        times, d: IV tick times (s) and residual D.
        lam, mu, eta: the series' OU fit.
        enter, exit: hysteresis thresholds on |z|.
        spread, quote_age: per-tick option spread and quote age (s), reported at the start.
        t_spot, spot: spot ticks, for the ``iv_lag`` / ``iv_leads`` classification.
    Times to half-close run from the peak to the first tick with |z| <= |peak z| / 2 (NaN if
    the series ends first).
    """
    import pandas as pd

    times = np.asarray(times, np.float64)
    z = np.asarray(standardise(d, lam, mu, eta))
    state = np.asarray(hysteresis(z, enter=enter, exit=exit))
    edges = np.flatnonzero(np.diff(np.concatenate([[0.0], state])) != 0)
    spread_median = float(np.nanmedian(spread)) if spread is not None else 0.0
    if t_spot is not None:
        t_spot, spot = np.asarray(t_spot, np.float64), np.asarray(spot, np.float64)
        r = np.diff(np.log(spot))
        spot_sd = float(np.sqrt(np.sum(r * r) / max(t_spot[-1] - t_spot[0], 1e-12)))
    else:
        spot_sd = 0.0
    rows = []
    for a in edges:
        if state[a] == 0:
            continue
        b = a
        while b + 1 < state.size and state[b + 1] == state[a]:
            b += 1
        seg = slice(a, b + 1)
        k = a + int(np.argmax(np.abs(z[seg])))
        peak_z = float(z[k])
        after = np.flatnonzero(np.abs(z[k:]) <= 0.5 * abs(peak_z))
        half = float(times[k + after[0]] - times[k]) if after.size else float("nan")
        end = times[min(b + 1, times.size - 1)]
        rows.append(dict(
            series=series, kind=_classify(times[a], t_spot, spot, times, d,
                                          None if spread is None else spread[a], lookback,
                                          jump_sd, blowout, spread_median, spot_sd),
            sign=int(np.sign(peak_z)), start=times[a], peak=times[k], end=end,
            duration=end - times[a], peak_z=peak_z, half_close=half,
            spread_at_start=float("nan") if spread is None else float(spread[a]),
            quote_age_at_start=float("nan") if quote_age is None else float(quote_age[a])))
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def aligned_mean(times, d, peaks, horizon, *, mu=0.0):
    """Event-aligned mean of (D - mu) / (D_peak - mu) at ``horizon`` seconds after each peak
    (previous-tick sampling); compare with the OU decay exp(-lam * horizon)."""
    times, d, peaks, horizon = (np.asarray(a, np.float64) for a in (times, d, peaks, horizon))
    if peaks.size == 0:
        return np.full(horizon.shape, np.nan)
    at = peaks[:, None] + horizon[None, :]
    i = np.clip(np.searchsorted(times, at, side="right") - 1, 0, times.size - 1)
    k = np.clip(np.searchsorted(times, peaks, side="right") - 1, 0, times.size - 1)
    ratio = (d[i] - mu) / (d[k] - mu)[:, None]
    ratio = np.where(at <= times[-1], ratio, np.nan)
    return np.nanmean(ratio, axis=0)


def half_close_prediction(key, *, lam, peak_z, paths: int = 4000, dt: float = 0.01,
                          horizon: float | None = None):
    """OU first-passage prediction of the time from |z| = peak_z down to peak_z / 2.

    Simulates ``paths`` exact OU paths in units of the stationary sd (eta^2 / (2 lam) = 1)
    from ``peak_z`` on a ``dt`` grid and returns (median, mean) first-passage times (s). For
    large peaks the median approaches ln 2 / lam (the deterministic decay)."""
    horizon = 8.0 * math.log(2.0) / lam if horizon is None else horizon
    grid = np.arange(0.0, horizon, dt)
    times = np.broadcast_to(grid, (paths, grid.size))
    x = np.asarray(simulate(key, times, lam=lam, mu=0.0, eta=math.sqrt(2.0 * lam),
                            x0=float(abs(peak_z))))
    hit = x <= 0.5 * abs(peak_z)
    first = np.where(hit.any(axis=1), grid[np.argmax(hit, axis=1)], np.nan)
    return float(np.nanmedian(first)), float(np.nanmean(first))
