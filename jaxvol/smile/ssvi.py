"""SSVI surfaces (Gatheral & Jacquier 2014): w(k, theta) = theta/2 (1 + rho phi k +
sqrt((phi k + rho)^2 + 1 - rho^2)), phi = phi(theta), theta_t the ATM total variance curve.

Two phi forms with their static no-arbitrage conditions (GJ 2014, section 4):
Heston-like ``phi = (1 - (1 - e^{-lambda theta})/(lambda theta)) / (lambda theta)``, free of
static arbitrage when lambda >= (1 + |rho|)/4 (their corollary 4.1); power law
``phi = eta / (theta^gamma (1 + theta)^(1 - gamma))`` with 0 < gamma <= 1/2, free of static
arbitrage when eta (1 + |rho|) <= 2 (then theta phi (1+|rho|) < 4 and theta phi^2 (1+|rho|) <= 4,
theorem 4.2, and 0 <= d(theta phi)/d theta <= phi, theorem 4.1). Calendar arbitrage also needs
theta_t non-decreasing. :func:`fit` enforces all of these by construction: theta_t is a
cumulative sum of positive increments, and lambda / eta are mapped into their allowed ranges.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol._dtypes import float_dtype
from jaxvol.calibrate import (FitResult, LMConfig, distinct_count, multistart,
                              refine_status)

__all__ = ["butterfly_free", "calendar_free", "fit", "FIT_CONFIG", "heston_phi",
           "heston_residuals", "PHI_FORMS", "power_law_phi", "power_law_residuals", "RHO_LIMIT",
           "SSVIFit", "to_raw_svi", "total_variance"]

PHI_FORMS = ("heston", "power_law")
FIT_CONFIG = LMConfig(max_iterations=100)
RHO_LIMIT = 0.999  # |rho| -> 1 makes a wing's variance vanish (a degenerate surface): capped
_ABS_SMOOTHING = 1e-6  # |rho| ~ sqrt(rho^2 + 1e-12) >= |rho|: conservative, smooth at 0


def _floats(*values):
    dtype = float_dtype(*values)
    return [jnp.asarray(v, dtype) for v in values]


@edge
def heston_phi(theta, lam):
    """Heston-like phi(theta) = (1 - (1 - e^{-x}) / x) / x = (x - 1 + e^{-x}) / x^2, x = lambda
    theta (GJ 2014, eq 4.4)."""
    theta, lam = _floats(theta, lam)
    x = lam * theta
    small = jnp.abs(x) < 0.1  # below it the direct form would lose 2 eps / x to cancellation
    xs = jnp.where(small, 1.0, x)
    series = jnp.zeros_like(x)
    for j in range(12, -1, -1):  # sum_j (-x)^j / (j + 2)!, truncation < 0.1^13 / 15! ~ 1e-25
        series = series * -x + 1.0 / math.factorial(j + 2)
    return jnp.where(small, series, (xs + jnp.expm1(-xs)) / (xs * xs))


@edge
def power_law_phi(theta, eta, gamma):
    """Power-law phi(theta) = eta / (theta^gamma (1 + theta)^(1 - gamma))."""
    theta, eta, gamma = _floats(theta, eta, gamma)
    return eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))


@edge
def total_variance(k, theta, rho, phi):
    """SSVI total variance at log forward moneyness k for ATM total variance theta and
    phi = phi(theta) (broadcasts)."""
    k, theta, rho, phi = _floats(k, theta, rho, phi)
    x = phi * k + rho
    return 0.5 * theta * (1.0 + rho * phi * k + jnp.sqrt(x * x + 1.0 - rho * rho))


@edge
def to_raw_svi(theta, rho, phi):
    """The raw SVI parameters (a, b, rho, m, sigma) of an SSVI slice (GJ 2014, lemma 3.3)."""
    theta, rho, phi = _floats(theta, rho, phi)
    root = jnp.sqrt(1.0 - rho * rho)
    return (0.5 * theta * (1.0 - rho * rho), 0.5 * theta * phi, rho, -rho / phi, root / phi)


@edge
def butterfly_free(theta, rho, phi):
    """GJ theorem 4.2's sufficient condition for no butterfly arbitrage:
    theta phi (1+|rho|) < 4 and theta phi^2 (1+|rho|) <= 4."""
    theta, rho, phi = _floats(theta, rho, phi)
    scale = 1.0 + jnp.abs(rho)
    return (theta * phi * scale < 4.0) & (theta * phi * phi * scale <= 4.0)


def calendar_free(theta, rho, phi_fn):
    """GJ theorem 4.1 along the curve theta[..., E]: theta non-decreasing and
    0 <= d(theta phi)/d theta <= (1 + sqrt(1 - rho^2)) phi / rho^2 at every theta (autodiff)."""
    theta, rho = _floats(theta, rho)
    slope = jax.vmap(jax.grad(lambda t: t * phi_fn(t)))(theta.reshape(-1)).reshape(theta.shape)
    phi = phi_fn(theta)
    rho2 = jnp.maximum(rho * rho, jnp.finfo(theta.dtype).tiny)
    increasing = jnp.all(jnp.diff(theta, axis=-1) >= 0, axis=-1)
    bounded = (slope >= 0) & (slope * rho2 <= (1.0 + jnp.sqrt(1.0 - rho * rho)) * phi)
    return increasing & jnp.all(bounded, axis=-1)


# --------------------------------------------------------------------------- fit
class SSVIFit(FitResult):
    """Per-underlying result of :func:`fit`: the one fit-result shape
    (:class:`jaxvol.calibrate.FitResult`): ``params`` [U, 1 + F + E] = (rho, the F phi
    parameters, theta_1 .. theta_E) (the layout ``initial=`` takes), ``status``
    (:class:`jaxvol.calibrate.FitStatus`), ``loss``, ``iterations``, ``rmse`` [U]
    total-variance error over usable points, ``residuals`` [U, E, N]; and the same parameters
    by name (views of ``params``): ``theta`` [U, E] ATM total variances (non-decreasing),
    ``rho`` [U], ``phi_params`` [U, 1] (lambda) or [U, 2] (eta, gamma)."""

    __slots__ = ()

    @property
    def theta(self):
        return self.params[..., self.params.shape[-1] - self.residuals.shape[-2]:]

    @property
    def rho(self):
        return self.params[..., 0]

    @property
    def phi_params(self):
        return self.params[..., 1:self.params.shape[-1] - self.residuals.shape[-2]]


def _smooth_abs(rho):
    return jnp.sqrt(rho * rho + _ABS_SMOOTHING ** 2)


def _heston_from_raw(raw, rho):
    return (0.25 * (1.0 + _smooth_abs(rho)) + jnp.exp(raw[0]),)  # lambda >= (1+|rho|)/4


def _power_law_from_raw(raw, rho):
    eta = 2.0 / (1.0 + _smooth_abs(rho)) * jax.nn.sigmoid(raw[0])  # eta (1+|rho|) < 2
    return eta, raw[1]  # gamma in (0, 1/2) by the engine's box bounds


def _encode(params, form, expiries):
    """(rho, phi params, theta [E]) in natural units -> the engine's parameters (the inverse of
    :func:`_decode`); phi parameters are clipped just inside their ranges and theta increments
    floored, so any finite start maps to a finite engine point."""
    rho = jnp.clip(params[0], -RHO_LIMIT, RHO_LIMIT)
    limit = 1.0 + _smooth_abs(rho)
    tiny = jnp.finfo(params.dtype).eps
    if form == "heston":
        phi_raw = [jnp.log(jnp.maximum(params[1] - 0.25 * limit, tiny))]
    else:
        share = jnp.clip(params[1] * limit / 2.0, tiny, 1.0 - 1e-9)
        phi_raw = [jnp.log(share) - jnp.log1p(-share),
                   jnp.clip(params[2], 1e-9, 0.5 - 1e-9)]
    theta = params[-expiries:]
    steps = jnp.diff(theta, prepend=jnp.zeros_like(theta[:1]))
    floor = 1e-3 * jnp.max(theta) / expiries
    return jnp.concatenate([rho[None], jnp.stack(phi_raw),
                            jnp.log(jnp.maximum(steps, jnp.maximum(floor, tiny)))])


def _phi(form, theta, phi_params):
    return heston_phi(theta, *phi_params) if form == "heston" else power_law_phi(theta, *phi_params)


def _decode(params, form, expiries):
    """Engine parameters -> (theta[E], rho, phi params): rho, raw phi parameters, then the
    log increments of theta."""
    rho = params[0]
    count = 1 if form == "heston" else 2
    phi_params = (_heston_from_raw if form == "heston" else _power_law_from_raw)(
        params[1:1 + count], rho)
    theta = jnp.cumsum(jnp.exp(params[1 + count:1 + count + expiries]))
    return theta, rho, phi_params


def _surface_residuals(form, params, k, w):
    theta, rho, phi_params = _decode(params, form, k.shape[0])
    phi = _phi(form, theta, phi_params)
    return (total_variance(k, theta[:, None], rho, phi[:, None]) - w).reshape(-1)


def heston_residuals(params, k, w):
    return _surface_residuals("heston", params, k, w)


def power_law_residuals(params, k, w):
    return _surface_residuals("power_law", params, k, w)


def _atm_variance(k, w, usable):
    """w at k = 0 per expiry: linear interpolation between the usable points nearest k = 0 on
    either side (the nearest one if k = 0 is outside the quotes)."""
    below = jnp.where(usable & (k <= 0), k, -jnp.inf)
    above = jnp.where(usable & (k >= 0), k, jnp.inf)
    i_lo, i_hi = jnp.argmax(below, axis=-1), jnp.argmin(above, axis=-1)
    take = lambda x, i: jnp.take_along_axis(x, i[..., None], axis=-1)[..., 0]  # noqa: E731
    k_lo, k_hi, w_lo, w_hi = take(k, i_lo), take(k, i_hi), take(w, i_lo), take(w, i_hi)
    has_lo, has_hi = jnp.isfinite(take(below, i_lo)), jnp.isfinite(take(above, i_hi))
    gap = jnp.where(k_hi > k_lo, k_hi - k_lo, 1.0)
    both = w_lo + (w_hi - w_lo) * (0.0 - k_lo) / gap
    return jnp.where(has_lo & has_hi, jnp.where(k_hi > k_lo, both, w_lo),
                     jnp.where(has_lo, w_lo, jnp.where(has_hi, w_hi, jnp.nan)))


_RHO_STARTS = (-0.7, -0.3, 0.2)


def _starts(k, w, usable, form):
    """[U, 3, P] start points: theta from ATM interpolation made increasing, three rho values,
    phi parameters in the middle of their ranges."""
    atm = _atm_variance(k, w, usable)
    atm = jnp.where(jnp.isfinite(atm), atm, 0.0)
    theta = jax.lax.cummax(jnp.maximum(atm, 1e-6), axis=1)
    increments = jnp.diff(theta, axis=1, prepend=jnp.zeros_like(theta[:, :1]))
    floor = 1e-3 * theta[:, -1:] / theta.shape[1]
    log_increments = jnp.log(jnp.maximum(increments, floor))
    phi_raw = jnp.asarray([0.0] if form == "heston" else [0.0, 0.25], k.dtype)  # gamma 1/4
    starts = [jnp.concatenate([jnp.full_like(theta[:, :1], rho),
                               jnp.broadcast_to(phi_raw, (theta.shape[0], phi_raw.shape[0])),
                               log_increments], axis=1) for rho in _RHO_STARTS]
    return jnp.stack(starts, axis=1)


def _bounds(form, expiries):
    phi_lower = (-jnp.inf,) if form == "heston" else (-jnp.inf, 0.0)
    phi_upper = (jnp.inf,) if form == "heston" else (jnp.inf, 0.5)
    return ((-RHO_LIMIT,) + phi_lower + (-jnp.inf,) * expiries,
            (RHO_LIMIT,) + phi_upper + (jnp.inf,) * expiries)


def fit(k, total_variance, *, weights=None, mask=None, phi="heston", initial=None,
        config: LMConfig = FIT_CONFIG) -> SSVIFit:
    """Fit an SSVI surface to all expiries of each underlying at once.

    Args:
      k, total_variance: [underlyings, expiries, strikes], expiries sorted ascending.
      weights, mask: as in :func:`jaxvol.svi.fit` (residual multipliers; False drops a point;
        non-finite or non-positive variances are dropped too).
      phi: "heston" or "power_law". The fitted surface satisfies the form's no-butterfly and
        no-calendar conditions by construction; |rho| < ``RHO_LIMIT`` = 0.999.
      initial: warm start [U, 1 + F + E] in the layout of :attr:`SSVIFit.params` (e.g. the
        previous fit's ``params``); it is one start beside the three cold ones (the best kept),
        so a warm fit is never worse than a cold one. Non-finite rows fall back to cold starts.

    Status (:class:`jaxvol.calibrate.FitStatus`): TOO_FEW_POINTS for an underlying with fewer
    usable points than parameters (2 or 3 + expiries) or an expiry without any usable point;
    UNIDENTIFIED where no expiry has two distinct strikes (rho and phi are then free);
    AT_BOUND where |rho| reaches ``RHO_LIMIT`` or a phi parameter its limit (lambda at
    (1 + |rho|)/4, eta (1 + |rho|) at 2, gamma at 0 or 1/2, within 1e-6); CONVERGED only for a
    usable fit.
    """
    if phi not in PHI_FORMS:
        raise ValueError(f"phi must be one of {PHI_FORMS}, got {phi!r}")
    k, w = _floats(k, total_variance)
    if k.ndim != 3 or k.shape != w.shape:
        raise ValueError(f"k and total_variance must be [underlyings, expiries, strikes], got "
                         f"{k.shape} and {w.shape}")
    weights = jnp.ones_like(w) if weights is None else jnp.broadcast_to(
        jnp.asarray(weights, w.dtype), w.shape)
    mask = jnp.ones(w.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask), w.shape)
    usable = (mask & jnp.isfinite(k) & jnp.isfinite(w) & (w > 0) & jnp.isfinite(weights)
              & (weights > 0))
    k, w = jnp.where(usable, k, 0.0), jnp.where(usable, w, 0.0)
    weights = jnp.where(usable, weights, 0.0)
    lanes, expiries = k.shape[:2]
    starts = _starts(k, w, usable, phi)
    if initial is not None:
        initial = jnp.asarray(initial, w.dtype)
        size = 1 + (1 if phi == "heston" else 2) + expiries
        if initial.shape != (lanes, size):
            raise ValueError(f"initial must be [underlyings, 1 + phi params + expiries] = "
                             f"{(lanes, size)}, got {initial.shape}")
        warm = jax.vmap(lambda p: _encode(p, phi, expiries))(initial)
        finite = jnp.all(jnp.isfinite(warm), axis=1, keepdims=True)
        starts = jnp.concatenate([jnp.where(finite, warm, starts[:, 0])[:, None], starts], 1)
    every_expiry = jnp.all(jnp.any(usable, axis=2), axis=1)
    starts = jnp.where(every_expiry[:, None, None], starts, jnp.nan)
    lower, upper = _bounds(phi, expiries)
    residual_fn = heston_residuals if phi == "heston" else power_law_residuals
    result = multistart(residual_fn, starts, k, w, weights=weights.reshape(lanes, -1),
                        mask=usable.reshape(lanes, -1), lower=lower, upper=upper, config=config)
    theta, rho, phi_params = jax.vmap(lambda p: _decode(p, phi, expiries))(result.params)
    phi_params = jnp.stack(phi_params, axis=-1)
    residuals = result.residuals.reshape(k.shape)
    status = refine_status(
        result.status,
        too_few=~every_expiry | (jnp.sum(usable, axis=(1, 2)) < starts.shape[-1]),
        unidentified=jnp.all(distinct_count(k, usable, limit=2) < 2, axis=1),
        at_bound=_at_bound(phi, rho, phi_params))
    params = jnp.concatenate([rho[:, None], phi_params, theta], axis=1)
    return SSVIFit(params, status, result.loss, result.iterations, result.rmse, residuals)


def _at_bound(form, rho, phi_params, tolerance=1e-6):
    """|rho| at RHO_LIMIT or a phi parameter at the edge of its no-arbitrage range."""
    limit = 1.0 + _smooth_abs(rho)
    edge = jnp.abs(rho) >= RHO_LIMIT - tolerance
    if form == "heston":
        return edge | (phi_params[:, 0] - 0.25 * limit <= tolerance)
    eta, gamma = phi_params[:, 0], phi_params[:, 1]
    return edge | (eta * limit >= 2.0 - tolerance) | (gamma <= tolerance) | (
        gamma >= 0.5 - tolerance)
