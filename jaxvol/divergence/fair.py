"""Fair IV g(S) for the current spot and the residual D = IV - g(S), on asynchronous ticks.

For an ATM (floating-strike) IV series with ATM skew ``skew`` = d vol / d ln K:

* sticky strike: each fixed-strike vol stays put, so the ATM vol slides along the smile:
  g(S) = IV(t0) + skew ln(S / S0);
* sticky delta (moneyness): the smile moves with spot, the ATM vol stays: g(S) = IV(t0);
* SSR model: g(S) = IV(t0) + beta ln(S / S0), beta = SSR x skew, with beta estimated from the
  data (:func:`spot_vol_beta`).

A divergence under one convention can vanish under another; :func:`residuals` returns D under
all three side by side. Spot is aligned to each IV tick by its previous tick (as-of).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import float_dtype
from jaxvol.status import domain_status

__all__ = ["Residual", "DivergenceStatus", "MODELS", "asof", "spot_vol_beta", "dimson_beta",
           "residual", "residuals"]

MODELS = ("sticky_strike", "sticky_delta", "ssr")

DivergenceStatus = domain_status("DivergenceStatus", "divergence", {
    "OK": 0, "BAD_INPUT": 1, "NON_FINITE_INPUT": 2, "TOO_FEW_POINTS": 4,
    "NO_SPOT_BEFORE": 100,
}, doc="Per-tick / per-series outcome codes of jaxvol.divergence (NO_SPOT_BEFORE: an IV tick "
       "with no earlier spot quote to align to).")


class Residual(NamedTuple):
    """D = IV - g(S) at the IV ticks of one series."""

    d: jax.Array       #: residual, vol units (NaN where not computable)
    fair: jax.Array    #: g(S) at each IV tick
    spot: jax.Array    #: spot aligned to each IV tick (previous tick)
    beta: jax.Array    #: d vol / d ln S used
    status: jax.Array  #: int32 per IV tick (DivergenceStatus)


def asof(t_from, x_from, t_to):
    """Previous-tick value of x (times ``t_from``, sorted) at times ``t_to``; NaN before the
    first tick."""
    t_from, x_from, t_to = (jnp.asarray(a) for a in (t_from, x_from, t_to))
    i = jnp.searchsorted(t_from, t_to, side="right") - 1
    return jnp.where(i >= 0, x_from[jnp.maximum(i, 0)], jnp.nan)


def spot_vol_beta(t_spot, spot, t_iv, iv, *, resolution: float = 5.0, lags: int = 3):
    """Spot-vol beta d vol / d ln S from asynchronous ticks.

    Both series are sampled by previous tick on a common grid of ``resolution`` seconds; IV
    changes are regressed on the current and ``lags`` lagged log-spot changes and beta is the
    sum of the coefficients (Dimson's estimator), so an IV that updates with a lag of up to
    ``lags x resolution`` seconds, or a spot jump the IV catches up with later, still counts
    fully (a plain same-interval regression reads the lag as a smaller beta)."""
    t_spot, spot = np.asarray(t_spot, np.float64), np.asarray(spot, np.float64)
    return dimson_beta(t_spot, np.log(spot), t_iv, iv, resolution=resolution, lags=lags)


def dimson_beta(t_x, x, t_y, y, *, resolution: float = 5.0, lags: int = 3):
    """dy / dx from asynchronous ticks of two series (levels): y's changes on a
    ``resolution`` grid regressed on x's current and ``lags`` lagged changes, the
    coefficients summed (Dimson), so a y that catches up with x late still counts fully.
    NaN with too few grid points."""
    t_x, x, t_y, y = (np.asarray(a, np.float64) for a in (t_x, x, t_y, y))
    start = max(t_x[0], t_y[0])
    grid = np.arange(start, min(t_x[-1], t_y[-1]), resolution)
    if grid.size < 4 * (lags + 2):
        return float("nan")
    s = x[np.searchsorted(t_x, grid, side="right") - 1]
    v = y[np.searchsorted(t_y, grid, side="right") - 1]
    ds, dv = np.diff(s), np.diff(v)
    n = ds.size - lags
    design = np.stack([ds[lags - j:lags - j + n] for j in range(lags + 1)], axis=1)
    design = np.concatenate([design, np.ones((n, 1))], axis=1)
    target = dv[lags:]
    ok = np.all(np.isfinite(design), axis=1) & np.isfinite(target)
    if ok.sum() < lags + 4:
        return float("nan")
    coef, *_ = np.linalg.lstsq(design[ok], target[ok], rcond=None)
    return float(np.sum(coef[:-1]))


@jax.jit
def _residual(t_spot, spot, t_iv, iv, beta, iv0, s0):
    s = asof(t_spot, spot, t_iv)
    fair = iv0 + beta * jnp.log(s / s0)
    d = iv - fair
    status = jnp.where(jnp.isnan(s), 100, jnp.where(jnp.isfinite(iv), 0, 2)).astype(jnp.int32)
    return Residual(d=jnp.where(status == 0, d, jnp.nan), fair=fair, spot=s,
                    beta=jnp.broadcast_to(beta, d.shape), status=status)


def residual(t_spot, spot, t_iv, iv, *, model: str = "ssr", skew=None, beta=None,
             resolution: float = 5.0) -> Residual:
    """D = IV - g(S) at the IV ticks under one fair-IV convention.

    Args:
        t_spot, spot: spot tick times (s, increasing) and mids.
        t_iv, iv: IV tick times (s, increasing) and mid vols of an ATM series.
        model: ``"sticky_strike"`` (needs ``skew``), ``"sticky_delta"`` or ``"ssr"`` (beta
            from ``beta`` if given, else :func:`spot_vol_beta` at ``resolution``).
        skew: ATM skew d vol / d ln K.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}; got {model!r}")
    dtype = float_dtype(np.asarray(spot), np.asarray(iv))
    t_spot, spot, t_iv, iv = (jnp.asarray(a, dtype) for a in (t_spot, spot, t_iv, iv))
    if t_spot.ndim != 1 or t_iv.ndim != 1 or t_spot.shape != spot.shape or t_iv.shape != iv.shape:
        raise ValueError("residual takes one series: 1-D t_spot/spot and t_iv/iv of matching "
                         f"shapes; got {t_spot.shape}, {spot.shape}, {t_iv.shape}, {iv.shape}")
    if model == "sticky_strike":
        if skew is None:
            raise ValueError("model='sticky_strike' needs the ATM skew (skew=d vol / d ln K)")
        b = float(skew)
    elif model == "sticky_delta":
        b = 0.0
    else:
        b = spot_vol_beta(t_spot, spot, t_iv, iv, resolution=resolution) if beta is None \
            else float(beta)
    s0 = asof(t_spot, spot, t_iv[:1])[0]
    first = jnp.argmax(jnp.isfinite(asof(t_spot, spot, t_iv)))
    s0 = asof(t_spot, spot, t_iv)[first]
    return _residual(t_spot, spot, t_iv, iv, jnp.asarray(b, dtype), iv[first], s0)


def residuals(t_spot, spot, t_iv, iv, *, skew, beta=None, resolution: float = 5.0):
    """D under the three conventions side by side: dict model -> :class:`Residual`."""
    return {m: residual(t_spot, spot, t_iv, iv, model=m, skew=skew, beta=beta,
                        resolution=resolution) for m in MODELS}
