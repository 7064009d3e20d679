"""Raw SVI (Gatheral 2004): total variance w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)).

k is log forward moneyness log(strike / forward); w is total implied variance vol^2 * expiry.
Parameter order everywhere: (a, b, rho, m, sigma). Pure functions broadcast over their inputs;
:func:`fit` calibrates [slices, strikes] arrays in one batch: a variable-projection
Levenberg–Marquardt on (m, sigma) (the other three parameters are linear), with
:func:`jaxvol.calibrate.least_squares` for the slices whose solution leaves the box and for the
arbitrage-aware fit, and the engine's implicit gradients.

References: Gatheral & Jacquier (2014), "Arbitrage-free SVI volatility surfaces" (Durrleman's
condition, jump-wings, example 3.1); Lee (2004), "The moment formula for implied volatility at
extreme strikes"; De Marco & Martini / Zeliade (2009), "Quasi-explicit calibration of
Gatheral's SVI model".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._edge import edge
from jaxvol._dtypes import float_dtype
from jaxvol.calibrate import (FitResult, FitStatus, LMConfig, distinct_count, driver,
                              least_squares, least_squares_gradient, map_chunks, refine_status,
                              rmse_of)
from jaxvol.calibrate.chunks import compacted
from jaxvol.calibrate.levenberg_marquardt import batched_loop, weighted_residual_fn
from jaxvol.calibrate.transforms import make_bounds, to_unbounded
from jaxvol.smile._svi_projection import (feasible_raw, k_range, quote_columns, theta_box,
                                          variable_projection)

__all__ = ["arbitrage_penalties", "durrleman_g", "fit", "FIT_CONFIG", "g_minimum", "implied_vol",
           "initial_guess", "jump_wings_to_raw", "JumpWings", "lee_wing_slopes", "LOWER",
           "NO_ARBITRAGE_CONFIG", "PARAMS", "penalised_residuals", "PRIOR_WEIGHT", "prior_share",
           "raw_to_jump_wings",
           "satisfies_lee_bound", "slice_residuals", "SVIFit", "total_variance",
           "total_variance_derivatives", "UPPER"]

PARAMS = ("a", "b", "rho", "m", "sigma")
LOWER = (-jnp.inf, 0.0, -1.0, -jnp.inf, 0.0)
UPPER = (jnp.inf, jnp.inf, 1.0, jnp.inf, jnp.inf)
FIT_CONFIG = LMConfig(max_iterations=60)
CHUNK_SIZE = 128
NO_ARBITRAGE_CONFIG = LMConfig(max_iterations=300)
GUESS_CONFIG = LMConfig(max_iterations=30, ftol=1e-8, xtol=1e-8, gtol=1e-8)  # a start only


def _floats(*values):
    dtype = float_dtype(*values)
    return [jnp.asarray(v, dtype) for v in values]


# --------------------------------------------------------------------------- the model
@edge
def total_variance(k, a, b, rho, m, sigma):
    """Raw SVI total implied variance w(k) (broadcasts)."""
    k, a, b, rho, m, sigma = _floats(k, a, b, rho, m, sigma)
    x = k - m
    return a + b * (rho * x + jnp.sqrt(x * x + sigma * sigma))


@edge
def total_variance_derivatives(k, a, b, rho, m, sigma):
    """(w, dw/dk, d2w/dk2) in closed form (broadcasts)."""
    k, a, b, rho, m, sigma = _floats(k, a, b, rho, m, sigma)
    x = k - m
    root = jnp.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + root)
    return w, b * (rho + x / root), b * sigma * sigma / (root * root * root)


@edge
def implied_vol(k, expiry, a, b, rho, m, sigma):
    """Black implied volatility sqrt(w(k) / expiry) (NaN where w < 0)."""
    w = total_variance(k, a, b, rho, m, sigma)
    expiry = jnp.asarray(expiry, w.dtype)
    ok = (w >= 0) & (expiry > 0)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, w / jnp.where(ok, expiry, 1.0), 0.0)), jnp.nan)


def durrleman_g(k, a, b, rho, m, sigma):
    """Durrleman's butterfly function g(k); the slice is free of butterfly arbitrage iff g >= 0.

    g(k) = (1 - k w'/(2w))^2 - (w'^2 / 4)(1/w + 1/4) + w''/2 (Gatheral & Jacquier 2014, eq 2.1).
    """
    w, dw, d2w = total_variance_derivatives(k, a, b, rho, m, sigma)
    k = jnp.asarray(k, w.dtype)
    return (1.0 - k * dw / (2.0 * w)) ** 2 - 0.25 * dw * dw * (1.0 / w + 0.25) + 0.5 * d2w


def polished_minimum(g, k_lower, k_upper, num, dtype):
    """Minimum of a scalar function g(k) over [k_lower, k_upper]: (g(k*), k*).

    Grid search over num points, then 8 Newton steps on g'(k) = 0 kept within one grid cell
    of the best point, so an interior minimum is located to machine precision.
    """
    grid = jnp.linspace(k_lower, k_upper, num, dtype=dtype)
    values = jax.vmap(g)(grid)
    k_best = grid[jnp.argmin(jnp.where(jnp.isnan(values), jnp.inf, values))]
    dg, d2g = jax.grad(g), jax.grad(jax.grad(g))
    spacing = (k_upper - k_lower) / (num - 1)

    def newton(_, k):
        curvature = d2g(k)
        step = dg(k) / jnp.where(curvature > 0, curvature, 1.0)
        step = jnp.where(jnp.isfinite(step) & (curvature > 0), step, 0.0)
        return jnp.clip(k - step, k_best - spacing, k_best + spacing)

    k_min = jax.lax.fori_loop(0, 8, newton, k_best)
    return g(k_min), k_min


def _g_minimum_scalar(a, b, rho, m, sigma, k_lower, k_upper, num):
    g = lambda k: durrleman_g(k, a, b, rho, m, sigma)  # noqa: E731
    return polished_minimum(g, k_lower, k_upper, num, a.dtype)


def g_minimum(a, b, rho, m, sigma, *, k_lower=-3.0, k_upper=3.0, num=601):
    """Minimum of Durrleman's g over [k_lower, k_upper] and where it sits: (g_min, k_min).

    A grid search (num points) polished by 8 Newton steps on g'(k) = 0, so the location is
    accurate to machine precision for an interior minimum. Broadcasts over the parameters.
    A negative minimum means butterfly arbitrage.
    """
    if int(num) < 3 or not k_lower < k_upper:
        raise ValueError(f"need num >= 3 and k_lower < k_upper, got {num}, {k_lower}, {k_upper}")
    a, b, rho, m, sigma = jnp.broadcast_arrays(*_floats(a, b, rho, m, sigma))
    kernel = lambda *p: _g_minimum_scalar(*p, k_lower, k_upper, int(num))  # noqa: E731
    flat = [p.reshape(-1) for p in (a, b, rho, m, sigma)]
    g_min, k_min = jax.vmap(kernel)(*flat)
    return g_min.reshape(a.shape), k_min.reshape(a.shape)


def lee_wing_slopes(b, rho):
    """Asymptotic slopes of w(k) as k -> -inf and +inf: (b (1 - rho), b (1 + rho))."""
    b, rho = _floats(b, rho)
    return b * (1.0 - rho), b * (1.0 + rho)


def satisfies_lee_bound(b, rho):
    """Roger Lee's moment bound: both wing slopes of the total variance are <= 2."""
    left, right = lee_wing_slopes(b, rho)
    return (left <= 2.0) & (right <= 2.0)


# --------------------------------------------------------------------------- jump-wings
class JumpWings(NamedTuple):
    """SVI-JW: ATM variance v, ATM skew psi, put wing p, call wing c, minimum variance v_tilde."""

    v: jax.Array
    psi: jax.Array
    p: jax.Array
    c: jax.Array
    v_tilde: jax.Array


def raw_to_jump_wings(a, b, rho, m, sigma, expiry=1.0) -> JumpWings:
    """Raw SVI -> jump-wings (Gatheral & Jacquier 2014, section 3.3); expiry in years."""
    a, b, rho, m, sigma, expiry = _floats(a, b, rho, m, sigma, expiry)
    root = jnp.sqrt(m * m + sigma * sigma)
    w_atm = a + b * (-rho * m + root)
    sqrt_w = jnp.sqrt(w_atm)
    return JumpWings(w_atm / expiry, b / (2.0 * sqrt_w) * (rho - m / root),
                     b * (1.0 - rho) / sqrt_w, b * (1.0 + rho) / sqrt_w,
                     (a + b * sigma * jnp.sqrt(1.0 - rho * rho)) / expiry)


def jump_wings_to_raw(v, psi, p, c, v_tilde, expiry=1.0):
    """Jump-wings -> raw SVI (a, b, rho, m, sigma) (Gatheral & Jacquier 2014, lemma 3.2)."""
    v, psi, p, c, v_tilde, expiry = _floats(v, psi, p, c, v_tilde, expiry)
    w_atm = v * expiry
    sqrt_w = jnp.sqrt(w_atm)
    b = 0.5 * sqrt_w * (c + p)
    rho = 1.0 - p * sqrt_w / b
    beta = rho - 2.0 * psi * sqrt_w / b  # = m / sqrt(m^2 + sigma^2)
    centred = beta == 0  # m = 0: sigma from w_atm and v_tilde directly (double where)
    beta_safe = jnp.where(centred, 0.5, beta)
    alpha = jnp.sign(beta_safe) * jnp.sqrt(1.0 / (beta_safe * beta_safe) - 1.0)  # sigma / m
    shape = (-rho + jnp.sign(alpha) * jnp.sqrt(1.0 + alpha * alpha)
             - alpha * jnp.sqrt(1.0 - rho * rho))
    m = jnp.where(centred, 0.0, (v - v_tilde) * expiry / (b * shape))
    sigma_centred = (v - v_tilde) * expiry / (b * (1.0 - jnp.sqrt(1.0 - rho * rho)))
    sigma = jnp.where(centred, sigma_centred, alpha * m)
    a = v_tilde * expiry - b * sigma * jnp.sqrt(1.0 - rho * rho)
    return a, b, rho, m, sigma


def initial_guess(k, total_variance, *, weights=None, mask=None):
    """Quasi-explicit start parameters [slices, 5] (De Marco & Martini / Zeliade).

    For fixed (m, sigma) the slice is linear in the other three parameters, so the problem
    reduces to two: the best point of a 3 x 3 (m, sigma) grid scaled to the quoted k range
    starts a Levenberg–Marquardt on the reduced (variable-projection) problem
    (``GUESS_CONFIG``), and the exact linear solution at its (m, sigma), projected onto
    b > 0 and |rho| < 1, is the guess. Lanes without 5 usable points get NaN.
    """
    *arrays, dtype = _validate(k, total_variance, weights, mask)
    return _initial_guess(*arrays, dtype=dtype)


@functools.partial(jax.jit, static_argnames=("dtype",))
def _initial_guess(k, w, weights, mask, *, dtype):
    k, w, weights, mask = _prepared(k, w, weights, mask, dtype)
    return map_chunks(lambda *a: _guess(*_clean(*a)), CHUNK_SIZE, k, w, weights, mask)


def _guess(k, w, weights, usable, quotes=None):
    params, status, _ = variable_projection(k, w, weights, usable, None, GUESS_CONFIG,
                                            quotes=quotes)
    return jnp.where((status == FitStatus.BAD_INPUT)[:, None], jnp.nan, feasible_raw(params))


def _validate(k, total_variance, weights, mask):
    """Check shapes and the mask's dtype on the host (ValueError), without copying or casting
    anything: (k, w, weights, mask, float dtype), arrays or None. :func:`_prepared` casts and
    fills the defaults inside the jitted fit (eager casts of big batches cost as much as a fast
    fit)."""
    def array(x):
        return x if x is None or isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x)

    k, w, weights, mask = map(array, (k, total_variance, weights, mask))
    if k.ndim != 2 or k.shape != w.shape:
        raise ValueError(f"k and total_variance must both be [slices, strikes], got {k.shape} "
                         f"and {w.shape}")
    if weights is not None and not _broadcasts(weights.shape, w.shape):
        raise ValueError(f"weights of shape {weights.shape} do not broadcast to [slices, "
                         f"strikes] = {w.shape}")
    if mask is not None:
        if mask.dtype != bool:
            raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
        if not _broadcasts(mask.shape, w.shape):
            raise ValueError(f"mask of shape {mask.shape} does not broadcast to [slices, "
                             f"strikes] = {w.shape}")
    return k, w, weights, mask, np.dtype(float_dtype(k, w))


def _broadcasts(shape, target) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def _prepared(k, w, weights, mask, dtype):
    """Inside the jit: the inputs cast to ``dtype``, weights (default 1) and mask (default
    all True) broadcast to [slices, strikes]."""
    k, w = k.astype(dtype), w.astype(dtype)
    weights = jnp.ones_like(w) if weights is None else jnp.broadcast_to(
        weights.astype(dtype), w.shape)
    mask = jnp.ones(w.shape, bool) if mask is None else jnp.broadcast_to(mask, w.shape)
    return k, w, weights, mask


def _clean(k, w, weights, mask):
    """Return (k, w, weights, usable) with unusable points (masked, non-finite, w <= 0, zero
    or non-finite weight) zeroed: the double where."""
    usable = (mask & jnp.isfinite(k) & jnp.isfinite(w) & (w > 0) & jnp.isfinite(weights)
              & (weights > 0))
    return (jnp.where(usable, k, 0.0), jnp.where(usable, w, 0.0),
            jnp.where(usable, weights, 0.0), usable)


# --------------------------------------------------------------------------- calibration
class SVIFit(FitResult):
    """Per-slice result of :func:`fit`: the one fit-result shape
    (:class:`jaxvol.calibrate.FitResult`, docs/conventions.md): ``params`` [slices, 5] (a, b,
    rho, m, sigma); ``status`` [slices] int32 :class:`jaxvol.calibrate.FitStatus`; ``loss``,
    ``iterations`` as in the engine; ``rmse`` [slices] root-mean-square total-variance error
    over the usable points (unweighted); ``residuals`` [slices, strikes] model minus market
    total variance (0 where unusable)."""

    __slots__ = ()


def slice_residuals(params, k, w):
    """Model minus market total variance for one slice."""
    return total_variance(k, *params) - w


_PENALTY_POINTS = 25
_SEARCH_POINTS = 121
_G_MARGIN = 1e-3  # g is pushed to >= ~this, so the balance against the fit keeps g >= 0


def _safe_g(k, params):
    w, dw, d2w = total_variance_derivatives(k, *params)
    positive = w > 0
    w_safe = jnp.where(positive, w, 1.0)
    g = (1.0 - k * dw / (2.0 * w_safe)) ** 2 - 0.25 * dw * dw * (1.0 / w_safe + 0.25) + 0.5 * d2w
    return jnp.where(positive, g, -1.0)


def arbitrage_penalties(params, k_grid):
    """Residual rows that vanish iff the slice is arbitrage-free over [k_grid[0], k_grid[-1]]:
    relu(margin - g) at each grid point and at the polished minimum of g over the range
    (:func:`polished_minimum`; its location is held fixed under differentiation, the envelope
    theorem), Lee's wing bound relu(b (1 + |rho|) - 2) and a non-negative minimum variance
    relu(-(a + b sigma sqrt(1 - rho^2)))."""
    a, b, rho, m, sigma = params
    g = lambda k: _safe_g(k, params)  # noqa: E731
    _, k_min = polished_minimum(g, k_grid[0], k_grid[-1], _SEARCH_POINTS, k_grid.dtype)
    g_values = jnp.concatenate([g(k_grid), g(jax.lax.stop_gradient(k_min))[None]])
    butterfly = jax.nn.relu(_G_MARGIN - g_values)
    lee = jax.nn.relu(b * (1.0 + jnp.abs(rho)) - 2.0)
    floor = jax.nn.relu(-(a + b * sigma * jnp.sqrt(1.0 - rho * rho)))
    return jnp.concatenate([butterfly, jnp.stack([lee, floor])])


def penalised_residuals(params, k, w, k_grid):
    """Slice residuals followed by the arbitrage penalty rows."""
    return jnp.concatenate([slice_residuals(params, k, w), arbitrage_penalties(params, k_grid)])


def one_sided_penalties(params, k, lower, upper):
    """Residual rows that vanish iff the smile respects one-sided quotes: relu(w(k) - upper)
    (an option with an ask but no bid: its total variance is at most the ask's) and
    relu(lower - w(k)) (a bid but no ask), one pair per point; pass a huge ``upper`` and a
    hugely negative ``lower`` where a side is absent."""
    model = total_variance(k, *params)
    return jnp.concatenate([jax.nn.relu(model - upper), jax.nn.relu(lower - model)])


def _bounded_residuals(params, k, w, k_grid, k_one, lower, upper):
    return jnp.concatenate([penalised_residuals(params, k, w, k_grid),
                            one_sided_penalties(params, k_one, lower, upper)])


ONE_SIDED_TOLERANCE = 0.01  #: relative excess of total variance over a one-sided bound allowed


def _one_sided_arrays(one_sided, dtype):
    """Inside the jit: (k, lower, upper, has_lower, has_upper) of the one-sided quotes, the
    absent sides and points replaced by finite stand-ins (the double where)."""
    k, lower, upper = (x.astype(dtype) for x in one_sided)
    point = jnp.isfinite(k)
    has_lower = point & jnp.isfinite(lower) & (lower > 0)
    has_upper = point & jnp.isfinite(upper) & (upper > 0)
    big = jnp.asarray(jnp.finfo(dtype).max, dtype)
    return (jnp.where(point, k, 0.0), jnp.where(has_lower, lower, -big),
            jnp.where(has_upper, upper, big), has_lower, has_upper)


_PLACEHOLDER = (0.01, 0.1, 0.0, 0.0, 0.1)  # finite raw SVI params standing in for NaN rows


def _with_placeholder(params, ok):
    """``params`` [lanes, 5] where ``ok`` [lanes], :data:`_PLACEHOLDER` elsewhere."""
    return jnp.where(ok[:, None], params, jnp.asarray(_PLACEHOLDER, params.dtype))


def _rms_weight(weights, usable):
    """[lanes] root-mean-square weight of the usable points."""
    count = jnp.maximum(jnp.sum(usable, axis=1), 1).astype(weights.dtype)
    return jnp.sqrt(jnp.sum(jnp.where(usable, weights, 0.0) ** 2, axis=1) / count)


def _outside(params, one_sided):
    """[lanes] the fitted smile lies more than ``ONE_SIDED_TOLERANCE`` above an upper or below
    a lower one-sided bound (False where there are none or the params are not finite)."""
    k, lower, upper, has_lower, has_upper = one_sided
    finite = jnp.all(jnp.isfinite(params), axis=1)
    safe = _with_placeholder(params, finite)
    model = total_variance(k, *(safe[:, i:i + 1] for i in range(5)))
    above = has_upper & (model > upper * (1.0 + ONE_SIDED_TOLERANCE))
    below = has_lower & (model < lower * (1.0 - ONE_SIDED_TOLERANCE))
    return finite & jnp.any(above | below, axis=1)


def _penalty_grid(k, usable):
    """[lanes, 25] k points of the penalty rows over the quoted range and half a span beyond."""
    k_lo = jnp.min(jnp.where(usable, k, jnp.inf), axis=1, keepdims=True)
    k_hi = jnp.max(jnp.where(usable, k, -jnp.inf), axis=1, keepdims=True)
    span = jnp.where(jnp.isfinite(k_hi - k_lo), jnp.maximum(k_hi - k_lo, 0.1), 1.0)
    centre = jnp.where(jnp.isfinite(k_hi + k_lo), 0.5 * (k_hi + k_lo), 0.0)
    unit = jnp.linspace(-1.0, 1.0, _PENALTY_POINTS, dtype=k.dtype)
    return centre + span * unit  # the quoted range and half a span beyond on each side


NO_ARBITRAGE_MODES = ("off", "repair", "penalty")
PRIOR_WEIGHT = 0.5  #: default weight of each prior pseudo-quote (see :func:`fit`)


def fit(k, total_variance, *, weights=None, mask=None, initial=None, prior=None,
        prior_weight=PRIOR_WEIGHT, one_sided=None, no_arbitrage="off", penalty_weight=10.0,
        config: LMConfig | None = None,
        chunk_size: int | None = CHUNK_SIZE) -> SVIFit:
    """Fit raw SVI to every slice of [slices, strikes] arrays in one batch.

    Args:
      k: log forward moneyness [slices, strikes].
      total_variance: market total implied variance [slices, strikes].
      weights: residual multipliers (e.g. vega or 1/spread), [slices, strikes] or broadcastable.
      mask: bool, False drops a point. Points that are non-finite, have w <= 0 (e.g. from crossed
        quotes) or a non-positive weight are dropped too; a slice with fewer than 5 usable
        points gets status TOO_FEW_POINTS and NaN params, and never affects the other slices.
      initial: warm-start params [slices, 5]; default the quasi-explicit :func:`initial_guess`.
      prior: None (default: the plain fit) or [slices, 5] raw SVI params of a reference smile
        per slice (e.g. the slice's SSVI smile, :func:`jaxvol.ssvi.to_raw_svi`; a non-finite row
        fits that slice without a prior). A weak Tikhonov regularisation in function space: the
        prior's total variance enters the least squares as 13 pseudo-quotes, 11 evenly over the
        checked range (the quoted k range and half its width beyond on each side) and one on
        each side two checked widths further out, so slices whose quotes cannot identify the
        wings (short, noisy expiries) take the prior's wings instead of running to rho = +-1 or
        the sigma floor; where the quotes are informative they dominate. The pseudo-quotes never
        widen the box of m and sigma, count as points, or enter ``rmse`` and ``residuals``
        (``loss`` is the regularised objective). Measured on the synthetic market
        (docs/benchmarks.md, issue 20): closer to the true smile inside and beyond the quotes
        than the plain fit in every expiry bucket.
      prior_weight: weight of each pseudo-quote relative to the root-mean-square weight of the
        slice's quotes (default ``PRIOR_WEIGHT`` = 0.5, chosen on the synthetic market).
      one_sided: None or ``(k, lower, upper)``, each [slices, n]: quotes with one side only,
        as bounds on the total variance (an OTM option with an ask but a zero bid: ``upper`` =
        the ask's total implied variance, ``lower`` NaN; a bid without an ask: ``lower``). NaN
        marks an absent side or point. They are not points of the least squares (a zero-bid
        mid is not a price) but constraints: a fit whose total variance lies more than
        ``ONE_SIDED_TOLERANCE`` (1%) above an upper (below a lower) bound gets OUTSIDE_QUOTES,
        and ``no_arbitrage="repair"`` refits those slices with the rows of
        :func:`one_sided_penalties` (weight ``penalty_weight`` times the root-mean-square quote
        weight) beside the arbitrage penalties; ``"penalty"`` includes them in every slice's
        fit. Zero-bid wings are what pins a wing that the quotes alone leave free.
      no_arbitrage: ``"off"`` (default, or False): the plain fit; a slice whose fit has static
        arbitrage over the checked range gets ARBITRAGE (or DEGENERATE beyond Lee's bound), so
        a CONVERGED slice is arbitrage-free either way. ``"repair"``: the plain fit, then the
        slices whose fit violates
        Lee's wing bound, Durrleman's g >= 0 or a non-negative minimum variance over the
        checked range (the quoted k range widened by ``CHECK_MARGIN`` = half its width on each
        side) are fitted again with the penalty rows below, from the plain fit's point (only
        those slices pay for it); ``"penalty"`` (or True): every slice is fitted with the
        penalty rows (:func:`arbitrage_penalties`, times ``penalty_weight``) keeping g >= 0 (at
        25 points and at g's polished minimum over the checked range), Lee's bound and a
        non-negative minimum variance (stiffer: ~100+ iterations). The repair is not this
        function's default because it compiles a penalised engine fit into every program
        (minutes of compile on a loaded 2-core machine) and is differentiable in forward mode
        only; the nightly job, which compiles once per night into a persistent cache, runs it
        by default (``svi.no_arbitrage``; docs/benchmarks.md, issue 20).
      config: :class:`LMConfig`; default ``FIT_CONFIG`` (60 iterations), or
        ``NO_ARBITRAGE_CONFIG`` (300) with ``"penalty"`` (the repair always runs
        ``NO_ARBITRAGE_CONFIG``). Its tolerances and ``max_iterations`` govern the
        variable-projection iterations and, separately, the engine fit of the slices handed on
        to it (``iterations`` reports the sum).
      chunk_size: slices are fitted in chunks of this many (:func:`jaxvol.calibrate.map_chunks`:
        cache-sized working sets); None fits all at once. Results do not depend on it beyond
        rounding.

    The fit keeps b >= 0 and |rho| <= 1 (an optimum on rho = +-1 is returned exactly), m within
    [k_lo - R, k_hi + R] and sigma within [R / 100, 10 R], where [k_lo, k_hi] is the slice's
    usable k range and R its width.

    Status (:class:`jaxvol.calibrate.FitStatus`, precedence as in
    :func:`jaxvol.calibrate.refine_status`): OUTSIDE_QUOTES (lowest) as under ``one_sided``;
    TOO_FEW_POINTS below 5 usable points;
    UNIDENTIFIED with fewer than 5 distinct k or all quotes equal (a flat slice: m and sigma are
    free); DEGENERATE beyond Lee's wing bound b (1 + |rho|) <= 2 (which also caps b) or with
    rho = +-1 and sigma on its floor; AT_BOUND with rho = +-1, sigma on its floor or cap, m on
    the edge of its box or b = 0; ARBITRAGE where g < 0 (below -1e-9) or the minimum variance
    is negative over the checked range. With a prior, UNIDENTIFIED also where the prior
    determines more than 4 of the 5 parameters (:func:`prior_share`: the quotes determine less
    than one); on the synthetic market a typical regularised slice has a share of ~3 (the
    wings come from the prior, the level, skew and curvature inside the quotes from the data).
    CONVERGED is a usable fit: none of these holds.
    """
    mode = _no_arbitrage_mode(no_arbitrage)
    if config is None:
        config = NO_ARBITRAGE_CONFIG if mode == "penalty" else FIT_CONFIG
    *arrays, dtype = _validate(k, total_variance, weights, mask)
    if initial is not None and not isinstance(initial, (jax.Array, np.ndarray)):
        initial = np.asarray(initial)
    if prior is not None:
        prior = prior if isinstance(prior, (jax.Array, np.ndarray)) else np.asarray(prior)
        if prior.shape != (arrays[0].shape[0], len(PARAMS)):
            raise ValueError(f"prior must be [slices, 5] = {(arrays[0].shape[0], len(PARAMS))} "
                             f"raw SVI params, got shape {prior.shape}")
    if one_sided is not None:
        if not isinstance(one_sided, (tuple, list)) or len(one_sided) != 3:
            raise ValueError("one_sided must be a tuple (k, lower, upper) of [slices, n] arrays")
        one_sided = tuple(x if isinstance(x, (jax.Array, np.ndarray)) else np.asarray(x, float)
                          for x in one_sided)
        shapes = {x.shape for x in one_sided}
        if (len(shapes) != 1 or len(one_sided[0].shape) != 2
                or one_sided[0].shape[0] != arrays[0].shape[0]):
            raise ValueError(f"one_sided arrays must share one [slices, n] shape with slices = "
                             f"{arrays[0].shape[0]}, got {[x.shape for x in one_sided]}")
    return _fit(*arrays, initial, prior, prior_weight, one_sided, penalty_weight, dtype=dtype,
                no_arbitrage=mode, config=config, chunk_size=chunk_size)


def _no_arbitrage_mode(value) -> str:
    if value is True:
        return "penalty"
    if value is False or value is None:
        return "off"
    if value not in NO_ARBITRAGE_MODES:
        raise ValueError(f"no_arbitrage must be one of {NO_ARBITRAGE_MODES} (or a bool), got "
                         f"{value!r}")
    return value


@functools.partial(jax.jit,
                   static_argnames=("dtype", "no_arbitrage", "config", "chunk_size"))
def _fit(k, w, weights, mask, initial, prior, prior_weight, one_sided, penalty_weight, *,
         dtype, no_arbitrage, config, chunk_size):
    k, w, weights, usable = _clean(*_prepared(k, w, weights, mask, dtype))
    if one_sided is not None:
        one_sided = _one_sided_arrays(one_sided, dtype)
    penalty_weight = jnp.asarray(penalty_weight, dtype)
    if initial is not None:
        initial = initial.astype(dtype)
    # the fit's arrays: the quotes, then the prior's pseudo-quotes (columns quotes:)
    arrays, quotes = (k, w, weights, usable), None
    if prior is not None:
        arrays = _with_prior(k, w, weights, usable, prior.astype(dtype),
                             jnp.asarray(prior_weight, dtype))
        quotes = k.shape[1]
    extra = () if one_sided is None else one_sided
    if no_arbitrage == "penalty":
        def body(k, w, weights, usable, start, *one):
            return _penalised_chunk(k, w, weights, usable, start, penalty_weight, config,
                                    quotes, one or None)
        if initial is None:
            outputs = map_chunks(lambda k, w, weights, usable, *one: body(
                k, w, weights, usable, None, *one), chunk_size, *arrays, *extra)
        else:
            outputs = map_chunks(body, chunk_size, *arrays, initial, *extra)
    else:
        outputs = _separable_fit(*arrays, initial, config, chunk_size, quotes)
    params, status, loss, iterations, residuals = outputs
    residuals = residuals[:, :k.shape[1]]
    status = refine_status(status, **_quality(params, arrays, quotes, one_sided))
    if no_arbitrage == "repair":
        params, status, loss, iterations, residuals = _repair(
            (params, status, loss, iterations, residuals), arrays, quotes, penalty_weight,
            one_sided)
    return SVIFit(params, status, loss, iterations, rmse_of(residuals, usable), residuals)


_PRIOR_POINTS = 11  # pseudo-quotes of the prior evenly over the checked range, ...
_PRIOR_FAR = 1.0  # ... and one on each side this many checked-range widths beyond it


def _with_prior(k, w, weights, usable, prior, prior_weight):
    """The cleaned quotes followed by 13 pseudo-quotes of the prior smile (``prior`` [lanes, 5]
    raw SVI): ``_PRIOR_POINTS`` evenly over the checked range (:func:`_check_range`) and one on
    each side ``_PRIOR_FAR`` of its widths beyond (they hold the wing slopes, hence rho, to the
    prior's), each weighted ``prior_weight`` times the root-mean-square weight of the slice's
    quotes. Lanes
    whose prior is not finite, or with fewer than 5 usable quotes, get no usable pseudo-quote
    (the plain fit; thin slices stay TOO_FEW_POINTS)."""
    lo, hi = _check_range(k, usable)
    count = jnp.sum(usable, axis=1)
    ok = (jnp.isfinite(lo) & jnp.isfinite(hi) & jnp.all(jnp.isfinite(prior), axis=1)
          & (count >= len(PARAMS)))
    lo, hi = jnp.where(ok, lo, -1.0), jnp.where(ok, hi, 1.0)
    safe = _with_placeholder(prior, ok)
    unit = jnp.concatenate([jnp.linspace(0.0, 1.0, _PRIOR_POINTS, dtype=k.dtype),
                            jnp.asarray([-_PRIOR_FAR, 1.0 + _PRIOR_FAR], k.dtype)])
    k_prior = lo[:, None] + (hi - lo)[:, None] * unit
    w_prior = total_variance(k_prior, *(safe[:, i:i + 1] for i in range(5)))
    ok = ok[:, None] & jnp.isfinite(w_prior) & (w_prior > 0)
    weight_prior = jnp.where(ok, prior_weight * _rms_weight(weights, usable)[:, None], 0.0)
    return (jnp.concatenate([k, jnp.where(ok, k_prior, 0.0)], axis=1),
            jnp.concatenate([w, jnp.where(ok, w_prior, 0.0)], axis=1),
            jnp.concatenate([weights, weight_prior], axis=1),
            jnp.concatenate([usable, ok], axis=1))


_REPAIR_LANES = 32  # lanes per penalised refit of the slices that need a repair


def _repair(outputs, arrays, quotes, penalty_weight, one_sided=None):
    """Refit the slices whose plain fit has static arbitrage (ARBITRAGE, or DEGENERATE beyond
    Lee's bound) or contradicts a one-sided quote (OUTSIDE_QUOTES) with the penalty rows (and
    the one-sided rows), from their plain fit projected into the box; a slice
    takes the refit where it is usable (CONVERGED after the checks), else keeps the plain fit
    and its status. ``arrays``: the fit's (k, w, weights, usable), the prior's pseudo-quotes
    after the first ``quotes`` columns (None: no prior)."""
    params, status, loss, iterations, residuals = outputs
    k, w, weights, usable = arrays
    width = residuals.shape[1]
    lee = ~satisfies_lee_bound(params[:, 1], params[:, 2])
    pending = ((status == FitStatus.ARBITRAGE) | ((status == FitStatus.DEGENERATE) & lee)
               | (status == FitStatus.OUTSIDE_QUOTES))
    n_one = 0 if one_sided is None else len(one_sided)

    def refit(valid, k, w, weights, usable, *rest):
        one, (start, status, *old) = rest[:n_one] or None, rest[n_one:]
        start = _lee_feasible(feasible_raw(start))
        new = _penalised_chunk(k, w, weights, usable & valid[:, None], start, penalty_weight,
                               NO_ARBITRAGE_CONFIG, quotes, one)
        new_status = refine_status(new[1], **_quality(
            new[0], (k, w, weights, usable), quotes, one))
        take = new_status == FitStatus.CONVERGED
        pick = lambda n, o: jnp.where(  # noqa: E731
            take.reshape(take.shape + (1,) * (o.ndim - 1)), n, o)
        return (pick(new[0], old[0]), jnp.where(take, new_status, status), pick(new[2], old[1]),
                old[2] + new[3], pick(new[4][:, :width], old[3]))  # iterations: plain + refit

    size = k.shape[0]
    extra = () if one_sided is None else tuple(one_sided)
    return compacted(pending, min(_REPAIR_LANES, size), refit,
                      (k, w, weights, usable, *extra, params, status, params, loss, iterations,
                       residuals), (params, status, loss, iterations, residuals))


def _lee_feasible(params):
    """b scaled down to 0.99 of Lee's bound 2 / (1 + |rho|) where it lies beyond it."""
    b, rho = params[:, 1], params[:, 2]
    cap = 0.99 * 2.0 / (1.0 + jnp.abs(rho))
    return params.at[:, 1].set(jnp.minimum(b, cap))


_RHO_EDGE = 1e-9  # |rho| >= 1 - this: on a face of the cone (the fit returns +-1 exactly)
_EDGE = 1e-6  # relative distance to a box bound of m or sigma that counts as on it
_FLAT = 1e-9  # max - min of the quoted total variance below this share of the max: all equal
_G_TOLERANCE = 1e-9  # g below -this: butterfly arbitrage (rounding of g is ~1e-13)
_CHECK_POINTS = 121  # grid of the butterfly check over the checked range (plus the quotes)
CHECK_MARGIN = 0.5  #: the no-arbitrage checks cover the quoted k range and this many widths


def _quality(params, arrays, quotes=None, one_sided=None):
    """The usability checks of a fitted slice (the arguments of
    :func:`jaxvol.calibrate.refine_status`) from the fit's (k, w, weights, usable), whose
    columns from ``quotes`` on are a prior's pseudo-quotes; see :func:`fit` for what each
    check means."""
    k, w, weights, usable = arrays
    leans_on_prior = False
    if quotes is not None:
        leans_on_prior = prior_share(params, *arrays, quotes) > _PRIOR_SHARE
        k, w, weights, usable = (x[:, :quotes] for x in arrays)
    a, b, rho, m, sigma = (params[:, i] for i in range(5))
    span, m_lo, m_hi, t_lo, t_hi = (x[:, 0] for x in jax.tree.leaves(theta_box(k, usable)))
    w_hi = jnp.max(jnp.where(usable, w, -jnp.inf), axis=1)
    w_lo = jnp.min(jnp.where(usable, w, jnp.inf), axis=1)
    on_face = jnp.abs(rho) >= 1.0 - _RHO_EDGE
    sigma_floor = sigma <= jnp.exp(t_lo) * (1.0 + _EDGE)
    at_bound = (on_face | sigma_floor | (sigma >= jnp.exp(t_hi) * (1.0 - _EDGE))
                | (m <= m_lo + _EDGE * span) | (m >= m_hi - _EDGE * span) | ~(b > 0))
    return dict(
        too_few=jnp.sum(usable, axis=1) < len(PARAMS),
        unidentified=((distinct_count(k, usable, limit=len(PARAMS)) < len(PARAMS))
                      | (w_hi - w_lo <= _FLAT * w_hi) | leans_on_prior),
        degenerate=~satisfies_lee_bound(b, rho) | (on_face & sigma_floor),
        at_bound=at_bound, arbitrage=~_arbitrage_free(params, k, usable),
        outside=None if one_sided is None else _outside(params, one_sided))


_PRIOR_SHARE = 4.0  # of the 5 parameters: the quotes determine less than one


def _information(params, k, weights, usable):
    """[lanes, 5, 5] Gauss-Newton information J^T W J of the points (k, weights) where usable."""
    a, b, rho, m, sigma = (params[:, i:i + 1] for i in range(5))
    x = k - m
    root = jnp.sqrt(x * x + sigma * sigma)
    jacobian = jnp.stack([jnp.ones_like(x), rho * x + root, b * x, -b * (rho + x / root),
                          b * sigma / root], axis=-1)
    weight = jnp.where(usable, weights * weights, 0.0)
    return jnp.einsum("lni,ln,lnj->lij", jacobian, weight, jacobian)


def prior_share(params, k, w, weights, usable, quotes):
    """[lanes] how many of the 5 parameters the prior's pseudo-quotes (columns ``quotes:``)
    determine rather than the quotes: tr((H_q + H_p)^-1 H_p) of the Gauss-Newton information
    of the quotes (H_q) and of the pseudo-quotes (H_p) at ``params`` (0: the data alone; 5: the
    prior alone; the effective number of parameters of a ridge regression, Hastie et al.)."""
    del w
    finite = jnp.all(jnp.isfinite(params), axis=1)
    safe = _with_placeholder(params, finite)
    h_quotes, h_prior = (_information(safe, k[:, cols], weights[:, cols], usable[:, cols])
                         for cols in (slice(None, quotes), slice(quotes, None)))
    total = h_quotes + h_prior
    ridge = 1e-12 * jnp.trace(total, axis1=1, axis2=2)[:, None, None] * jnp.eye(5)
    share = jnp.trace(jnp.linalg.solve(total + ridge, h_prior), axis1=1, axis2=2)
    return jnp.where(finite, share, 0.0)


def _check_range(k, usable):
    """[lanes] (lowest, highest) k the no-arbitrage checks cover: the quoted range widened by
    ``CHECK_MARGIN`` of its width on each side."""
    k_lo, span = (x[:, 0] for x in k_range(k, usable))
    return k_lo - CHECK_MARGIN * span, k_lo + (1.0 + CHECK_MARGIN) * span


def _arbitrage_free(params, k, usable):
    """Per slice: Durrleman's g >= 0 (to -``_G_TOLERANCE``) on a grid of ``_CHECK_POINTS``
    over :func:`_check_range` and at the quotes, and a non-negative minimum variance. One
    vectorised pass (no per-lane search): the check costs a fraction of one fit iteration."""
    lo, hi = _check_range(k, usable)
    finite = jnp.all(jnp.isfinite(params), axis=1) & jnp.isfinite(lo) & jnp.isfinite(hi)
    safe = jnp.where(finite[:, None], params, 1.0)
    unit = jnp.linspace(0.0, 1.0, _CHECK_POINTS, dtype=k.dtype)
    lo, hi = jnp.where(finite, lo, -1.0), jnp.where(finite, hi, 1.0)
    grid = jnp.concatenate([lo[:, None] + (hi - lo)[:, None] * unit, k], axis=1)
    columns = tuple(safe[:, i:i + 1] for i in range(5))
    g = _safe_g(grid, columns)
    g = jnp.where(jnp.concatenate([jnp.ones(grid.shape[:1] + unit.shape, bool), usable], 1),
                  g, jnp.inf)
    a, b, rho, m, sigma = (params[:, i] for i in range(5))
    floor = a + b * sigma * jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0))
    return (jnp.min(g, axis=1) >= -_G_TOLERANCE) & (floor >= 0)


def _penalised_chunk(k, w, weights, usable, initial, penalty_weight, config, quotes=None,
                     one_sided=None):
    """The arbitrage-aware fit of one chunk of cleaned slices: the engine on the penalised
    residuals, from the quasi-explicit guess (or ``initial``). Columns from ``quotes`` on are
    a prior's pseudo-quotes (:func:`quote_columns`); ``one_sided`` (from
    :func:`_one_sided_arrays`) adds the rows of :func:`one_sided_penalties`."""
    k_quotes, usable_quotes = quote_columns(k, usable, quotes)
    enough = jnp.sum(usable_quotes.astype(jnp.int32), axis=1) >= len(PARAMS)
    start = _guess(k, w, weights, usable, quotes) if initial is None else initial
    start = jnp.where(enough[:, None], start, jnp.nan)  # BAD_INPUT for thin slices
    rows = _PENALTY_POINTS + 3
    extra = jnp.broadcast_to(penalty_weight, (k.shape[0], rows))
    grid = _penalty_grid(k_quotes, usable_quotes)
    if one_sided is None:
        fn, args = penalised_residuals, (k, w, grid)
        row_weights = jnp.concatenate([weights, extra], axis=1)
        row_mask = jnp.concatenate([usable, jnp.ones(extra.shape, bool)], axis=1)
    else:
        k_one, lower, upper, has_lower, has_upper = one_sided
        rms = _rms_weight(weights[:, :k_quotes.shape[1]], usable_quotes)
        one_weight = jnp.broadcast_to((penalty_weight * rms)[:, None], (k.shape[0],
                                                                        2 * k_one.shape[1]))
        fn, args = _bounded_residuals, (k, w, grid, k_one, lower, upper)
        row_weights = jnp.concatenate([weights, extra, one_weight], axis=1)
        row_mask = jnp.concatenate([usable, jnp.ones(extra.shape, bool), has_upper,
                                    has_lower], axis=1)
    result = least_squares(
        fn, start, *args, weights=row_weights, mask=row_mask,
        lower=LOWER, upper=UPPER, config=config)
    return (result.params, result.status, result.loss, result.iterations,
            result.residuals[:, :k.shape[1]])


_BOUNDS = make_bounds(LOWER, UPPER, len(PARAMS))
_FACE_U = 40.0  # the engine coordinate of rho = +-1 (sigmoid(40) rounds to 1 in float64)
_AT_BOUND = 1e-9  # |theta - bound| below this: the bound is active (implicit derivatives)


def _to_engine(params):
    """Raw params [lanes, 5] -> the engine's unbounded coordinates, rho = +-1 (a fit on a
    face of the cone) at u = +-_FACE_U instead of +-inf."""
    u = to_unbounded(params.T, _BOUNDS).T  # (which keeps |u_rho| <= 33.3 inside the box)
    rho = params[:, 2]
    return u.at[:, 2].set(jnp.where(rho <= -1, -_FACE_U, jnp.where(rho >= 1, _FACE_U, u[:, 2])))


def _optimality(fn, quotes=None):
    """One lane's optimality condition for the implicit derivatives: the engine's J^T r in
    the free coordinates, and ``coordinate - bound`` for each active bound (rho = +-1, m or
    log sigma on the edge of their box), so a constrained optimum moves along its bound."""
    gradient = least_squares_gradient(fn)

    def condition(u, args, weights, mask):
        g = gradient(u, args, weights, mask)
        _, (m_lo, m_hi, t_lo, t_hi) = theta_box(*quote_columns(args[0], mask, quotes))
        face = jax.lax.stop_gradient(jnp.sign(u[2])) * _FACE_U
        g = g.at[2].set(jnp.where(jnp.abs(u[2]) >= _FACE_U, u[2] - face, g[2]))
        for i, lo, hi in ((3, m_lo[0], m_hi[0]), (4, t_lo[0], t_hi[0])):
            g = g.at[i].set(jnp.where(jnp.abs(u[i] - lo) <= _AT_BOUND, u[i] - lo,
                                      jnp.where(jnp.abs(u[i] - hi) <= _AT_BOUND, u[i] - hi,
                                                g[i])))
        return g

    return condition
_FALLBACK_LANES = 16  # lanes per engine call of the fallback (gathered from the whole batch)


def _separable_fit(k, w, weights, usable, initial, config, chunk_size, quotes=None):
    """The plain fit: variable projection, then the engine for the lanes it cannot finish.

    1. The reduced fit with unconstrained linear coefficients (cheap; most slices end here):
       lanes that converge with b > 0 and |rho| <= 1 are done.
    2. Lanes whose solution leaves that cone, or that did not converge, are gathered
       (``_VP_COMPACT_LANES`` at a time) and fitted again with the cone enforced in the linear
       step (:mod:`jaxvol.smile._svi_projection`): an optimum on rho = +-1 is reached exactly.
    3. What is still unfinished (no convergence, or b = 0: a flat smile) is gathered
       ``_FALLBACK_LANES`` at a time and fitted by the engine's bounded Levenberg–Marquardt
       (:func:`jaxvol.calibrate.least_squares`) from the point reached, projected into the box.

    Derivatives of the params with respect to the quotes and weights come from the engine's
    implicit-function rule on the full 5-parameter problem (in its unbounded coordinates), with
    each active bound (rho = +-1, m or sigma on the edge of their box) held (:func:`_optimality`).
    """
    fn = weighted_residual_fn(slice_residuals, _BOUNDS)
    warm = initial is not None
    u0 = initial if warm else jnp.zeros((k.shape[0], len(PARAMS)), k.dtype)
    solver = functools.partial(_separable_solver, fn=fn, warm=warm, config=config,
                               chunk_size=chunk_size, quotes=quotes)
    result = driver.solve(solver, _optimality(fn, quotes), u0, (k, w), weights, usable, bounds=_BOUNDS,
                          residuals=_batch_residuals)
    return result.params, result.status, result.loss, result.iterations, result.residuals


def _batch_residuals(params, args):
    """Model minus market total variance of every slice ([slices, 5] params, args (k, w))."""
    k, w = args
    return total_variance(k, *[params[:, i:i + 1] for i in range(5)]) - w


_VP_FIRST_ROUND = 6  # iterations every chunk runs; slower lanes go on in compacted rounds
_VP_COMPACT_LANES = 1024


def _in_cone(params):
    """b > 0, |rho| <= 1 and every parameter finite, per lane."""
    return ((params[:, 1] > 0) & (params[:, 2] <= 1) & (params[:, 2] >= -1)
            & jnp.all(jnp.isfinite(params), axis=1))


def _separable_solver(params0, args, weights, mask, *, fn, warm, config, chunk_size,
                      quotes=None):
    """(u [lanes, 5] in the engine's unbounded coordinates, status, iterations)."""
    k, w = args
    size = k.shape[0]

    def vp(lane_config, warm):
        return lambda k, w, weights, mask, start: variable_projection(  # noqa: E731
            k, w, weights, mask, start if warm else None, lane_config, quotes=quotes)

    first = dataclasses.replace(config, max_iterations=min(config.max_iterations,
                                                           _VP_FIRST_ROUND))
    params, status, iterations = map_chunks(vp(first, warm), chunk_size, k, w, weights, mask,
                                            params0[:, 3:5])
    rest = dataclasses.replace(config, max_iterations=max(
        1, config.max_iterations - first.max_iterations))

    def finished(params, status):
        return (status == FitStatus.CONVERGED) & _in_cone(params)

    def finish(valid, k, w, weights, mask, params, status, iterations):
        """The unfinished lanes, gathered: the plain fit goes on where it ran out of iterations
        inside the cone; lanes whose optimum leaves the cone b >= 0, |rho| <= 1 (or that still
        did not converge) are fitted again with the constraint, from where they stopped."""
        def run(lanes, fn, params, status, iterations):
            p, s, it = map_chunks(fn, chunk_size, k, w, weights, mask & lanes[:, None],
                                  params[:, 3:5])
            keep = lambda new, old: jnp.where(  # noqa: E731
                lanes.reshape(lanes.shape + (1,) * (old.ndim - 1)), new, old)
            return keep(p, params), keep(s, status), keep(iterations + it, iterations)

        if config.max_iterations > first.max_iterations:
            params, status, iterations = run(
                valid & (status == FitStatus.MAX_ITERATIONS) & _in_cone(params), vp(rest, True),
                params, status, iterations)
        return run(valid & ~finished(params, status),
                   lambda *a: variable_projection(*a, config, faces=True, quotes=quotes),
                   params, status, iterations)

    # one compacted loop for both (each loop copies the batch's arrays once)
    params, status, iterations = compacted(
        ~finished(params, status) & (status != FitStatus.BAD_INPUT),
        min(_VP_COMPACT_LANES, size), finish,
        (k, w, weights, mask, params, status, iterations), (params, status, iterations))
    done = finished(params, status)
    pending = ~done & (status != FitStatus.BAD_INPUT)
    u = _to_engine(jnp.where(done[:, None], params, 0.5))
    u = jnp.where(done[:, None], u, jnp.nan)

    def engine(valid, k, w, weights, mask, start, iterations):
        u_start = to_unbounded(jnp.where(valid[:, None], start, 0.5).T, _BOUNDS).T
        # padding lanes have no usable point: BAD_INPUT, frozen at once
        u, status, more = batched_loop(fn, u_start, (k, w), weights, mask & valid[:, None],
                                        config)
        return u, status, iterations + more

    u, status, iterations = compacted(
        pending, min(_FALLBACK_LANES, size), engine,
        (k, w, weights, mask, feasible_raw(params), iterations), (u, status, iterations))
    return u, status.astype(jnp.int32), iterations
