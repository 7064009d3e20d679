"""Heston (1993) European options by Fourier inversion on a per-option saddle-point contour.

Model: dS/S = (rate - div) dt + sqrt(v) dZ1, dv = kappa (theta - v) dt + sigma sqrt(v) dZ2,
d<Z1, Z2> = rho dt. With forward F = spot e^{(rate - div) T}, X = log(S_T / F) and
k = log(K / F), the moment generating function M(w) = E[e^{w X}] is evaluated in the
"little Heston trap" form of Albrecher, Mayer, Schoutens & Tistaert (2007) (the root d with
non-negative real part, g = (xi - d)/(xi + d), so e^{-dT} never grows and the logarithm stays on
its principal branch), rewritten without the 1/sigma^2 cancellation: xi - d = sigma^2 (w^2 - w)
/ (xi + d).

Pricing (Lewis 2001 / Lee 2004 generalised Fourier transform): for a real contour abscissa
``a`` outside [0, 1] and inside the moment strip,

    price / (D F) = (1/pi) int_0^inf Re[ exp((1 - w) k) M(w) / (w^2 - w) (1 + i tau) ] du,
    w = a + (tau - i) u,

is the out-of-the-money *call* when a > 1 and the out-of-the-money *put* when a < 0: no parity
subtraction, so deep wings keep their relative accuracy.

Contour (per smile, fixed work): ``a`` is the saddle point of
psi(a) = (1 - a) k + log M(a) - log(a^2 - a) (Lord & Kahl 2007), found by SADDLE_STEPS
safeguarded Newton steps inside STRIP_FRACTION of the moment strip (Andersen & Piterbarg 2007
explosion times, one bisection of BISECTION_STEPS steps for both ends); the integrand is then
a non-oscillating bump at u = 0. The geometry needs log M and its derivatives only at real
arguments inside the strip, where they are evaluated in real arithmetic (``_log_mgf_real``),
and each smile runs one saddle search (for its strikes, or for the four end strikes below).
The ray is tilted by TILT = pi/12 (tau = +-tan(pi/12), Andersen & Lake 2018, as QuantLib's
AngledContour) towards the side where the large-u phase k + rho V / sigma turns into decay,
V = v0 + kappa theta T. A smile with more than ``contours`` strikes shares ``contours`` contours
(half per side), evenly spaced in ``a`` between the saddles of its innermost and outermost
strikes; each strike uses the contour whose own saddle strike is nearest to it.

Quadrature (fixed shape, vmaps): the double-exponential map u = lam exp(t - e^{-t})
(Ooura & Mori) on N = NODES equally spaced t in [T_LO, t_hi] with trapezoidal weights.
lam = 1/sqrt(psi''(a)) is the width of the central bump; t_hi puts the last node at the
truncation point u_max = max(sqrt(2 TAIL_LOG / (log M)''(a)), TAIL_LOG / C), C the large-u decay
rate sqrt(1 - rho^2) V / sigma + tan(pi/12) |k + rho V / sigma| (tilted), so the integrand has
decayed by e^{-40} in both its Gaussian and its exponential regime.

Node count rule: NODES = 96 is the smallest multiple of 16 at which every row of the reference
table (tests/data/heston_prices.csv) and the 50 mpmath prices across the box kappa 0.1..10,
theta 0.005..0.5, sigma 0.05..2, rho -0.99..0.5, T one day..10 years agree to 1.1e-10 relative
(64 nodes: 3.6e-9 on the sigma = 1.8, K = 10 put; 48 nodes: 4e-7). Calibration uses 64 nodes and
4 contours (:mod:`jaxvol.heston.calibrate`), where quote noise dominates. The rule is one node
count for every expiry (the batch keeps one shape); the truncation point and bump width above
adapt the nodes' placement to each expiry and parameter set.

Work per smile (fixed): the characteristic function at ``contours`` x ``nodes`` points, plus
``nodes`` sin/cos/exp per strike for the strike sums Re[c_j e^{(i - tilt) u_j k}] (the strike
enters only there). Both are written in real arithmetic on (re, im) pairs with polynomial
sin/cos/atan2 (:mod:`jaxvol.heston._cmath`) that XLA vectorises, and the sum runs as a loop over
the nodes, each step evaluating one node of every contour and adding its term to every strike,
so that no [strikes, nodes] array is ever stored (on CPU such arrays made the sum memory-bound).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._edge import edge
from jaxvol.heston import _cmath as cm

__all__ = ["CONTOURS", "fair_variance", "integrated_variance", "log_mgf", "log_mgf_parts", "NODES",
           "price", "smile_otm"]

NODES = 96  #: quadrature nodes per contour (node count rule: module docstring)
TAIL_LOG = 40.0  #: truncation: integrand decayed by e^-40 ~ 4e-18 relative
T_LO = -3.6  #: lower end of t: u = lam * exp(-3.6 - e^3.6) ~ 1e-16 lam
STRIP_FRACTION = 0.9  #: contour kept within this fraction of the moment-explosion boundary
BISECTION_STEPS = 48  #: bisection steps for the critical moments
SADDLE_STEPS = 24  #: safeguarded Newton steps for the saddle-point contour
TILT = math.pi / 12  #: angle of the tilted contour (QuantLib's AngledContour uses pi/12)
CONTOURS = 8  #: contours per smile shared by its strikes (contours // 2 per side)
UNROLL = 1  #: nodes per step of the quadrature loop (4 is ~20% faster, compiles 2x slower)


def log_mgf_parts(wr, wi, expiry, v0, kappa, theta, sigma, rho):
    """(Re, Im) of log E[exp(w X)] at w = wr + i wi, in real arithmetic (little Heston trap form).

    Written on (real, imaginary) pairs with the vectorisable kernels of
    :mod:`jaxvol.heston._cmath` (XLA's CPU complex arithmetic is scalar, ~10x slower here);
    1 - e^{-dT} is formed without cancellation (expm1)."""
    s2 = sigma * sigma
    xi = (kappa - sigma * rho * wr, -sigma * rho * wi)
    ww = (wr * wr - wi * wi - wr, (2.0 * wr - 1.0) * wi)
    d = cm.sqrt(cm.sub(cm.mul(xi, xi), cm.scale(ww, s2)))  # principal root: Re d >= 0
    xi_plus_d = cm.add(xi, d)
    xi_minus_d = cm.div(cm.scale(ww, s2), xi_plus_d)  # = xi - d, without cancellation
    g = cm.div(xi_minus_d, xi_plus_d)
    e, one_minus_e = cm.exp_and_one_minus(cm.scale(d, -expiry))
    ge = cm.mul(g, e)
    b = cm.div(cm.mul(ww, one_minus_e), cm.mul(xi_plus_d, (1.0 - ge[0], -ge[1])))
    # log((1 - g e)/(1 - g)) = log1p(g (1 - e)/(1 - g))
    log_ratio = cm.log1p(cm.div(cm.mul(g, one_minus_e), (1.0 - g[0], -g[1])))
    factor = kappa * theta / s2
    return (factor * (xi_minus_d[0] * expiry - 2.0 * log_ratio[0]) + b[0] * v0,
            factor * (xi_minus_d[1] * expiry - 2.0 * log_ratio[1]) + b[1] * v0)


def log_mgf(w, expiry, v0, kappa, theta, sigma, rho):
    """log E[exp(w X)], X = log(S_T / F), complex w (little Heston trap form)."""
    w = jnp.asarray(w)
    real = jnp.real(w)
    expiry, v0, kappa, theta, sigma, rho = (
        jnp.asarray(x).astype(real.dtype) for x in (expiry, v0, kappa, theta, sigma, rho))
    re, im = log_mgf_parts(real, jnp.imag(w), expiry, v0, kappa, theta, sigma, rho)
    return jax.lax.complex(re, im)


def _explosion_time(w, kappa, sigma, rho):
    """Andersen & Piterbarg (2007): time at which E[S_t^w] becomes infinite, real w not in [0,1]."""
    beta = kappa - rho * sigma * w
    delta = beta * beta - sigma * sigma * (w * w - w)
    root = jnp.sqrt(jnp.abs(delta))
    safe_root = jnp.where(root > 0, root, 1.0)
    complex_case = 2.0 / safe_root * (0.5 * math.pi + jnp.arctan(beta / safe_root))
    real_ratio = jnp.where(beta < 0, (beta - root) / jnp.minimum(beta + root, -1e-300), 2.0)
    real_case = jnp.where(beta < 0, jnp.log(real_ratio) / safe_root, jnp.inf)
    return jnp.where(delta < 0, complex_case, real_case)


def _critical_moments(expiry, kappa, sigma, rho):
    """(largest w < 0, smallest w > 1) whose moment explodes before ``expiry``.

    One bisection for both ends, on y with w = -e^y (lower) and w = 1 + e^y (upper), y in
    [-12, 14]: BISECTION_STEPS fixed steps per lane.
    """
    upper = jnp.asarray([False, True])

    def moment(y):
        return jnp.where(upper, 1.0 + jnp.exp(y), -jnp.exp(y))

    def step(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        finite = _explosion_time(moment(mid), kappa, sigma, rho) > expiry
        return jnp.where(finite, mid, lo), jnp.where(finite, hi, mid)

    lo = jnp.full(upper.shape, -12.0, jnp.result_type(expiry))
    hi = jnp.full(upper.shape, 14.0, jnp.result_type(expiry))
    lo, _ = jax.lax.fori_loop(0, BISECTION_STEPS, step, (lo, hi))
    w = moment(lo)
    return w[0], w[1]


def integrated_variance(expiry, v0, kappa, theta):
    """E[int_0^T v_t dt] = theta T + (v0 - theta)(1 - e^{-kappa T}) / kappa."""
    return theta * expiry + (v0 - theta) * -jnp.expm1(-kappa * expiry) / kappa


def fair_variance(expiry, v0, kappa, theta):
    """Annualised fair (variance-swap) variance theta + (v0 - theta)(1 - e^{-kappa T})/(kappa T)."""
    x = kappa * expiry
    small = jnp.abs(x) < 1e-8
    safe_x = jnp.where(small, 1.0, x)
    ratio = jnp.where(small, 1.0 - 0.5 * x, -jnp.expm1(-safe_x) / safe_x)
    return theta + (v0 - theta) * ratio


def _strip(expiry, kappa, sigma, rho):
    """Contour range (lo < 0, hi > 1): STRIP_FRACTION of the way to the critical moments."""
    w_lo, w_hi = _critical_moments(expiry, kappa, sigma, rho)
    return STRIP_FRACTION * w_lo, 1.0 + STRIP_FRACTION * (w_hi - 1.0)


def _nodes(n):
    frac = np.arange(n, dtype=np.float64) / (n - 1)
    trap = np.ones(n)
    trap[0] = trap[-1] = 0.5
    return frac, trap


# Taylor coefficients in z = (dT/2)^2 of (C - 1) / z = sum z^(n-1) / (2n)! and of
# S / (T/2) = sum z^n / (2n + 1)!, lowest power first
_SERIES_C = tuple(1.0 / math.factorial(2 * n) for n in range(1, 7))
_SERIES_S = tuple(1.0 / math.factorial(2 * n + 1) for n in range(0, 7))


def _log_mgf_real(w, expiry, v0, kappa, theta, sigma, rho):
    """log E[exp(w X)] at real w inside the moment strip, in real arithmetic.

    The contour geometry (saddle points, bump widths) needs log M only at real arguments, where
    it is real: with xi = kappa - sigma rho w, D = xi^2 - sigma^2 (w^2 - w), C = cosh(d T/2),
    S = sinh(d T/2) / d (both even in d = sqrt(D), so real for either sign of D) and L = C +
    xi S > 0 (L reaches 0 where the moment explodes),

        log M = kappa theta / sigma^2 (xi T - 2 log L) + v0 (w^2 - w) S / L,

    the real part of the complex formula of :func:`log_mgf_parts` at w + 0i. Three branches:
    D > 0 in the little-trap form of :func:`log_mgf_parts` (e^{-dT}: no overflow for large
    dT); D < 0 with d = i q, C - 1 = -2 sin^2(qT/4), S = sin(qT/2) / q; and |z| < 0.1,
    z = (dT/2)^2 = D T^2 / 4 (either sign, D = 0 included), from the Taylor series of C and S
    in z (to z^6, truncation < 2e-18 relative), where the closed forms would divide by a
    vanishing d and their derivatives in w lose ~eps / z^2 to cancellation."""
    s2 = sigma * sigma
    xi = kappa - sigma * rho * w
    ww = w * w - w
    disc = xi * xi - s2 * ww
    z = 0.25 * disc * expiry * expiry
    small = jnp.abs(z) < 0.1
    hyperbolic = (disc > 0) & ~small
    factor = kappa * theta / s2
    # D > 0: the little-trap form (as log_mgf_parts)
    d = jnp.sqrt(jnp.where(hyperbolic, disc, 1.0))
    em1 = jnp.expm1(-d * expiry)  # e^{-dT} - 1
    xi_plus_d = xi + d
    xi_minus_d = s2 * ww / xi_plus_d  # = xi - d, without cancellation
    log_ratio = jnp.log1p(-em1 * xi_minus_d / (2.0 * d))
    trap = (factor * (xi_minus_d * expiry - 2.0 * log_ratio)
            + v0 * ww * -em1 / (xi_plus_d - xi_minus_d * (1.0 + em1)))
    # D < 0 (d = i q) or |z| small: C - 1 and S, then log L = log1p(C - 1 + xi S)
    q = jnp.sqrt(jnp.where(hyperbolic | small, 1.0, -disc))
    sin, cos = cm.sincos(0.25 * q * expiry)
    series_c = z * cm._horner(z, _SERIES_C)
    series_s = 0.5 * expiry * cm._horner(z, _SERIES_S)
    c_minus_1 = jnp.where(small, series_c, -2.0 * sin * sin)
    s = jnp.where(small, series_s, 2.0 * sin * cos / q)
    l_minus_1 = c_minus_1 + xi * s
    trig = factor * (xi * expiry - 2.0 * jnp.log1p(l_minus_1)) + v0 * ww * s / (1.0 + l_minus_1)
    return jnp.where(hyperbolic, trap, trig)


def _log_m_derivatives(a, expiry, v0, kappa, theta, sigma, rho):
    """First and second derivatives of log M at real a (nested forward mode of the real
    log-MGF, :func:`_log_mgf_real`)."""
    def log_m(x):
        return _log_mgf_real(x, expiry, v0, kappa, theta, sigma, rho)

    def slope(x):
        return jax.jvp(log_m, (x,), (jnp.ones_like(x),))[1]

    return jax.jvp(slope, (a,), (jnp.ones_like(a),))


def _pole_terms(a):
    """First and second derivatives of -log(a^2 - a)."""
    return -(2.0 * a - 1.0) / (a * a - a), 1.0 / (a * a) + 1.0 / ((a - 1.0) * (a - 1.0))


def _saddle(log_moneyness, variance, strip, params):
    """Contour abscissa minimising psi(a) = (1 - a) k + log M(a) - log(a^2 - a) over the
    out-of-the-money side ((1, hi) for k >= 0, (lo, 0) for k < 0): the integrand is then a
    non-oscillating bump at u = 0 (Lord & Kahl 2007).

    psi is convex in a; the search runs in y = log|a - pole| (a = 1 + e^y for calls, -e^y for
    puts), where the pole at 0 or 1 no longer dominates the curvature: SADDLE_STEPS Newton steps
    on dpsi/dy from the Gaussian guess 1/2 + k/s^2, each falling back to bisection of the bracket
    when it would leave it (a step onto a bracket end is kept: that end is the current y once
    the iteration has converged). A saddle beyond the strip is clipped to its edge."""
    lo, hi = strip
    call = log_moneyness >= 0
    pole = jnp.where(call, 1.0, 0.0)
    sign = jnp.where(call, 1.0, -1.0)
    y_lower = jnp.full_like(log_moneyness, -12.0)
    y_upper = jnp.log(jnp.where(call, hi - 1.0, -lo))
    guess = jnp.log(jnp.maximum(sign * (0.5 + log_moneyness / variance - pole), 1e-3))
    y = jnp.clip(guess, y_lower + 1e-3, y_upper - 1e-3)

    def step(_, state):
        y, lower, upper = state
        a = pole + sign * jnp.exp(y)
        first, second = _log_m_derivatives(a, *params)
        pole1, pole2 = _pole_terms(a)
        da = sign * jnp.exp(y)
        slope_a = first - log_moneyness + pole1
        slope, curvature = slope_a * da, (second + pole2) * da * da + slope_a * da
        lower, upper = jnp.where(slope < 0, y, lower), jnp.where(slope > 0, y, upper)
        newton = y - slope / jnp.where(curvature > 0, curvature, jnp.inf)
        # a bracket end may be the current y itself: a converged step (newton == y) whose slope
        # rounded to the wrong sign must stay there, not fall back to bisecting the bracket
        inside = (newton >= lower) & (newton <= upper) & (curvature > 0)
        return jnp.where(inside, newton, 0.5 * (lower + upper)), lower, upper

    y, _, _ = jax.lax.fori_loop(0, SADDLE_STEPS, step, (y, y_lower, y_upper))
    return pole + sign * jnp.exp(y)


def _tail_rate(expiry, v0, kappa, theta, sigma, rho):
    """Large-u decay rate of |M(a - i u)|: sqrt(1 - rho^2)(v0 + kappa theta T)/sigma."""
    return jnp.sqrt(1.0 - rho * rho) * (v0 + kappa * theta * expiry) / sigma


def _tilt(k_low, k_high, expiry, v0, kappa, theta, sigma, rho):
    """Slope tau of the contour w = a + (tau - i) u and the large-u decay rate along it.

    Along the tilted ray the integrand decays at rate C + tau (k + rho V / sigma), V = v0 +
    kappa theta T (Andersen & Lake 2018; QuantLib's AngledContour uses the same angle, pi/12).
    The contour is tilted by TILT towards the side that adds decay for every strike on it
    (k in [k_low, k_high]); where k + rho V / sigma changes sign among them it stays vertical."""
    drift = rho * (v0 + kappa * theta * expiry) / sigma
    low, high = k_low + drift, k_high + drift
    same_sign = low * high > 0
    tilt = jnp.where(same_sign, math.tan(TILT) * jnp.sign(high), 0.0)
    gain = jnp.where(same_sign, math.tan(TILT) * jnp.minimum(jnp.abs(low), jnp.abs(high)), 0.0)
    return tilt, _tail_rate(expiry, v0, kappa, theta, sigma, rho) + gain


def _contour_scale(a, gaussian, decay):
    """Width lam and upper end t_hi of the double-exponential nodes of the contour through a,
    given gaussian = (log M)''(a) (module docstring)."""
    poles = _pole_terms(a)[1]
    width = 1.0 / jnp.sqrt(gaussian + poles)
    u_max = jnp.maximum(jnp.sqrt(2.0 * TAIL_LOG / gaussian), TAIL_LOG / decay)
    return width, jnp.maximum(jnp.log(u_max / width), 1.0)


def _node(j, nodes, width, t_hi):
    """Node u_j = lam exp(t_j - e^{-t_j}) and its trapezoidal weight du_j, t_j = T_LO + j h,
    h = (t_hi - T_LO) / (nodes - 1), j = 0 .. nodes - 1 (a float)."""
    step = (t_hi - T_LO) / (nodes - 1)
    t = T_LO + step * j
    inner = jnp.exp(-t)
    u = width * jnp.exp(t - inner)
    trap = jnp.where((j == 0) | (j == nodes - 1), 0.5, 1.0)
    return u, u * (1.0 + inner) * step * trap


def _contour_coefficients(a, tilt, u, du, expiry, v0, kappa, theta, sigma, rho):
    """Coefficients c[N] (as a (real, imaginary) pair) on w = a + (tilt - i) u such that the OTM
    value / (D F) of log-moneyness k is exp((1 - a) k) / pi * sum_j Re[c_j exp((i - tilt) u_j k)]."""
    w = (a + tilt * u, -u)
    log_m = log_mgf_parts(*w, expiry, v0, kappa, theta, sigma, rho)
    ww = (w[0] * w[0] - w[1] * w[1] - w[0], (2.0 * w[0] - 1.0) * w[1])
    return cm.mul(cm.div(cm.exp(log_m), ww), (du, tilt * du))


def _abscissae(log_moneyness, variance, strip, params, contours):
    """Contours of a smile, each strike's contour, and (log M)''(a) on each contour.

    With at most ``contours`` strikes every strike gets its own saddle. Otherwise each side gets
    contours // 2 abscissae evenly spaced between the saddles of its innermost and outermost
    strike (one saddle search for the four ends), and a strike uses the contour whose own
    saddle strike k_m = (log M)'(a_m) + (pole term)'(a_m) is nearest to its k. Returns
    (abscissae[M], index[nK], second[M]); the derivatives of log M at the abscissae are
    computed once, for the strike assignment and the contour widths."""
    n = log_moneyness.shape[0]
    if n <= contours:
        abscissae = _saddle(log_moneyness, variance, strip, params)
        return abscissae, jnp.arange(n), _log_m_derivatives(abscissae, *params)[1]
    per_side = contours // 2
    call = log_moneyness >= 0
    big = jnp.finfo(log_moneyness.dtype).max
    grid = jnp.linspace(0.0, 1.0, per_side, dtype=log_moneyness.dtype)

    def ends(mask, empty):
        k_in = jnp.where(mask, jnp.abs(log_moneyness), big).min()
        k_out = jnp.where(mask, jnp.abs(log_moneyness), -big).max()
        sign = 1.0 if empty > 0 else -1.0
        return jnp.where(k_in <= k_out, sign * jnp.stack([k_in, k_out]), empty)

    a_ends = _saddle(jnp.concatenate([ends(~call, -1e-3), ends(call, 1e-3)]), variance, strip,
                     params)
    abscissae = jnp.concatenate([a_ends[0] + (a_ends[1] - a_ends[0]) * grid,
                                 a_ends[2] + (a_ends[3] - a_ends[2]) * grid])
    first, second = _log_m_derivatives(abscissae, *params)
    own_k = first + _pole_terms(abscissae)[0]
    distance = jnp.abs(log_moneyness[:, None] - own_k[None, :])
    wrong_side = call[:, None] != (jnp.arange(contours) >= per_side)[None, :]
    return abscissae, jnp.argmin(jnp.where(wrong_side, big, distance), axis=1), second


def _strike_range(log_moneyness, index, size):
    """Per contour, the smallest and largest assigned log-moneyness (0, 0 when none)."""
    low = jnp.full(size, jnp.inf, log_moneyness.dtype).at[index].min(log_moneyness)
    high = jnp.full(size, -jnp.inf, log_moneyness.dtype).at[index].max(log_moneyness)
    used = jnp.isfinite(low)
    return jnp.where(used, low, 0.0), jnp.where(used, high, 0.0)


def smile_otm(log_moneyness, expiry, v0, kappa, theta, sigma, rho, *, nodes=NODES,
              contours=CONTOURS):
    """OTM values / (D F) for the strikes log_moneyness[nK] of one (expiry, parameter set).

    Puts for k < 0, calls for k >= 0. The characteristic function is evaluated on at most
    ``contours`` contours of ``nodes`` points each and shared by all strikes of the smile. The
    contour geometry (abscissae, tilts, nodes) is chosen under ``stop_gradient``: the exact
    integral does not depend on it, so derivatives flow only through M(w) and the strike sums.
    """
    params = (expiry, v0, kappa, theta, sigma, rho)
    fixed = jax.lax.stop_gradient(params)
    k_fixed = jax.lax.stop_gradient(log_moneyness)
    variance = integrated_variance(*fixed[:4])
    strip = _strip(fixed[0], fixed[2], fixed[4], fixed[5])
    abscissae, index, second = _abscissae(k_fixed, variance, strip, fixed, contours)
    k_low, k_high = _strike_range(k_fixed, index, abscissae.shape[0])
    tilt, decay = _tilt(k_low, k_high, *fixed)
    width, t_hi = _contour_scale(abscissae, second, decay)
    tilt_k = tilt[index]
    damping = (1.0 - abscissae[index]) * log_moneyness
    dtype = log_moneyness.dtype

    def add_node(j, total):
        # one node of every contour: M(w) on the contours, then Re[c e^{(i - tilt) u k}] for
        # every strike from its own contour. Looping over nodes keeps each step's arrays small
        # (cache-resident), where one [strikes, nodes] expression is memory-bound on CPU.
        u, du = _node(j.astype(dtype), nodes, width, t_hi)
        coeff_re, coeff_im = _contour_coefficients(abscissae, tilt, u, du, *params)
        x = u[index] * log_moneyness
        sin, cos = cm.sincos(x)
        return total + jnp.exp(damping - tilt_k * x) * (coeff_re[index] * cos
                                                         - coeff_im[index] * sin)

    total = jax.lax.fori_loop(0, nodes, add_node, jnp.zeros_like(log_moneyness), unroll=UNROLL)
    return total / math.pi


_SMILE_NAMES = ("expiry", "spot", "rate", "div", "v0", "kappa", "theta", "sigma", "rho")
_SAFE = dict(expiry=1.0, spot=1.0, rate=0.0, div=0.0, v0=0.04, kappa=1.0, theta=0.04,
             sigma=0.5, rho=0.0)


def _smile_valid(expiry, spot, rate, div, v0, kappa, theta, sigma, rho):
    """Parameter sets the model can price: finite, T, S, kappa, sigma > 0, v0, theta >= 0 (not
    both 0), |rho| < 1."""
    finite = jnp.isfinite(jnp.stack([expiry, spot, rate, div, v0, kappa, theta, sigma, rho]))
    positive = (expiry > 0) & (spot > 0) & (kappa > 0) & (sigma > 0)
    return jnp.all(finite) & positive & (v0 >= 0) & (theta >= 0) & (v0 + theta > 0) & (
        jnp.abs(rho) < 1)


def _smile_values(strike, is_call, smile, nodes, contours):
    """Prices of one smile: strike[nK], is_call[nK] and a dict of scalar smile parameters.

    Bad lanes become NaN through the "double where": their inputs are replaced by harmless
    values before any arithmetic, so neither values nor gradients of other lanes see them."""
    smile_ok = _smile_valid(**smile)
    smile = {n: jnp.where(smile_ok, x, _SAFE[n]) for n, x in smile.items()}
    strike_ok = jnp.isfinite(strike) & (strike > 0)
    forward = smile["spot"] * jnp.exp((smile["rate"] - smile["div"]) * smile["expiry"])
    discount = jnp.exp(-smile["rate"] * smile["expiry"])
    safe_strike = jnp.where(strike_ok, strike, forward)
    log_moneyness = jnp.log(safe_strike / forward)
    otm = smile_otm(log_moneyness, smile["expiry"], smile["v0"], smile["kappa"],
                    smile["theta"], smile["sigma"], smile["rho"], nodes=nodes,
                    contours=contours) * (discount * forward)
    parity = discount * (forward - safe_strike)  # call - put
    call_side = log_moneyness >= 0
    value = jnp.where(is_call, jnp.where(call_side, otm, otm + parity),
                      jnp.where(call_side, otm - parity, otm))
    return jnp.where(strike_ok & smile_ok, value, jnp.nan)


def _check_static(nodes, contours):
    if not isinstance(nodes, (int, np.integer)) or nodes < 8:
        raise ValueError(f"nodes must be an integer >= 8, got {nodes!r}")
    if not isinstance(contours, (int, np.integer)) or contours < 2 or contours % 2:
        raise ValueError(f"contours must be an even integer >= 2, got {contours!r}")
    return int(nodes), int(contours)


def _float_dtype(values):
    """The widest floating dtype among array inputs (Python scalars and integers don't count)."""
    floating = [x for x in values if not isinstance(x, (bool, int))
                and jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.dtype(jnp.result_type(*floating)) if floating else jnp.dtype(float)


@edge(static=("nodes", "contours"))
def price(strike, expiry, *, spot, rate, div, v0, kappa, theta, sigma, rho, is_call,
          nodes=NODES, contours=CONTOURS):
    """European option prices under Heston (1993).

    All arguments broadcast together (numpy rules). ``expiry`` in years; ``rate`` and ``div``
    continuously compounded; ``v0`` and ``theta`` variances; ``sigma`` the vol of variance;
    ``is_call`` bool. When the last axis of the broadcast shape is carried only by ``strike`` /
    ``is_call`` (strike [..., nK] against parameters [..., 1] or scalars) each smile evaluates the
    characteristic function once, on at most ``contours`` contours, and shares it across its
    strikes (the fast layout: a surface as strike [nK], expiry [nT, 1], parameters
    [nP, 1, 1]); otherwise every option gets its own contour (a flattened surface, strike,
    expiry and parameters all [n]: ``docs/benchmarks.md`` compares both layouts). Compiled at
    the edge: one program per shape and (``nodes``, ``contours``). Out-of-the-money options are
    integrated
    directly (puts for K < F, calls for K >= F); the other side follows by put-call parity,
    which adds the intrinsic value without cancellation. Invalid inputs (non-finite, K, T, S,
    kappa, sigma <= 0, v0 or theta < 0, |rho| >= 1) give NaN in their own lanes only. Returns
    the floating dtype of the inputs (float32 inputs are computed in float32: about 1e-4
    relative at best).
    """
    nodes, contours = _check_static(nodes, contours)
    smile = dict(expiry=expiry, spot=spot, rate=rate, div=div, v0=v0, kappa=kappa, theta=theta,
                 sigma=sigma, rho=rho)
    dtype = _float_dtype([strike, *smile.values()])
    strike = jnp.asarray(strike).astype(dtype)
    smile = {n: jnp.asarray(x).astype(dtype) for n, x in smile.items()}
    call = jnp.asarray(is_call).astype(bool)
    smile_shape = np.broadcast_shapes(*(x.shape for x in smile.values()))
    full = np.broadcast_shapes(smile_shape, strike.shape, call.shape)
    shared = len(full) > 0 and full[-1] > 1 and tuple(smile_shape[-1:]) in ((), (1,))
    lead, n_strikes = (full[:-1], full[-1]) if shared else (full, 1)
    lanes = math.prod(lead)
    option_shape = lead + (n_strikes,)
    strike = jnp.broadcast_to(strike, full).reshape(lanes, n_strikes)
    call = jnp.broadcast_to(call, full).reshape(lanes, n_strikes)
    smile_target = lead + (1,) if shared else full
    smile = {n: jnp.broadcast_to(x, smile_target).reshape(lanes) for n, x in smile.items()}
    kernel = jax.vmap(lambda k, c, p: _smile_values(k, c, p, nodes, contours))
    return kernel(strike, call, smile).reshape(option_shape).reshape(full)
