"""Vanna-volga smile (Castagna & Mercurio 2007, "The vanna-volga method for implied
volatilities", Risk, Jan. 2007, eqs. (14) and (15)).

Three pillars K1 < K2 < K3 (25-delta put, ATM, 25-delta call) with vols s1, s2, s3. With
``y1 = ln(K2/K) ln(K3/K) / (ln(K2/K1) ln(K3/K1))``, ``y2 = ln(K/K1) ln(K3/K) / (ln(K2/K1)
ln(K3/K2))``, ``y3 = ln(K/K1) ln(K/K2) / (ln(K3/K1) ln(K3/K2))``:

* first order: ``sigma(K) = y1 s1 + y2 s2 + y3 s3``;
* second order: ``sigma(K) = s2 + (-s2 + sqrt(s2^2 + d1 d2 (2 s2 D1 + D2))) / (d1 d2)`` with
  ``D1 = first order - s2``, ``D2 = y1 d1(K1) d2(K1) (s1 - s2)^2 + y3 d1(K3) d2(K3) (s3 - s2)^2``
  and ``d1, d2`` the Black d's at the ATM vol s2.

Where the second-order square root's argument is negative, the pillars are not ordered or the
resulting vol is not positive, the vol is NaN (inputs masked first, so gradients of other lanes
stay finite). Where ``d1 d2`` vanishes the second-order formula is evaluated by its Taylor
expansion ``s2 + X/(2 s2) - d1 d2 X^2/(8 s2^3)`` with ``X = 2 s2 D1 + D2``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol._dtypes import as_float, float_dtype

__all__ = ["vanna_volga_kernel", "vanna_volga_vol"]

_SERIES_THRESHOLD = 1e-6  # |d1 d2 X| / s2^2 below this: the series' next term is < 1e-18 s2


def _weights(y, y1, y2, y3):
    """Castagna-Mercurio's y1, y2, y3 in log-moneyness y = ln(K/F) (ln(Ka/Kb) = ya - yb)."""
    w1 = (y2 - y) * (y3 - y) / ((y2 - y1) * (y3 - y1))
    w2 = (y - y1) * (y3 - y) / ((y2 - y1) * (y3 - y2))
    w3 = (y - y1) * (y - y2) / ((y3 - y1) * (y3 - y2))
    return w1, w2, w3


def _d1_d2(y, atm_std_dev):
    d1 = -y / atm_std_dev + 0.5 * atm_std_dev
    return d1 * (d1 - atm_std_dev)


def _second_order(first, y, ys, vols, weights, atm_std_dev):
    s1, s2, s3 = vols
    w1, _, w3 = weights
    dd = _d1_d2(y, atm_std_dev)
    d_second = (w1 * _d1_d2(ys[0], atm_std_dev) * (s1 - s2) ** 2
                + w3 * _d1_d2(ys[2], atm_std_dev) * (s3 - s2) ** 2)
    x = 2.0 * s2 * (first - s2) + d_second
    radicand = s2 * s2 + dd * x
    use_series = jnp.abs(dd * x) < _SERIES_THRESHOLD * s2 * s2
    safe_dd = jnp.where(use_series, 1.0, dd)
    root = jnp.sqrt(jnp.where(radicand > 0, radicand, 1.0))
    exact = s2 + (root - s2) / safe_dd
    series = s2 + x / (2.0 * s2) - dd * x * x / (8.0 * s2**3)
    value = jnp.where(use_series, series, exact)
    return jnp.where(use_series | (radicand > 0), value, jnp.nan)


def vanna_volga_kernel(y, pillar_ys, pillar_vols, expiry, *, order=2):
    """VV vol at log-moneyness ``y`` (scalar) from pillars ``pillar_ys``/``pillar_vols`` [3]."""
    y1, y2, y3 = pillar_ys[0], pillar_ys[1], pillar_ys[2]
    ordered = (y1 < y2) & (y2 < y3) & jnp.all(pillar_vols > 0) & (expiry > 0)
    ys = (jnp.where(ordered, y1, -1.0), jnp.where(ordered, y2, 0.0), jnp.where(ordered, y3, 1.0))
    vols = tuple(jnp.where(ordered, pillar_vols[i], 0.1) for i in range(3))
    weights = _weights(y, *ys)
    first = sum(w * v for w, v in zip(weights, vols))
    if order == 1:
        value = first
    else:
        atm_std_dev = vols[1] * jnp.sqrt(jnp.where(ordered, expiry, 1.0))
        value = _second_order(first, y, ys, vols, weights, atm_std_dev)
    return jnp.where(ordered & (value > 0), value, jnp.nan)


@edge(static=("order",))
def vanna_volga_vol(strike, *, forward, expiry, pillar_strikes, pillar_vols, order=2):
    """Vanna-volga implied vol at ``strike`` (broadcasts; pillars on the last axis, size 3).

    ``pillar_strikes`` = (25-delta put, ATM, 25-delta call) strikes, ``pillar_vols`` their vols
    (decimals); ``order`` 1 or 2. NaN where the method breaks down (see the module docstring).
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    dtype = float_dtype(strike, forward, expiry, pillar_strikes, pillar_vols)
    strike, forward, expiry = as_float(dtype, strike, forward, expiry)
    pillar_strikes, pillar_vols = as_float(dtype, pillar_strikes, pillar_vols)
    y = jnp.log(strike / forward)
    pillar_ys = jnp.log(pillar_strikes / forward[..., None])
    return _vanna_volga_batch(y, pillar_ys, pillar_vols, expiry, order=order)


@functools.partial(jax.jit, static_argnames=("order",))
def _vanna_volga_batch(y, pillar_ys, pillar_vols, expiry, *, order):
    kernel = functools.partial(vanna_volga_kernel, order=order)
    return jnp.vectorize(kernel, signature="(),(n),(n),()->()")(y, pillar_ys, pillar_vols, expiry)
