"""Heston calibration to whole surfaces, batched over underlyings, on the shared LM engine.

One lane = one underlying's surface: strikes [E, K] on E expiries (pad ragged surfaces and mask
the padding). The model prices each expiry as one smile (the characteristic function is shared by
its strikes, :func:`jaxvol.heston.analytic.smile_otm`), ``jax.jacfwd`` differentiates it inside
:func:`jaxvol.calibrate.least_squares`, and the parameters (v0, kappa, theta, sigma, rho) are kept
inside box bounds by the engine's smooth transforms.

Objectives: ``"price"`` (residual = model - quote) or ``"vol"`` (vega-weighted: (model - quote)
/ vega of the quote's Black implied vol, the first-order implied-vol error, which avoids an
implied-vol inversion per iteration). Optional Feller penalty: one extra residual
``sqrt(feller_weight) * max(sigma^2 - 2 kappa theta, 0)``.
"""

from __future__ import annotations

import functools
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol import black, implied
from jaxvol.calibrate import (FitResult, LMConfig, distinct_count, least_squares,
                              near_bounds, refine_status, rmse_of)
from jaxvol.heston import analytic

__all__ = ["calibrate", "default_start", "HestonFit", "implied_vol_rmse", "LOWER", "model_surface",
           "PARAM_NAMES", "quote_vegas", "Surface", "surface_prices", "UPPER", "vol_start",
           "with_vol_noise"]

PARAM_NAMES = ("v0", "kappa", "theta", "sigma", "rho")
#: default box: v0, theta in [1e-4, 2], kappa in [1e-3, 30], sigma in [1e-3, 5], rho in (-1, 1)
LOWER = (1e-4, 1e-3, 1e-4, 1e-3, -0.999)
UPPER = (2.0, 30.0, 2.0, 5.0, 0.999)
#: quadrature used while fitting: quotes carry noise far above its 1e-9 relative error
FIT_NODES = 64
FIT_CONTOURS = 4


class Surface(NamedTuple):
    """Quotes of one or many underlyings (leading axis: underlyings when batched).

    strike [E, K], expiry [E] (years), quote [E, K] option prices, is_call [E, K] bool,
    spot [], rate [E], div [E] (continuously compounded), mask [E, K] bool.
    """

    strike: jax.Array
    expiry: jax.Array
    quote: jax.Array
    is_call: jax.Array
    spot: jax.Array
    rate: jax.Array
    div: jax.Array
    mask: jax.Array


def surface_prices(params, strike, expiry, spot, rate, div, is_call, *, nodes=FIT_NODES,
                   contours=FIT_CONTOURS):
    """Model prices [E, K] of one surface for params = (v0, kappa, theta, sigma, rho)."""
    v0, kappa, theta, sigma, rho = (params[i] for i in range(5))

    def smile(strikes, t, r, q, calls):
        values = dict(expiry=t, spot=spot, rate=r, div=q, v0=v0, kappa=kappa, theta=theta,
                      sigma=sigma, rho=rho)
        return analytic._smile_values(strikes, calls, values, nodes, contours)

    return jax.vmap(smile)(strike, expiry, rate, div, is_call)


def _residuals(params, strike, expiry, spot, rate, div, is_call, quote, scale, feller_weight, *,
               nodes=FIT_NODES, contours=FIT_CONTOURS):
    model = surface_prices(params, strike, expiry, spot, rate, div, is_call, nodes=nodes,
                           contours=contours)
    fit = ((model - quote) / scale).reshape(-1)
    gap = params[3] * params[3] - 2.0 * params[1] * params[2]
    penalty = jnp.sqrt(feller_weight) * jnp.maximum(gap, 0.0)
    return jnp.concatenate([fit, penalty[None]])


@functools.lru_cache(maxsize=None)
def _residuals_for(nodes: int, contours: int):
    """One jitted residual function per quadrature (the engine takes it as a static argument).

    Jitted so that the engine's several uses of it (the start point's Jacobian, the Jacobian in
    the LM loop body, the final residuals, the implicit derivative) share one traced and lowered
    pricing program instead of each inlining its own copy; XLA still inlines it when compiling."""
    return jax.jit(functools.partial(_residuals, nodes=nodes, contours=contours))


@jax.jit
def quote_vegas(surface: Surface):
    """Black vega of each quote at its own implied vol (NaN where no implied vol exists)."""
    expiry = surface.expiry[..., None]
    forward = surface.spot[..., None, None] * jnp.exp((surface.rate - surface.div)[..., None]
                                                      * expiry)
    discount = jnp.exp(-surface.rate[..., None] * expiry)
    vol = implied.implied_vol(surface.quote, forward, surface.strike, expiry, surface.is_call,
                              discount=discount).vol
    return black.greeks(forward, surface.strike, expiry, vol, surface.is_call,
                        discount=discount).vega


def vol_start(surface: Surface, lower=LOWER, upper=UPPER):
    """Start point per underlying from the quotes' implied vols: v0 = the squared vol quoted
    nearest the forward on the first expiry with a usable quote, theta the same on the last,
    kappa 2, sigma 0.6, rho -0.6; pulled inside the box (1% of its width from each bound).
    Underlyings without a usable quote start from a 0.2 vol."""
    expiry = surface.expiry[..., None]
    forward = surface.spot[..., None, None] * jnp.exp((surface.rate - surface.div)[..., None]
                                                      * expiry)
    discount = jnp.exp(-surface.rate[..., None] * expiry)
    vol = implied.implied_vol(surface.quote, forward, surface.strike, expiry, surface.is_call,
                              discount=discount).vol
    usable = surface.mask & jnp.isfinite(vol) & (vol > 0)
    distance = jnp.where(usable, jnp.abs(jnp.log(surface.strike / forward)), jnp.inf)
    nearest = jnp.argmin(distance, axis=-1)
    atm = jnp.take_along_axis(vol, nearest[..., None], axis=-1)[..., 0]  # [U, E]
    has = usable.any(axis=-1)
    slots = jnp.arange(has.shape[-1])
    first = jnp.argmin(jnp.where(has, slots, has.shape[-1]), axis=-1)
    last = jnp.argmax(jnp.where(has, slots, -1), axis=-1)

    def pick(slot):
        value = jnp.take_along_axis(atm, slot[..., None], axis=-1)[..., 0]
        return jnp.where(has.any(axis=-1), value, 0.2)

    v_first, v_last = pick(first), pick(last)
    ones = jnp.ones_like(v_first)
    start = jnp.stack([v_first ** 2, 2.0 * ones, v_last ** 2, 0.6 * ones, -0.6 * ones], axis=-1)
    low, high = jnp.asarray(lower, start.dtype), jnp.asarray(upper, start.dtype)
    return jnp.clip(start, low + 0.01 * (high - low), high - 0.01 * (high - low))


def default_start(surface: Surface):
    """Start point per underlying: v0 = theta = mean ATM-ish implied variance proxy 0.04-scaled,
    kappa 1.5, sigma 0.5, rho -0.5."""
    lanes = surface.spot.shape[0]
    row = jnp.asarray([0.04, 1.5, 0.04, 0.5, -0.5], surface.quote.dtype)
    return jnp.broadcast_to(row, (lanes, 5))


class HestonFit(FitResult):
    """Per-underlying result of :func:`calibrate`: the one fit-result shape
    (:class:`jaxvol.calibrate.FitResult`): ``params`` [U, 5] (:data:`PARAM_NAMES` order),
    ``status`` (:class:`jaxvol.calibrate.FitStatus`), ``loss``, ``iterations``, ``rmse`` [U] of
    the objective's residuals over the usable quotes (in vol for ``objective="vol"``: the
    vega-weighted price error is the first-order implied-vol error; in price units for
    ``"price"``), ``residuals`` [U, E * K + 1] (the last one is the Feller penalty row)."""

    __slots__ = ()


def calibrate(surface: Surface, initial=None, *, objective="vol", feller_weight=0.0,
              lower=LOWER, upper=UPPER, config=LMConfig(), params0=None, nodes=FIT_NODES,
              contours=FIT_CONTOURS) -> HestonFit:
    """Fit (v0, kappa, theta, sigma, rho) to every underlying of a batch of surfaces.

    ``surface`` fields carry a leading underlyings axis [U, ...]; ``initial`` [U, 5] is the warm
    start (default :func:`default_start`; rows that are not finite fall back to it);
    ``params0`` is its old name (deprecated). Returns :class:`HestonFit` (params in
    :data:`PARAM_NAMES` order). Masked quotes (and quotes without an implied vol under
    ``objective="vol"``) do not count. ``nodes``, ``contours``: the Fourier quadrature of the
    fit (:func:`jaxvol.heston.price`; the defaults' 1e-9 relative error is far below quote
    noise; fewer nodes are faster). :func:`vol_start` is a data-driven start to pass as
    ``initial``.

    Status (:class:`jaxvol.calibrate.FitStatus`): TOO_FEW_POINTS with fewer usable quotes than
    5 parameters; UNIDENTIFIED with fewer than two expiries carrying usable quotes (v0, kappa
    and theta then trade off) or fewer than three distinct strikes; AT_BOUND where a parameter
    lies within 1e-6 (relative) of its box bound (``lower``, ``upper``: kappa at its cap,
    sigma at its cap, ...); CONVERGED only for a usable fit.
    """
    if objective not in ("price", "vol"):
        raise ValueError(f"objective must be 'price' or 'vol', got {objective!r}")
    if not float(feller_weight) >= 0.0:
        raise ValueError(f"feller_weight must be >= 0, got {feller_weight!r}")
    if params0 is not None:
        if initial is not None:
            raise ValueError("pass the warm start as initial= only (params0 is its old name)")
        warnings.warn("heston.calibrate(params0=...) is deprecated: use initial=",
                      DeprecationWarning, stacklevel=2)
        initial = params0
    dtype = surface.quote.dtype
    start = default_start(surface)
    if initial is not None:
        initial = jnp.asarray(initial, dtype)
        if initial.shape != start.shape:
            raise ValueError(f"initial must be [underlyings, 5] = {start.shape}, got "
                             f"{initial.shape}")
        start = jnp.where(jnp.all(jnp.isfinite(initial), axis=1, keepdims=True), initial,
                          start)
    mask = surface.mask
    if objective == "vol":
        scale = quote_vegas(surface)
        mask = mask & jnp.isfinite(scale) & (scale > 0)
        scale = jnp.where(mask, scale, 1.0)
    else:
        scale = jnp.ones_like(surface.quote)
    lanes = start.shape[0]
    flat_mask = jnp.concatenate([mask.reshape(lanes, -1), jnp.ones((lanes, 1), bool)], axis=1)
    weight = jnp.full((lanes,), feller_weight, dtype)
    result = least_squares(
        _residuals_for(int(nodes), int(contours)), start, surface.strike, surface.expiry, surface.spot, surface.rate,
        surface.div, surface.is_call, surface.quote, scale, weight, mask=flat_mask,
        lower=None if lower is None else np.asarray(lower),
        upper=None if upper is None else np.asarray(upper), config=config)
    quotes = mask.reshape(lanes, -1)
    expiries = jnp.sum(jnp.any(mask, axis=-1), axis=-1)
    strikes = distinct_count(jnp.where(mask, surface.strike, 0.0).reshape(lanes, -1), quotes,
                             limit=3)
    box = np.broadcast_to(-np.inf if lower is None else np.asarray(lower, float), (5,)), \
        np.broadcast_to(np.inf if upper is None else np.asarray(upper, float), (5,))
    status = refine_status(
        result.status, too_few=jnp.sum(quotes, axis=1) < len(PARAM_NAMES),
        unidentified=(expiries < 2) | (strikes < 3),
        at_bound=near_bounds(result.params, *box))
    residuals = result.residuals
    return HestonFit(result.params, status, result.loss, result.iterations,
                     rmse_of(residuals[:, :-1], quotes), residuals)


def implied_vol_rmse(params, surface: Surface):
    """Root-mean-square implied-vol error [U] of the fitted params against the quotes."""
    model = jax.vmap(surface_prices)(params, surface.strike, surface.expiry, surface.spot,
                                     surface.rate, surface.div, surface.is_call)
    expiry = surface.expiry[..., None]
    forward = surface.spot[..., None, None] * jnp.exp((surface.rate - surface.div)[..., None]
                                                      * expiry)
    discount = jnp.exp(-surface.rate[..., None] * expiry)

    def vols(prices):
        return implied.implied_vol(prices, forward, surface.strike, expiry, surface.is_call,
                                   discount=discount).vol

    error = vols(model) - vols(surface.quote)
    usable = surface.mask & jnp.isfinite(error)
    count = jnp.sum(usable, axis=(1, 2)).astype(error.dtype)
    return jnp.sqrt(jnp.sum(jnp.where(usable, error * error, 0.0), axis=(1, 2)) / count)


def model_surface(params, expiry, moneyness, *, spot=1.0, rate=0.0, div=0.0, nodes=None,
                  contours=None):
    """Synthetic out-of-the-money surfaces from Heston params [U, 5] (v0, kappa, theta, sigma,
    rho): expiries [E] in years, strikes K = F exp(z sqrt(w T)) for the standardised moneyness
    z [K] (w the fair variance), puts below the forward and calls above; exact model prices at
    the default (1e-10) quadrature unless ``nodes``/``contours`` say otherwise."""
    params = jnp.asarray(params)
    return _model_surface(params, jnp.asarray(expiry, params.dtype),
                          jnp.asarray(moneyness, params.dtype), spot, rate, div,
                          nodes or analytic.NODES, contours or analytic.CONTOURS)


@functools.partial(jax.jit, static_argnums=(6, 7))
def _model_surface(params, expiry, z, spot, rate, div, nodes, contours):
    dtype = params.dtype
    lanes = params.shape[0]
    expiry = jnp.broadcast_to(expiry, (lanes, expiry.shape[0]))
    variance = analytic.fair_variance(expiry, params[:, :1], params[:, 1:2], params[:, 2:3])
    rate_e = jnp.full(expiry.shape, rate, dtype)
    div_e = jnp.full(expiry.shape, div, dtype)
    spot = jnp.asarray(spot, dtype)
    forward = spot * jnp.exp((rate_e - div_e) * expiry)
    strike = forward[..., None] * jnp.exp(z * jnp.sqrt(variance * expiry)[..., None])
    is_call = jnp.broadcast_to(z >= 0, strike.shape)
    spot_u = jnp.broadcast_to(spot, (lanes,))
    quote = jax.vmap(lambda p, k, t, s, r, q, c: surface_prices(
        p, k, t, s, r, q, c, nodes=nodes, contours=contours))(params, strike, expiry, spot_u,
                                                                 rate_e, div_e, is_call)
    return Surface(strike, expiry, quote, is_call, spot_u, rate_e, div_e,
                   jnp.ones(strike.shape, bool))


@jax.jit
def with_vol_noise(surface: Surface, key, noise):
    """Quotes re-priced with Black implied vols shifted by N(0, noise^2) (absolute vol)."""
    expiry = surface.expiry[..., None]
    forward = surface.spot[..., None, None] * jnp.exp((surface.rate - surface.div)[..., None]
                                                      * expiry)
    discount = jnp.exp(-surface.rate[..., None] * expiry)
    vol = implied.implied_vol(surface.quote, forward, surface.strike, expiry, surface.is_call,
                              discount=discount).vol
    bumped = vol + noise * jax.random.normal(key, vol.shape, vol.dtype)
    quote = black.black_price(forward, surface.strike, expiry, bumped, surface.is_call,
                              discount=discount)
    return surface._replace(quote=quote, mask=surface.mask & jnp.isfinite(quote))
