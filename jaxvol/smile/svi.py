"""Raw SVI (Gatheral 2004): total variance w(k) = a + b (rho (k - m) + sqrt((k - m)^2 + sigma^2)).

k is log forward moneyness log(strike / forward); w is total implied variance vol^2 * expiry.
Parameter order everywhere: (a, b, rho, m, sigma). Pure functions broadcast over their inputs;
:func:`fit` calibrates [slices, strikes] arrays in one batch through
:func:`jaxvol.calibrate.least_squares`.

References: Gatheral & Jacquier (2014), "Arbitrage-free SVI volatility surfaces" (Durrleman's
condition, jump-wings, example 3.1); Lee (2004), "The moment formula for implied volatility at
extreme strikes"; De Marco & Martini / Zeliade (2009), "Quasi-explicit calibration of
Gatheral's SVI model".
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol._dtypes import float_dtype
from jaxvol.calibrate import FitStatus, LMConfig, least_squares, map_chunks
from jaxvol.calibrate._linalg import cholesky_solve

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
def total_variance(k, a, b, rho, m, sigma):
    """Raw SVI total implied variance w(k) (broadcasts)."""
    k, a, b, rho, m, sigma = _floats(k, a, b, rho, m, sigma)
    x = k - m
    return a + b * (rho * x + jnp.sqrt(x * x + sigma * sigma))


def total_variance_derivatives(k, a, b, rho, m, sigma):
    """(w, dw/dk, d2w/dk2) in closed form (broadcasts)."""
    k, a, b, rho, m, sigma = _floats(k, a, b, rho, m, sigma)
    x = k - m
    root = jnp.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + root)
    return w, b * (rho + x / root), b * sigma * sigma / (root * root * root)


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


# --------------------------------------------------------------------------- initial guess
_M_FRACTIONS = (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25)
_SIGMA_FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)


def _linear_coefficients(k, w, weight, m, sigma):
    """Zeliade's inner problem: for fixed (m, sigma), w = a + d y + c z with y = (k - m)/sigma,
    z = sqrt(y^2 + 1), c = b sigma, d = rho b sigma is linear in (a, d, c): weighted least
    squares (weight = squared residual weight; a 1e-12 ridge keeps it solvable). The 3 x 3
    normal equations are built from elementwise sums (fast across lanes). Returns
    ((a, d, c), y, z)."""
    y = (k - m) / sigma
    z = jnp.sqrt(y * y + 1.0)
    wy, wz = weight * y, weight * z
    s0, sy, sz = jnp.sum(weight), jnp.sum(wy), jnp.sum(wz)
    syy, syz = jnp.sum(wy * y), jnp.sum(wy * z)
    szz = syy + s0  # z^2 = y^2 + 1
    normal = jnp.stack([jnp.stack([s0, sy, sz]), jnp.stack([sy, syy, syz]),
                        jnp.stack([sz, syz, szz])])
    ridge = 1e-12 * (s0 + syy + szz) + jnp.finfo(k.dtype).tiny
    rhs = jnp.stack([jnp.sum(weight * w), jnp.sum(wy * w), jnp.sum(wz * w)])
    coefficients = cholesky_solve(normal + ridge * jnp.eye(3, dtype=k.dtype), rhs)
    return coefficients, y, z


def reduced_residuals(m_sigma, k, w, weight):
    """Variable projection: residuals of the best (a, d, c) for given (m, sigma)."""
    (a, d, c), y, z = _linear_coefficients(k, w, weight, m_sigma[0], m_sigma[1])
    return jnp.sqrt(weight) * (a + d * y + c * z - w)


def _raw_from_m_sigma(k, w, weight, m, sigma):
    """Raw params from the inner solution, projected onto b > 0, |rho| < 1."""
    (a, d, c), _, _ = _linear_coefficients(k, w, weight, m, sigma)
    c = jnp.maximum(c, 1e-6)  # b sigma, in units of total variance: keeps b > 0
    d = jnp.clip(d, -0.99 * c, 0.99 * c)
    return jnp.stack([a, c / sigma, d / c, m, sigma])


def _grid_m_sigma(k, w, weight):
    """Best (m, sigma) of a 7 x 5 grid scaled to the quoted range (by reduced SSE)."""
    usable = weight > 0
    k_lo = jnp.min(jnp.where(usable, k, jnp.inf))
    k_hi = jnp.max(jnp.where(usable, k, -jnp.inf))
    span = jnp.maximum(k_hi - k_lo, 1e-3)
    m_grid = k_lo + span * jnp.asarray(_M_FRACTIONS, k.dtype)
    s_grid = span * jnp.asarray(_SIGMA_FRACTIONS, k.dtype)
    m_all, s_all = [x.reshape(-1) for x in jnp.meshgrid(m_grid, s_grid)]
    reduced_sse = lambda m, s: jnp.sum(  # noqa: E731
        reduced_residuals(jnp.stack([m, s]), k, w, weight) ** 2)
    sse = jax.vmap(reduced_sse)(m_all, s_all)
    best = jnp.argmin(jnp.where(jnp.isnan(sse), jnp.inf, sse))
    return jnp.stack([m_all[best], s_all[best]])


def initial_guess(k, total_variance, *, weights=None, mask=None):
    """Quasi-explicit start parameters [slices, 5] (De Marco & Martini / Zeliade).

    For fixed (m, sigma) the slice is linear in the other three parameters, so the problem
    reduces to two: the best of a 7 x 5 (m, sigma) grid scaled to the quoted k range starts a
    Levenberg–Marquardt on the reduced (variable-projection) residuals, and the exact linear
    solution at its (m, sigma), projected onto b > 0 and |rho| < 1, is the guess. Lanes without
    5 usable points get NaN.
    """
    return _initial_guess(*_validate(k, total_variance, weights, mask))


@jax.jit
def _initial_guess(k, w, weights, mask):
    return _guess(*_clean(k, w, weights, mask))


def _guess(k, w, weights, usable):
    weight = weights * weights
    enough = jnp.sum(usable.astype(jnp.int32), axis=1) >= len(PARAMS)
    # the grid needs w only through the clean (zeroed) arrays; thin slices get NaN -> BAD_INPUT
    start = jax.vmap(_grid_m_sigma)(k, w, weight)
    start = jnp.where(enough[:, None], start, jnp.nan)
    reduced = least_squares(reduced_residuals, start, k, w, weight, mask=usable,
                            lower=(-jnp.inf, 0.0), config=GUESS_CONFIG)
    m_sigma = jnp.where(jnp.isfinite(reduced.params), reduced.params, start)
    guess = jax.vmap(lambda k_, w_, weight_, ms: _raw_from_m_sigma(k_, w_, weight_, *ms))(
        k, w, weight, m_sigma)
    return jnp.where(enough[:, None], guess, jnp.nan)


def _validate(k, total_variance, weights, mask):
    """Check [slices, strikes] shapes (ValueError) and fill default weights and mask."""
    k, w = _floats(k, total_variance)
    if k.ndim != 2 or k.shape != w.shape:
        raise ValueError(f"k and total_variance must both be [slices, strikes], got {k.shape} "
                         f"and {w.shape}")
    weights = jnp.ones_like(w) if weights is None else jnp.broadcast_to(
        jnp.asarray(weights, w.dtype), w.shape)
    mask = jnp.ones(w.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask), w.shape)
    if mask.dtype != bool:
        raise ValueError(f"mask must be boolean, got dtype {mask.dtype}")
    return k, w, weights, mask


def _clean(k, w, weights, mask):
    """Return (k, w, weights, usable) with unusable points (masked, non-finite, w <= 0, zero
    or non-finite weight) zeroed: the double where."""
    usable = (mask & jnp.isfinite(k) & jnp.isfinite(w) & (w > 0) & jnp.isfinite(weights)
              & (weights > 0))
    return (jnp.where(usable, k, 0.0), jnp.where(usable, w, 0.0),
            jnp.where(usable, weights, 0.0), usable)


# --------------------------------------------------------------------------- calibration
class SVIFit(NamedTuple):
    """Per-slice result of :func:`fit`.

    ``params`` [slices, 5] (a, b, rho, m, sigma); ``status`` [slices] int32
    :class:`jaxvol.calibrate.FitStatus`; ``rmse`` [slices] root-mean-square total-variance error
    over the usable points (unweighted); ``loss``, ``iterations`` as in the engine;
    ``residuals`` [slices, strikes] model minus market total variance (0 where unusable).
    """

    params: jax.Array
    status: jax.Array
    rmse: jax.Array
    loss: jax.Array
    iterations: jax.Array
    residuals: jax.Array


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


def _penalty_grid(k, usable):
    k_lo = jnp.min(jnp.where(usable, k, jnp.inf), axis=1, keepdims=True)
    k_hi = jnp.max(jnp.where(usable, k, -jnp.inf), axis=1, keepdims=True)
    span = jnp.where(jnp.isfinite(k_hi - k_lo), jnp.maximum(k_hi - k_lo, 0.1), 1.0)
    centre = jnp.where(jnp.isfinite(k_hi + k_lo), 0.5 * (k_hi + k_lo), 0.0)
    unit = jnp.linspace(-1.0, 1.0, _PENALTY_POINTS, dtype=k.dtype)
    return centre + span * unit  # the quoted range and half a span beyond on each side


def fit(k, total_variance, *, weights=None, mask=None, initial=None, no_arbitrage=False,
        penalty_weight=10.0, config: LMConfig | None = None,
        chunk_size: int | None = CHUNK_SIZE) -> SVIFit:
    """Fit raw SVI to every slice of [slices, strikes] arrays in one batch.

    Args:
      k: log forward moneyness [slices, strikes].
      total_variance: market total implied variance [slices, strikes].
      weights: residual multipliers (e.g. vega or 1/spread), [slices, strikes] or broadcastable.
      mask: bool, False drops a point. Points that are non-finite, have w <= 0 (e.g. from crossed
        quotes) or a non-positive weight are dropped too; a slice with fewer than 5 usable
        points gets status BAD_INPUT and NaN params, and never affects the other slices.
      initial: warm-start params [slices, 5]; default the quasi-explicit :func:`initial_guess`.
      no_arbitrage: add penalty rows (:func:`arbitrage_penalties`, times ``penalty_weight``)
        keeping Durrleman's g >= 0 (at 25 points and at g's polished minimum over the quoted
        range extended by half its width on each side), Lee's wing bound and a non-negative
        minimum variance. The penalised problem is stiffer: it needs ~100+ iterations.
      config: the engine's :class:`LMConfig`; default ``FIT_CONFIG`` (60 iterations), or
        ``NO_ARBITRAGE_CONFIG`` (300) with ``no_arbitrage``.
      chunk_size: slices are fitted in chunks of this many (:func:`jaxvol.calibrate.map_chunks`:
        cache-sized working sets, and each chunk stops when its own slowest slice is done);
        None fits all at once. Results do not depend on it.
    """
    if config is None:
        config = NO_ARBITRAGE_CONFIG if no_arbitrage else FIT_CONFIG
    k, w, weights, mask = _validate(k, total_variance, weights, mask)
    if initial is not None:
        initial = jnp.asarray(initial, k.dtype)
    return _fit(k, w, weights, mask, initial, jnp.asarray(penalty_weight, k.dtype),
                no_arbitrage=bool(no_arbitrage), config=config, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("no_arbitrage", "config", "chunk_size"))
def _fit(k, w, weights, mask, initial, penalty_weight, *, no_arbitrage, config, chunk_size):
    body = lambda *a: _fit_chunk(*a, penalty_weight, no_arbitrage, config)  # noqa: E731
    if initial is None:
        return map_chunks(lambda *a: body(*a, None), chunk_size, k, w, weights, mask)
    return map_chunks(body, chunk_size, k, w, weights, mask, initial)


def _fit_chunk(k, w, weights, mask, initial, penalty_weight, no_arbitrage, config):
    k, w, weights, usable = _clean(k, w, weights, mask)
    start = _guess(k, w, weights, usable) if initial is None else initial
    enough = jnp.sum(usable.astype(jnp.int32), axis=1) >= len(PARAMS)
    start = jnp.where(enough[:, None], start, jnp.nan)  # BAD_INPUT for thin slices
    if no_arbitrage:
        rows = _PENALTY_POINTS + 3
        extra = jnp.broadcast_to(penalty_weight, (k.shape[0], rows))
        result = least_squares(
            penalised_residuals, start, k, w, _penalty_grid(k, usable),
            weights=jnp.concatenate([weights, extra], axis=1),
            mask=jnp.concatenate([usable, jnp.ones(extra.shape, bool)], axis=1),
            lower=LOWER, upper=UPPER, config=config)
    else:
        result = least_squares(slice_residuals, start, k, w, weights=weights, mask=usable,
                               lower=LOWER, upper=UPPER, config=config)
    residuals = result.residuals[:, :k.shape[1]]
    count = jnp.sum(usable.astype(residuals.dtype), axis=1)
    rmse = jnp.sqrt(jnp.sum(residuals * residuals, axis=1) / count)
    return SVIFit(result.params, result.status, rmse, result.loss, result.iterations, residuals)
