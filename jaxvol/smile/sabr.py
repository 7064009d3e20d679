"""SABR implied volatilities (Hagan et al. 2002, Obloj 2008) and a batched fit with beta fixed.

dF = alpha_t F^beta dW, d alpha = nu alpha dZ, d<W, Z> = rho dt. Inputs broadcast; forward and
strike > 0, expiry in years. Lognormal (Black) vols by Hagan's formula (``method="hagan"``,
QuantLib's ``sabrVolatility``) or Obloj's correction (``method="obloj"``: the exact
short-expiry leading term of Berestycki, Busca & Florent with Hagan's first-order time term);
:func:`normal_vol` is Hagan's normal (Bachelier) vol (QuantLib's normal SABR).

References: Hagan, Kumar, Lesniewski & Woodward (2002), "Managing smile risk" (eqs 2.17a and
A.69a); Obloj (2008), "Fine-tune your smile: correction to Hagan et al.".
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol._dtypes import float_dtype
from jaxvol.calibrate import (FitResult, LMConfig, distinct_count, multistart, near_bounds,
                              refine_status)

__all__ = ["fit", "FIT_CONFIG", "hagan_residuals", "implied_vol", "LOWER", "normal_vol",
           "obloj_residuals", "PARAMS", "SABRFit", "UPPER", "z_over_x"]

_METHODS = ("hagan", "obloj")
_SMALL_Z = 1e-6  # below it z/x(z) is its series 1 - rho z/2 + (2 - 3 rho^2) z^2/12 (error ~z^3)
_SMALL_S = 1e-6  # below it expm1(s)/s is 1 + s/2 + s^2/6 (error ~s^3)
FIT_CONFIG = LMConfig(max_iterations=60)


def _floats(*values):
    dtype = float_dtype(*values)
    return jnp.broadcast_arrays(*[jnp.asarray(v, dtype) for v in values])


def z_over_x(z, rho):
    """z / x(z), x(z) = log((sqrt(1 - 2 rho z + z^2) + z - rho) / (1 - rho)), without
    cancellation: log1p forms on each side of z = 0 (using (sqrt(B)+z-rho)(sqrt(B)-z+rho) =
    1 - rho^2) and the series near 0 (double where, so gradients are clean at z = 0)."""
    small = jnp.abs(z) < _SMALL_Z
    zs = jnp.where(small, 1.0, z)
    root = jnp.sqrt(1.0 - 2.0 * rho * zs + zs * zs)
    excess = zs * (zs - 2.0 * rho) / (root + 1.0)  # sqrt(B) - 1
    x = jnp.where(zs >= 0, jnp.log1p((zs + excess) / (1.0 - rho)),
                  -jnp.log1p((excess - zs) / (1.0 + rho)))
    series = 1.0 - 0.5 * rho * z + (2.0 - 3.0 * rho * rho) * z * z / 12.0
    return jnp.where(small, series, zs / x)


def _expm1_over(s):
    """expm1(s) / s, 1 at s = 0."""
    small = jnp.abs(s) < _SMALL_S
    ss = jnp.where(small, 1.0, s)
    return jnp.where(small, 1.0 + s / 2.0 + s * s / 6.0, jnp.expm1(ss) / ss)


def _time_correction(fk_half, alpha, beta, rho, nu, expiry, leading):
    """1 + T [leading alpha^2 / (FK)^(1-beta) + rho beta nu alpha / (4 (FK)^((1-beta)/2))
    + (2 - 3 rho^2) nu^2 / 24] with fk_half = (FK)^((1-beta)/2)."""
    return 1.0 + expiry * (leading * alpha * alpha / (fk_half * fk_half)
                           + 0.25 * rho * beta * nu * alpha / fk_half
                           + (2.0 - 3.0 * rho * rho) * nu * nu / 24.0)


def _hagan(forward, strike, expiry, alpha, beta, rho, nu):
    one_minus_beta = 1.0 - beta
    log_moneyness = jnp.log(forward / strike)
    fk_half = (forward * strike) ** (0.5 * one_minus_beta)
    c = (one_minus_beta * log_moneyness) ** 2
    denominator = fk_half * (1.0 + c / 24.0 + c * c / 1920.0)
    z = nu / alpha * fk_half * log_moneyness
    correction = _time_correction(fk_half, alpha, beta, rho, nu, expiry,
                                  one_minus_beta ** 2 / 24.0)
    return alpha / denominator * z_over_x(z, rho) * correction


def _obloj(forward, strike, expiry, alpha, beta, rho, nu):
    one_minus_beta = 1.0 - beta
    log_moneyness = jnp.log(forward / strike)
    strike_power = strike ** one_minus_beta
    # (F^(1-b) - K^(1-b)) / (1-b) = K^(1-b) log(F/K) h(s), h(s) = expm1(s)/s, s = (1-b) log(F/K)
    ratio = _expm1_over(one_minus_beta * log_moneyness)
    z = nu / alpha * strike_power * log_moneyness * ratio
    leading = alpha / (strike_power * ratio)  # nu log(F/K) / z
    fk_half = (forward * strike) ** (0.5 * one_minus_beta)
    correction = _time_correction(fk_half, alpha, beta, rho, nu, expiry,
                                  one_minus_beta ** 2 / 24.0)
    return leading * z_over_x(z, rho) * correction


@edge(static=("method",))
def implied_vol(forward, strike, expiry, alpha, beta, rho, nu, *, method="hagan"):
    """SABR Black (lognormal) implied volatility; broadcasts; returns the inputs' float dtype."""
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    args = _floats(forward, strike, expiry, alpha, beta, rho, nu)
    return (_hagan if method == "hagan" else _obloj)(*args)


@edge
def normal_vol(forward, strike, expiry, alpha, beta, rho, nu):
    """SABR normal (Bachelier) implied volatility, Hagan et al. 2002 eq A.69a; broadcasts."""
    forward, strike, expiry, alpha, beta, rho, nu = _floats(
        forward, strike, expiry, alpha, beta, rho, nu)
    one_minus_beta = 1.0 - beta
    log_moneyness = jnp.log(forward / strike)
    fk_half = (forward * strike) ** (0.5 * one_minus_beta)
    c = (one_minus_beta * log_moneyness) ** 2
    d = log_moneyness * log_moneyness
    ratio = (1.0 + d / 24.0 + d * d / 1920.0) / (1.0 + c / 24.0 + c * c / 1920.0)
    z = nu / alpha * fk_half * log_moneyness
    correction = _time_correction(fk_half, alpha, beta, rho, nu, expiry,
                                  -beta * (2.0 - beta) / 24.0)
    return alpha * (forward * strike) ** (0.5 * beta) * ratio * z_over_x(z, rho) * correction


# --------------------------------------------------------------------------- calibration
PARAMS = ("alpha", "rho", "nu")
LOWER = (0.0, -1.0, 0.0)
UPPER = (jnp.inf, 1.0, jnp.inf)
_RHO_STARTS = (-0.5, 0.0, 0.5)
_NU_STARTS = (0.3, 1.0)
_WARM_FALLBACK = 2  # the (rho 0, nu 0.3) start of the grid
_NU2T_LIMIT = 25.0  # nu^2 T beyond it: a degenerate fit (Hagan's expansion is in nu^2 T)


class SABRFit(FitResult):
    """Per-slice result of :func:`fit`: the one fit-result shape
    (:class:`jaxvol.calibrate.FitResult`): ``params`` [slices, 3] (alpha, rho, nu), ``status``
    (:class:`jaxvol.calibrate.FitStatus`), ``loss``, ``iterations``, ``rmse`` of the implied
    vols over usable points, ``residuals`` [slices, strikes] (model minus market vol)."""

    __slots__ = ()


def hagan_residuals(params, forward, strike, expiry, vol, beta):
    return _hagan(forward, strike, expiry, params[0], beta, params[1], params[2]) - vol


def obloj_residuals(params, forward, strike, expiry, vol, beta):
    return _obloj(forward, strike, expiry, params[0], beta, params[1], params[2]) - vol


def _starts(forward, strike, vol, beta, usable):
    """alpha from the vol quoted nearest the forward (alpha ~ vol_atm F^(1-beta)), crossed with
    3 rho x 2 nu starts: [slices, 6, 3]."""
    distance = jnp.where(usable, jnp.abs(jnp.log(strike / forward[:, None])), jnp.inf)
    atm_vol = jnp.take_along_axis(vol, jnp.argmin(distance, axis=1)[:, None], axis=1)[:, 0]
    alpha = atm_vol * forward ** (1.0 - beta)
    grid = jnp.asarray([(r, n) for r in _RHO_STARTS for n in _NU_STARTS], vol.dtype)
    alphas = jnp.broadcast_to(alpha[:, None, None], (alpha.shape[0], grid.shape[0], 1))
    return jnp.concatenate([alphas, jnp.broadcast_to(grid, alphas.shape[:2] + (2,))], axis=2)


def fit(forward, strike, expiry, vol, *, beta, weights=None, mask=None, method="hagan",
        initial=None, config: LMConfig = FIT_CONFIG) -> SABRFit:
    """Fit (alpha, rho, nu) with beta fixed to every slice of [slices, strikes] Black vols.

    forward, expiry: [slices]; strike, vol: [slices, strikes]; beta: fixed (scalar or
    [slices]). Points that are masked, non-finite or non-positive are dropped.

    Cold start (``initial=None``): six start points per slice (:func:`_starts`), the best kept
    (:func:`jaxvol.calibrate.multistart`). Warm start (``initial`` [slices, 3], e.g. the
    previous night's params): two starts per slice, ``initial`` (where finite) and the grid's
    (rho 0, nu 0.3) start, the better kept; same residuals, bounds and statuses as a cold fit.

    Status (:class:`jaxvol.calibrate.FitStatus`): TOO_FEW_POINTS below 3 usable points,
    BAD_INPUT for a non-positive forward or expiry, UNIDENTIFIED with fewer than 3 distinct
    strikes, DEGENERATE where nu^2 expiry > 25 (far outside the expansion's validity),
    AT_BOUND where |rho| or nu sit within 1e-6 of their bounds (rho = +-1, nu = 0); CONVERGED
    only for a usable fit.
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    dtype = float_dtype(forward, strike, expiry, vol)
    strike, vol = [jnp.asarray(x, dtype) for x in (strike, vol)]
    if strike.ndim != 2 or strike.shape != vol.shape:
        raise ValueError(f"strike and vol must both be [slices, strikes], got {strike.shape} "
                         f"and {vol.shape}")
    slices = strike.shape[0]
    if initial is not None:
        initial = jnp.asarray(initial, dtype)
        if initial.shape != (slices, len(PARAMS)):
            raise ValueError(f"initial must be [slices, 3] = {(slices, len(PARAMS))} (alpha, "
                             f"rho, nu), got {initial.shape}")
    forward, expiry, beta = [jnp.broadcast_to(jnp.asarray(x, dtype), (slices,))
                             for x in (forward, expiry, beta)]
    weights = jnp.ones_like(vol) if weights is None else jnp.broadcast_to(
        jnp.asarray(weights, dtype), vol.shape)
    mask = jnp.ones(vol.shape, bool) if mask is None else jnp.asarray(mask)
    usable = (mask & jnp.isfinite(strike) & (strike > 0) & jnp.isfinite(vol) & (vol > 0)
              & jnp.isfinite(weights) & (weights > 0))
    strike = jnp.where(usable, strike, forward[:, None])  # double where: safe dummies
    vol = jnp.where(usable, vol, 1.0)
    starts = _starts(forward, strike, vol, beta, usable)
    if initial is not None:
        default = starts[:, _WARM_FALLBACK]
        warm = jnp.where(jnp.all(jnp.isfinite(initial), axis=1, keepdims=True), initial, default)
        starts = jnp.stack([warm, default], axis=1)
    count = jnp.sum(usable.astype(jnp.int32), axis=1)
    lane_ok = (count >= len(PARAMS)) & (forward > 0) & (expiry > 0)
    starts = jnp.where(lane_ok[:, None, None], starts, jnp.nan)
    residual_fn = hagan_residuals if method == "hagan" else obloj_residuals
    result = multistart(residual_fn, starts, forward, strike, expiry, vol, beta,
                        weights=jnp.where(usable, weights, 0.0), mask=usable, lower=LOWER,
                        upper=UPPER, config=config)
    params = result.params
    status = refine_status(
        result.status, too_few=count < len(PARAMS),
        unidentified=distinct_count(strike, usable, limit=len(PARAMS)) < len(PARAMS),
        degenerate=params[:, 2] * params[:, 2] * expiry > _NU2T_LIMIT,
        at_bound=near_bounds(params[:, 1:], LOWER[1:], UPPER[1:]))
    return SABRFit(params, status, result.loss, result.iterations, result.rmse,
                   result.residuals)
