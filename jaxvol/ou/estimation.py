"""Batched Ornstein–Uhlenbeck fits on irregular ticks: exact, noise-aware and with covariates.

:func:`fit` takes [series, ticks] arrays (times in seconds; padded series masked) and fits
every series in one compiled, vmapped program:

* no noise, no covariates: the exact Gaussian likelihood (:mod:`jaxvol.ou.likelihood`) with
  mu and eta^2 profiled out, maximised over log lam by a safeguarded Newton root of the score from
  the lag-1 autocorrelation (AR(1)) start, bracketed by the whole search range (a while loop
  capped at ``root_iterations``, stopping at convergence). The 90% (``config.level``) interval is the
  profile-likelihood interval on log lam of the restricted (REML, Cox–Reid adjusted)
  likelihood, which frees it of the 2/T of bias that estimating mu adds (the plain ML profile
  interval covers only ~84% for a 5 s half-life over 60 s); ``lam_corrected`` is the REML
  estimate less its remaining first-order bias.
* ``noise_variance`` (per-tick array, or ``"estimate"`` for one constant per series): the
  Kalman-filter likelihood, mu profiled, (log lam, log stationary variance[, log noise])
  maximised by damped Newton on autodiff derivatives; Wald interval on log lam.
* ``covariates`` [series, ticks, k]: lam_i = exp(beta_0 + beta' z_i), the exact likelihood with
  mu and eta^2 profiled, beta by damped Newton with autodiff Hessian; ``beta`` and
  ``beta_stderr`` in the result, ``lam`` = exp(beta_0) (lam at z = 0).

Derivatives: the searches run on stop-gradient inputs (while loops that stop at convergence)
and their solutions are attached to the data by the implicit-function theorem at the optimum
(:func:`jaxvol.calibrate.implicit_solve`, the rule of the calibration engine): for the exact
fit the conditions are the ML and REML scores and the two interval equations, for the Kalman
and covariate fits the score of the damped-Newton parameters; a component pinned to a search
bound follows the bound (a function of the tick times). So ``jax.grad``, ``jax.jvp`` and
``jax.jacfwd`` of anything computed from the fit (lam, mu, eta, the interval, lam_corrected,
the covariate coefficients) with respect to ``times``, ``values``, ``noise_variance`` or
``covariates`` work; series without a solution get zero derivatives. The bootstrap bias
(``bias="bootstrap"``) is held constant in derivatives.

Small-sample bias: lam-hat over a window T is biased upward by about 2/T (known mean) to 4/T
(estimated mean, the case here; Marriott & Pope 1954 for AR(1), Tang & Chen 2009 and Yu 2012
for the OU). ``lam_corrected`` removes it analytically (default; for exact fits from the REML
estimate, whose bias is the known-mean 2/T) or by a parametric bootstrap on the series' own
grid (``OUConfig(bias="bootstrap")``, exact fits).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import float_dtype
from jaxvol.calibrate import implicit_solve
from jaxvol.ou._solvers import bracketed_root, damped_newton_max, newton_summary
from jaxvol.ou.likelihood import exact_profile, kalman_profile
from jaxvol.ou.simulate import simulate
from jaxvol.status import domain_status

__all__ = ["fit", "OUFit", "OUConfig", "OUStatus"]

OUStatus = domain_status("OUStatus", "ou", {
    "CONVERGED": 0, "BAD_INPUT": 1, "NON_FINITE_INPUT": 2, "NON_FINITE": 3,
    "TOO_FEW_POINTS": 4, "MAX_ITERATIONS": 5, "AT_BOUND": 6, "UNIDENTIFIED": 8,
    "NON_INCREASING_TIMES": 80,
}, doc="""Per-series outcome of jaxvol.ou.fit.

CONVERGED (0) a usable fit; TOO_FEW_POINTS fewer than ``config.min_points`` valid ticks;
NON_FINITE_INPUT a NaN/inf time or value among the valid ticks; NON_INCREASING_TIMES a
duplicate or decreasing timestamp among the valid ticks (flagged, never dropped);
UNIDENTIFIED constant values; AT_BOUND lam on its search bound (no reversion detectable
in the window, or white noise at the sampling rate); MAX_ITERATIONS the Newton iterations
ran out (noise-aware and covariate fits); NON_FINITE a non-finite likelihood at the optimum.""")


@dataclasses.dataclass(frozen=True)
class OUConfig:
    """Settings of :func:`fit` (hashable; passed as a static argument).

    lam is searched on [lower_factor / T, upper_factor / median gap] where T is the series'
    span. ``bias``: "analytic" (exact fits: lam_REML - (3 + exp(2 lam h)) / (2 T); noise and
    covariate fits: lam - (7 + exp(2 lam h)) / (2 T); Tang & Chen's first order with h the
    mean gap), "bootstrap" (parametric, ``bootstrap_samples`` paths per series on
    its own grid; needs ``key`` or uses key 0) or "none".
    """

    level: float = 0.90
    grid_points: int = 32  # unused since the AR(1) start replaced the grid; kept for callers
    root_iterations: int = 60
    newton_iterations: int = 30
    lower_factor: float = 0.01
    upper_factor: float = 50.0
    min_points: int = 5
    bias: str = "analytic"
    bootstrap_samples: int = 200
    batch_size: int | None = None


class OUFit(NamedTuple):
    """Per-series OU estimates (arrays of shape [series]; ``beta`` [series, k + 1])."""

    lam: jax.Array            #: reversion speed, 1/s (MLE)
    mu: jax.Array             #: long-run level
    eta: jax.Array            #: diffusion, units / sqrt(s)
    half_life: jax.Array      #: ln 2 / lam, seconds
    lam_corrected: jax.Array  #: lam with the small-sample bias removed
    lam_low: jax.Array        #: lower bound of the ``config.level`` interval on lam
    lam_high: jax.Array       #: upper bound
    status: jax.Array         #: int32 OUStatus
    loglik: jax.Array         #: maximised log-likelihood
    noise_variance: jax.Array  #: observation-noise variance used (mean of the ticks'; 0 exact)
    beta: jax.Array           #: (log lam at z = 0, covariate coefficients); [log lam] without
    beta_stderr: jax.Array    #: standard errors of beta (inverse observed information)
    points: jax.Array         #: number of valid ticks used


def _chi2_half_quantile(level):
    """Half the chi-square(1) quantile at ``level`` (1.35277 for 90%)."""
    from statistics import NormalDist
    z = NormalDist().inv_cdf(0.5 + 0.5 * level)
    return 0.5 * z * z, z


# --------------------------------------------------------------------------- one series
def _prepare(times, values, valid, min_points):
    """Screen one compressed series: status and a benign stand-in for bad lanes."""
    count = jnp.sum(valid)
    n = count.astype(values.dtype)
    finite = jnp.all(jnp.where(valid, jnp.isfinite(times) & jnp.isfinite(values), True))
    gaps = jnp.where(valid[1:], times[1:] - times[:-1], 1.0)
    increasing = jnp.all(gaps > 0)
    mean = jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(n, 1)
    var = jnp.sum(jnp.where(valid, (values - mean) ** 2, 0.0)) / jnp.maximum(n, 1)
    status = jnp.where(count < min_points, 4, jnp.where(~finite, 2, jnp.where(
        ~increasing, 80, jnp.where(~(var > 0), 8, 0))))
    bad = status != 0
    index = jnp.arange(times.shape[0])
    fake = index.astype(times.dtype)
    times = jnp.where(bad, fake, jnp.where(valid, times, 0.0))
    values = jnp.where(bad, jnp.sin(fake), jnp.where(valid, values, 0.0))
    valid = jnp.where(bad, index < min_points, valid)
    return times, values, valid, status.astype(jnp.int32)


def _span(times, valid):
    count = jnp.sum(valid)
    last = times[jnp.maximum(count - 1, 0)]
    span = last - times[0]
    gaps = jnp.where(valid[1:], times[1:] - times[:-1], jnp.nan)
    median_gap = jnp.nanmedian(gaps)
    mean_gap = span / jnp.maximum(count - 1, 1).astype(times.dtype)
    return span, median_gap, mean_gap


def _bounds(span, median_gap, config):
    lo = jnp.log(config.lower_factor / span)
    hi = jnp.log(config.upper_factor / median_gap)
    return lo, jnp.maximum(hi, lo + 1.0)


def _analytic_bias(lam, span, mean_gap, known_mean=False):
    """First-order bias of the OU speed over a window ``span`` sampled every ``mean_gap``:
    (3 + e^{2 lam h}) / (2T) with the mean known (or removed by REML), (7 + e^{2 lam h}) / (2T)
    with it estimated (Tang & Chen 2009; 2/T and 4/T as h -> 0)."""
    grow = jnp.exp(jnp.minimum(2.0 * lam * mean_gap, 50.0))
    return ((3.0 if known_mean else 7.0) + grow) / (2.0 * span)


def _profile_fn(times, values, valid, restricted):
    def profile(u):
        lam = jnp.exp(u)
        return exact_profile(jnp.full(times.shape[0] - 1, lam), lam, times, values, valid,
                             restricted)[0]
    return profile


def _derivatives(fun, u):
    """(f, f', f'') of a scalar function by forward-over-forward jvp."""
    one = jnp.ones_like(u)
    first = lambda x: jax.jvp(fun, (x,), (one,))  # noqa: E731
    (value, d1), (_, d2) = jax.jvp(first, (u,), (one,))
    return value, d1, d2


def _exact_point(times, values, valid, config, restricted=0.0):
    """Maximiser of the (restricted) profile over log lam for one clean series.

    Returns (u_hat, loglik at u_hat, (at_low, at_high), bounds)."""
    span, median_gap, mean_gap = _span(times, valid)
    u_lo, u_hi = _bounds(span, median_gap, config)
    profile = _profile_fn(times, values, valid, restricted)
    # start: the lag-1 autocorrelation (moment / AR(1)) estimate, phi = exp(-lam h); then a
    # safeguarded Newton root of the score on the whole search range (a score of the right
    # sign at both ends brackets an interior maximum; bisection backs Newton up)
    n = jnp.sum(valid).astype(values.dtype)
    mean = jnp.sum(jnp.where(valid, values, 0.0)) / n
    c = jnp.where(valid, values - mean, 0.0)
    rho = jnp.sum(c[1:] * c[:-1]) / jnp.sum(c * c)
    u0 = jnp.log(-jnp.log(jnp.clip(rho, 1e-6, 1.0 - 1e-6)) / mean_gap)
    u0 = jnp.clip(jnp.where(jnp.isfinite(u0), u0, 0.5 * (u_lo + u_hi)), u_lo, u_hi)
    ends = jnp.stack([u_lo, u_hi])
    score_ends = jax.vmap(lambda u: _derivatives(profile, u)[1])(ends)
    at_low = score_ends[0] <= 0
    at_high = (score_ends[1] >= 0) & ~at_low
    root = bracketed_root(lambda u: _derivatives(profile, u)[1:], u_lo, u_hi, u0,
                          config.root_iterations, skip=at_low | at_high)
    u_hat = jnp.where(at_low, u_lo, jnp.where(at_high, u_hi, root))
    return u_hat, profile(u_hat), (at_low, at_high), (u_lo, u_hi)


def _profile_interval(profile, u_hat, l_hat, bounds, config):
    """Both roots of profile(u) = max - chi2_1(level) / 2 (one vmapped solve for the sides).

    Returns (low, high, low_open, high_open); an open side (the profile stays above the
    target up to the search bound) returns the bound."""
    half, _ = _chi2_half_quantile(config.level)
    target = l_hat - half
    u_lo, u_hi = bounds
    sign = jnp.asarray([-1.0, 1.0], u_hat.dtype)
    lo = jnp.stack([u_lo, u_hat])
    hi = jnp.stack([u_hat, u_hi])
    far = jnp.stack([u_lo, u_hi])

    # Newton starts at the quadratic (Wald) approximation u_hat -+ sqrt(2 half / -l''),
    # inside the side's bracket: a few steps instead of a bisection from the middle
    curvature = _derivatives(profile, u_hat)[2]
    width = jnp.sqrt(2.0 * half / jnp.where(curvature < 0, -curvature, jnp.inf))

    def side(s, a, b, bound):
        fun = lambda u: tuple(s * d for d in _derivatives(  # noqa: E731
            lambda x: profile(x) - target, u)[:2])
        open_side = profile(bound) >= target
        start = u_hat + s * width
        start = jnp.where(jnp.isfinite(start) & (start > a) & (start < b), start,
                          0.5 * (a + b))
        root = bracketed_root(fun, a, b, start, config.root_iterations, skip=open_side)
        return jnp.where(open_side, bound, root), open_side

    ends, open_sides = jax.vmap(side)(sign, lo, hi, far)
    return ends[0], ends[1], open_sides[0], open_sides[1]


# ------------------------------------------------------------- implicit derivatives
def _identity_solver(solution, args, weights, flags):
    """The solution is found outside (loops, no derivatives); flags[:, 0] marks lanes
    without one (BAD_INPUT: zero tangents)."""
    status = jnp.where(flags[:, 0], 1, 0).astype(jnp.int32)
    return solution, status, jnp.zeros(status.shape, jnp.int32)


def _at_optimum(condition, solution, args, flags):
    """``solution`` of one lane with the implicit-function derivative of ``condition(u, args,
    flags) = 0`` attached (jaxvol.calibrate.implicit_solve, the calibration engine's rule):
    jax.grad and jax.jvp of anything computed from it reach ``args`` without entering the
    solver's while loops. ``flags`` (bool vector, flags[0] = no solution) is not
    differentiated."""
    one = lambda a: a[None]  # noqa: E731  (the rule is batched over lanes: one lane here)
    u, _, _ = implicit_solve(_identity_solver,
                             lambda u, a, w, m: condition(u, a, m),
                             jax.lax.stop_gradient(solution)[None],
                             jax.tree_util.tree_map(one, args),
                             jnp.zeros((1, 0), solution.dtype), flags[None])
    return u[0]


def _exact_condition(u, args, flags, *, config):
    """Zero at the exact fit's (u_ML, u_REML, u_low, u_high): the two scores and the interval
    equations; a component pinned to a search bound equals u - bound(times)."""
    times, values, valid = args
    _, low_ml, high_ml, low_r, high_r, open_lo, open_hi = (flags[i] for i in range(7))
    span, median_gap, _ = _span(times, valid)
    u_lo, u_hi = _bounds(span, median_gap, config)
    ml = _profile_fn(times, values, valid, 0.0)
    reml = _profile_fn(times, values, valid, 1.0)
    half, _ = _chi2_half_quantile(config.level)
    target = reml(u[1]) - half
    free = jnp.stack([_derivatives(ml, u[0])[1], _derivatives(reml, u[1])[1],
                      reml(u[2]) - target, reml(u[3]) - target])
    pinned = jnp.stack([jnp.where(low_ml, u_lo, u_hi), jnp.where(low_r, u_lo, u_hi), u_lo,
                        u_hi])
    fixed = jnp.stack([low_ml | high_ml, low_r | high_r, open_lo, open_hi])
    return jnp.where(fixed, u - pinned, free)


def _exact_single(times, values, valid, bad, config):
    # the search: loops on stop-gradient inputs; derivatives come from _at_optimum
    t0, x0 = jax.lax.stop_gradient(times), jax.lax.stop_gradient(values)
    both = jax.vmap(lambda r: _exact_point(t0, x0, valid, config, r))(
        jnp.asarray([0.0, 1.0], values.dtype))
    (u_ml, u_r), (l_ml, l_r) = both[0], both[1]
    (low_ml, low_r), (high_ml, high_r) = both[2]
    bounds = (both[3][0][0], both[3][1][0])
    low, high, open_lo, open_hi = _profile_interval(_profile_fn(t0, x0, valid, 1.0), u_r, l_r,
                                                    bounds, config)
    flags = jnp.stack([bad | ~jnp.isfinite(l_ml), low_ml, high_ml, low_r, high_r, open_lo,
                       open_hi])
    u = _at_optimum(functools.partial(_exact_condition, config=config),
                    jnp.stack([u_ml, u_r, low, high]), (times, values, valid), flags)
    u_hat, u_r, low, high = u[0], u[1], u[2], u[3]
    lam = jnp.exp(u_hat)
    l_hat, mu, eta2 = exact_profile(jnp.full(times.shape[0] - 1, lam), lam, times, values,
                                    valid)
    curvature = _derivatives(_profile_fn(times, values, valid, 0.0), u_hat)[2]
    stderr = jnp.sqrt(jnp.where(curvature < 0, -1.0 / curvature, jnp.nan))
    status = jnp.where(low_ml | high_ml, 6, jnp.where(jnp.isfinite(l_hat), 0, 3))
    span, _, mean_gap = _span(times, valid)
    lam_r = jnp.exp(u_r)
    corrected = lam_r - _analytic_bias(lam_r, span, mean_gap, known_mean=True)
    return dict(lam=lam, mu=mu, eta=jnp.sqrt(eta2), lam_low=jnp.exp(low),
                lam_high=jnp.exp(high), loglik=l_hat, status=status, analytic=corrected,
                noise_variance=jnp.zeros_like(lam), beta=u_hat[None],
                beta_stderr=stderr[None])


def _newton_condition(p, args, flags, *, loglik, bounds):
    """Zero at the damped-Newton optimum: the score, or p_0 - bound where log lam is pinned."""
    lower, upper = bounds(args)
    free = jax.jacfwd(lambda q: loglik(q, args))(p)  # forward mode: no tape of the scan
    pinned = jnp.where(flags[1], lower, upper)
    fixed = flags[1] | flags[2]
    return jnp.where(jnp.arange(p.shape[0]) == 0, jnp.where(fixed, p - pinned, free), free)


def _kalman_loglik(p, args, *, estimate_noise):
    times, values, valid, noise = args
    r = jnp.full_like(values, jnp.exp(p[2])) if estimate_noise else noise
    return kalman_profile(jnp.exp(p[0]), jnp.exp(p[1]), r, times, values, valid)[0]


def _kalman_bounds(args, *, config):
    times, _, valid, _ = args
    span, median_gap, _ = _span(times, valid)
    return _bounds(span, median_gap, config)


def _kalman_single(times, values, valid, noise, estimate_noise, bad, config):
    span, median_gap, _ = _span(times, valid)
    u_lo, u_hi = _bounds(span, median_gap, config)
    n = jnp.sum(valid).astype(values.dtype)
    mean = jnp.sum(jnp.where(valid, values, 0.0)) / n
    var = jnp.sum(jnp.where(valid, (values - mean) ** 2, 0.0)) / n
    diffs = jnp.where(valid[1:], values[1:] - values[:-1], 0.0)
    lag1 = jnp.sum(diffs[1:] * diffs[:-1]) / jnp.maximum(n - 2.0, 1.0)
    if estimate_noise:
        r0 = jnp.clip(-lag1, 1e-4 * var, 0.5 * var)
    else:
        r0 = jnp.sum(jnp.where(valid, noise, 0.0)) / n
    s0 = jnp.maximum(var - r0, 0.05 * var)
    loglik = functools.partial(_kalman_loglik, estimate_noise=estimate_noise)
    args = (times, values, valid, noise)
    frozen = jax.lax.stop_gradient(args)
    fun = lambda p: loglik(p, frozen)  # noqa: E731
    extra = (jnp.log(r0)[None],) if estimate_noise else ()
    grid = jnp.linspace(u_lo, u_hi, 12)
    starts = jax.vmap(lambda u: jnp.concatenate([u[None], jnp.log(s0)[None], *extra]))(grid)
    ll = jax.vmap(fun)(starts)
    p0 = jax.lax.stop_gradient(starts[jnp.argmax(jnp.where(jnp.isfinite(ll), ll, -jnp.inf))])
    big = jnp.asarray(jnp.inf, values.dtype)
    lower = jnp.concatenate([u_lo[None], jnp.full(p0.shape[0] - 1, -big)])
    upper = jnp.concatenate([u_hi[None], jnp.full(p0.shape[0] - 1, big)])
    p = damped_newton_max(fun, p0, jax.lax.stop_gradient(lower),
                          jax.lax.stop_gradient(upper), config.newton_iterations)
    at_lo, at_hi = p[0] <= u_lo + 1e-9, p[0] >= u_hi - 1e-9
    flags = jnp.stack([bad | ~jnp.isfinite(fun(p)), at_lo, at_hi])
    p = _at_optimum(functools.partial(
        _newton_condition, loglik=loglik,
        bounds=functools.partial(_kalman_bounds, config=config)), p, args, flags)
    value, _, h, decrement = newton_summary(lambda q: loglik(q, args), p)
    lam = jnp.exp(p[0])
    s2 = jnp.exp(p[1])
    r = jnp.full_like(values, jnp.exp(p[2])) if estimate_noise else noise
    _, mu = kalman_profile(lam, s2, r, times, values, valid)
    cov = jnp.linalg.inv(-h)
    se_u = jnp.sqrt(jnp.where(cov[0, 0] > 0, cov[0, 0], jnp.nan))
    _, z = _chi2_half_quantile(config.level)
    converged = (decrement < 1e-8 * jnp.maximum(1.0, jnp.abs(value))) & (cov[0, 0] > 0)
    status = jnp.where(~jnp.isfinite(value), 3, jnp.where(at_lo | at_hi, 6, jnp.where(
        converged, 0, 5)))
    mean_r = jnp.sum(jnp.where(valid, r, 0.0)) / n
    return dict(lam=lam, mu=mu, eta=jnp.sqrt(2.0 * lam * s2), lam_low=jnp.exp(p[0] - z * se_u),
                lam_high=jnp.exp(p[0] + z * se_u), loglik=value, status=status,
                noise_variance=mean_r, beta=p[:1], beta_stderr=se_u[None])


def _covariate_loglik(b, args):
    times, values, valid, z = args
    lam = jnp.exp(jnp.clip(b[0] + z @ b[1:], -50.0, 50.0))
    return exact_profile(lam[:-1], lam[0], times, values, valid)[0]


def _no_bounds(args):
    return -jnp.inf, jnp.inf


def _covariate_single(times, values, valid, z, bad, config):
    t0, x0 = jax.lax.stop_gradient(times), jax.lax.stop_gradient(values)
    u_hat, _, _, _ = _exact_point(t0, x0, valid, config)
    k = z.shape[-1]
    args = (times, values, valid, z)
    frozen = jax.lax.stop_gradient(args)
    fun = lambda b: _covariate_loglik(b, frozen)  # noqa: E731
    b0 = jnp.concatenate([u_hat[None], jnp.zeros(k, values.dtype)])
    inf = jnp.full(k + 1, jnp.inf, values.dtype)
    b = damped_newton_max(fun, b0, -inf, inf, config.newton_iterations, max_step=1.0)
    flags = jnp.stack([bad | ~jnp.isfinite(fun(b)), jnp.asarray(False), jnp.asarray(False)])
    b = _at_optimum(functools.partial(_newton_condition, loglik=_covariate_loglik,
                                      bounds=_no_bounds), b, args, flags)
    value, _, h, decrement = newton_summary(lambda q: _covariate_loglik(q, args), b)
    lam_i = jnp.exp(jnp.clip(b[0] + z @ b[1:], -50.0, 50.0))
    _, mu, eta2 = exact_profile(lam_i[:-1], lam_i[0], times, values, valid)
    cov = jnp.linalg.inv(-h)
    diag = jnp.diag(cov)
    se = jnp.sqrt(jnp.where(diag > 0, diag, jnp.nan))
    _, zq = _chi2_half_quantile(config.level)
    converged = (decrement < 1e-8 * jnp.maximum(1.0, jnp.abs(value))) & jnp.all(diag > 0)
    status = jnp.where(~jnp.isfinite(value), 3, jnp.where(converged, 0, 5))
    return dict(lam=jnp.exp(b[0]), mu=mu, eta=jnp.sqrt(eta2), lam_low=jnp.exp(b[0] - zq * se[0]),
                lam_high=jnp.exp(b[0] + zq * se[0]), loglik=value, status=status,
                noise_variance=jnp.zeros_like(value), beta=b, beta_stderr=se)


def _bootstrap_bias(key, times, values, valid, out, config):
    """Parametric bootstrap of lam-hat's bias on the series' own grid (a constant for
    derivatives: the resampled fits are not differentiated)."""
    keys = jax.random.split(key, config.bootstrap_samples)
    times = jax.lax.stop_gradient(times)
    lam, mu, eta = (jax.lax.stop_gradient(out[k]) for k in ("lam", "mu", "eta"))

    def one(k):
        path = simulate(k, times, lam=lam, mu=mu, eta=eta)
        u, *_ = _exact_point(times, path, valid, config)
        return jnp.exp(u)

    return jnp.mean(jax.vmap(one)(keys)) - lam


def _single(times, values, valid, noise, z, key, *, mode, config):
    times, values, valid, status = _prepare(times, values, valid, config.min_points)
    bad = status != 0
    if mode == "exact":
        out = _exact_single(times, values, valid, bad, config)
    elif mode == "covariates":
        out = _covariate_single(times, values, valid, z, bad, config)
    else:
        out = _kalman_single(times, values, valid, noise, mode == "estimate", bad, config)
    span, _, mean_gap = _span(times, valid)
    if config.bias == "bootstrap" and mode == "exact":
        bias = _bootstrap_bias(key, times, values, valid, out, config)
    elif config.bias == "none":
        bias = jnp.zeros_like(out["lam"])
    else:
        bias = _analytic_bias(out["lam"], span, mean_gap)
    analytic = out.pop("analytic", None)
    corrected = out["lam"] - bias
    if analytic is not None and config.bias == "analytic":
        corrected = analytic
    out["lam_corrected"] = jnp.maximum(corrected, jnp.exp(_bounds(
        span, _span(times, valid)[1], config)[0]))
    status = jnp.where(status != 0, status, out.pop("status")).astype(jnp.int32)
    nan = jnp.asarray(jnp.nan, values.dtype)
    usable = (status == 0) | (status == 6) | (status == 5)
    for name in ("lam", "mu", "eta", "lam_low", "lam_high", "loglik", "noise_variance",
                 "lam_corrected"):
        out[name] = jnp.where(usable, out[name], nan)
    out["beta"] = jnp.where(usable, out["beta"], nan)
    out["beta_stderr"] = jnp.where(usable, out["beta_stderr"], nan)
    out["half_life"] = math.log(2.0) / out["lam"]
    out["status"] = status
    out["points"] = jnp.where(status == 4, jnp.sum(valid), jnp.sum(valid)).astype(jnp.int32)
    return OUFit(**{name: out[name] for name in OUFit._fields})


def _compress(times, values, valid, noise, z):
    """Move each series' valid ticks to the front, keeping their order (a stable sort)."""
    order = jnp.argsort(~valid, axis=-1, stable=True)
    take = lambda a: jnp.take_along_axis(a, order, axis=-1)  # noqa: E731
    z = jnp.take_along_axis(z, order[..., None], axis=1)
    return take(times), take(values), take(valid), take(noise), z


@functools.partial(jax.jit, static_argnames=("mode", "config"))
def _fit_batch(times, values, valid, noise, z, key, *, mode, config):
    times, values, valid, noise, z = _compress(times, values, valid, noise, z)
    series = jnp.arange(times.shape[0])
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(series)
    single = functools.partial(_single, mode=mode, config=config)
    if config.batch_size is None:
        return jax.vmap(single)(times, values, valid, noise, z, keys)
    return jax.lax.map(lambda a: single(*a), (times, values, valid, noise, z, keys),
                       batch_size=config.batch_size)


def fit(times, values, *, mask=None, noise_variance=None, covariates=None,
        config: OUConfig = OUConfig(), key=None) -> OUFit:
    """Fit dX = -lam (X - mu) dt + eta dW to each series of a [series, ticks] batch.

    Args:
        times: tick times in seconds, [series, ticks] (or [ticks] for one series); increasing
            within each series (a duplicate or decreasing valid time gives the series the
            status NON_INCREASING_TIMES; nothing is dropped).
        values: observed levels, same shape.
        mask: bool, True for valid ticks (default: all valid); padding may sit anywhere.
        noise_variance: None (exact likelihood, no observation noise), an array broadcastable
            to [series, ticks] of known per-tick noise variances (e.g. (spread / 2)^2 / 3), or
            ``"estimate"`` for one constant noise variance per series (Kalman likelihood).
        covariates: [series, ticks, k] (or [series, ticks]) covariates z for
            lam_i = exp(beta_0 + beta' z_i); the value at tick i drives the gap i -> i + 1.
        config: :class:`OUConfig`.
        key: random key for ``config.bias == "bootstrap"`` (default key 0).

    Returns:
        :class:`OUFit` of [series] arrays in the input's float dtype; NaN with a non-zero
        status for series that cannot be fitted.
    """
    times_np = np.asarray(times) if not isinstance(times, jax.Array) else times
    values_np = np.asarray(values) if not isinstance(values, jax.Array) else values
    if times_np.shape != values_np.shape or times_np.ndim not in (1, 2):
        raise ValueError(f"times and values must be [series, ticks] arrays of one shape; got "
                         f"{times_np.shape} and {values_np.shape}")
    single = times_np.ndim == 1
    dtype = float_dtype(times_np, values_np)
    times = jnp.atleast_2d(jnp.asarray(times_np, dtype))
    values = jnp.atleast_2d(jnp.asarray(values_np, dtype))
    shape = times.shape
    if shape[1] < 2:
        raise ValueError(f"need at least 2 ticks per series, got shape {shape}")
    valid = jnp.ones(shape, bool) if mask is None else jnp.broadcast_to(
        jnp.atleast_2d(jnp.asarray(mask, bool)), shape)
    if isinstance(noise_variance, str):
        if noise_variance != "estimate":
            raise ValueError(f"noise_variance must be None, an array or 'estimate'; got "
                             f"{noise_variance!r}")
        mode, noise = "estimate", jnp.zeros(shape, dtype)
    elif noise_variance is None:
        mode, noise = "exact", jnp.zeros(shape, dtype)
    else:
        noise = jnp.asarray(noise_variance, dtype)
        if noise.ndim == 1 and noise.shape[0] == shape[0] and not single:
            noise = noise[:, None]
        try:
            noise = jnp.broadcast_to(noise, shape)
        except ValueError:
            raise ValueError(f"noise_variance of shape {jnp.shape(noise_variance)} does not "
                             f"broadcast to [series, ticks] = {shape}") from None
        mode = "known"
    if covariates is None:
        z = jnp.zeros(shape + (0,), dtype)
    else:
        if mode != "exact":
            raise ValueError("covariates are fitted with the exact likelihood; combine them "
                             "with noise_variance=None")
        z = jnp.asarray(covariates, dtype)
        if z.ndim == len(shape) - single:
            z = z[..., None]
        z = z.reshape(shape + z.shape[-1:]) if single else z
        if z.shape[:2] != shape:
            raise ValueError(f"covariates must be [series, ticks, k] with [series, ticks] = "
                             f"{shape}; got {jnp.shape(covariates)}")
        mode = "covariates"
    if config.bias not in ("analytic", "bootstrap", "none"):
        raise ValueError(f"config.bias must be 'analytic', 'bootstrap' or 'none'; got "
                         f"{config.bias!r}")
    key = jax.random.key(0) if key is None else key
    out = _fit_batch(times, values, valid, noise, z, key, mode=mode, config=config)
    if single:
        out = jax.tree_util.tree_map(lambda a: a[0], out)
    return out
