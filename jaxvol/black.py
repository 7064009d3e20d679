"""Black-76, Black–Scholes–Merton and Bachelier prices and closed-form greeks.

Everything rests on the *normalised* Black function (Jäckel, "Let's Be Rational", 2015)

    b(x, s, theta) = theta * [exp(x/2) Phi(theta*(x/s + s/2)) - exp(-x/2) Phi(theta*(x/s - s/2))]

with ``x = ln(F/K)`` and ``s = vol*sqrt(T)``, so that ``price = D*sqrt(F*K)*b``. Out-of-the-money
values are computed directly (never through put–call parity), in four regions of
``h = x/s``, ``t = s/2``:

1. ``h + t < -4 sqrt2`` (both erfcx arguments above 4): the difference of Cody's
   large-argument forms of ``erfcx`` written through divided differences of his polynomials
   (:func:`_wing_bracket`), cancellation-free for any ``t``, cheap enough for every lane;
2. ``t < 0.21``, or ``t < 0.8`` and ``h > -1.5``: the Taylor expansion of ``Y(h+t) - Y(h-t)``
   in ``t`` (odd powers, all terms positive) to order ``t**13`` (``t**33`` on the wider part,
   where the erfcx difference of region 4 loses up to 16 eps) from the recurrence
   ``Y^(n+1) = h Y^(n) + n Y^(n-1)`` seeded with a cancellation-free ``1 + h Y(h)``;
3. ``h + t > 0.85``: the two normal CDFs directly;
4. otherwise: ``exp(-(h**2+t**2)/2) * [erfcx(-(h+t)/sqrt2) - erfcx(-(h-t)/sqrt2)] / 2``.

The common factor ``exp(-(h**2 + t**2)/2)`` is evaluated from ``h**2 + t**2`` in double-double
arithmetic, which keeps relative accuracy near 1e-15 down to prices of 1e-300.

Units: ``expiry`` in years, ``vol`` per sqrt(year) as a decimal, rates continuously compounded.
Greeks: vega per 1.0 of vol (not per vol point), theta per year (the value change as calendar
time passes, ``-dV/dT``), rho per 1.0 of rate.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol._dtypes import as_bool, as_float, float_dtype, two_product
from jaxvol._edge import blockwise, edge
from jaxvol.special import (_P, _Q, SQRT_2, SQRT_2PI, SQRT_2PI_INV, SQRT_HALF, SQRT_PI_INV,
                            _erfcx_nonneg, erfcx, log_positive,
                            mills_complement, mills_complement_given_ratio, norm_cdf, norm_pdf,
                            opaque, split_exp)

__all__ = [
    "normalised_black", "normalised_vega", "black_price", "bsm_price", "bachelier_price",
    "greeks", "bsm_greeks", "Greeks", "d1", "d2", "norm_cdf", "norm_pdf", "erfcx",
]

_SMALL_T = 0.21  # Jäckel's tau = 2 * eps**(1/16)
_CDF_REGION = 0.85


# region 2 (t < 0.21) also covers t < 0.8 where h > -1.5 in float64: (t, h, series order)
_WIDE_T = {64: (0.8, -1.5, 33), 32: (0.0, 0.0, 7)}


def _bits(dtype) -> int:
    return 64 if jnp.finfo(dtype).bits == 64 else 32


# --------------------------------------------------------------------------------------------
# the exponential factor exp(-(h^2 + t^2)/2) with h = x/s, t = s/2, in double-double
# --------------------------------------------------------------------------------------------
def _gaussian_factor(x, s):
    """exp(-(h^2+t^2)/2) with h = x/s exact to double-double and t = s/2."""
    h = x / s
    p, e = two_product(h, s)
    h_lo = ((x - p) - e) / s  # x = h*s + h_lo*s to about 2 ulp**2
    hh, hh_err = two_product(h, h)
    t = 0.5 * s
    tt, tt_err = two_product(t, t)
    hi = hh + tt
    lo = ((hh - hi) + tt) + hh_err + tt_err + 2.0 * h * h_lo
    return opaque(jnp.exp(-0.5 * hi)) * jnp.exp(-0.5 * lo)  # not rewritten to exp(hi + lo)


# --------------------------------------------------------------------------------------------
# the four regions of the out-of-the-money normalised call, x <= 0
# --------------------------------------------------------------------------------------------
def _cody_large_parts(za, zc, coefs):
    """A polynomial (coefficients from the highest degree down) at ``zc`` and ``za`` and its
    divided difference ``(p(za) - p(zc)) / (za - zc)``, by one Horner pass (no subtraction of
    p values: the divided difference has its own recurrence ``d <- d*za + p_partial(zc)``)."""
    pa = jnp.zeros_like(za) + coefs[0]
    pc = jnp.zeros_like(zc) + coefs[0]
    dd = jnp.zeros_like(zc)
    for c in coefs[1:]:
        dd = dd * za + pc
        pc = pc * zc + c
        pa = pa * za + c
    return pa, pc, dd


# Cody's large-argument form erfcx(y) = (1/sqrt(pi) - z N(z)/M(z)) / y with z = 1/y**2
_CODY_N = (_P[5], _P[0], _P[1], _P[2], _P[3], _P[4])
_CODY_M = (1.0, _Q[0], _Q[1], _Q[2], _Q[3], _Q[4])
_WING_U = -4.0 * SQRT_2  # region 1: both erfcx arguments -(h+t)/sqrt2, (t-h)/sqrt2 above 4


def _wing_bracket(h, t):
    """Y(h+t) - Y(h-t) for h + t < -4 sqrt2 (region 1), any t, without cancellation.

    With a = -(h+t)/sqrt2 < c = (t-h)/sqrt2 (both > 4, Cody's large-argument form) the
    difference erfcx(a) - erfcx(c) is written through c - a = sqrt2 t, c + a = -sqrt2 h and the
    divided differences of Cody's numerator and denominator polynomials in z = 1/y**2:
    (c-a)/(ac) [1/sqrt(pi) - z_c rho_c - (c+a)/(a^2 c) (rho_a + z_c delta)] with rho = N/M and
    delta = (rho_a - rho_c)/(z_a - z_c). No two nearly equal values are subtracted (the last
    term is at most ~15% of the first), so it keeps ~3 ulp (measured against 40-digit mpmath
    for -60 < h + t < -5.66 and 1e-6 < t < 6) where the difference of two erfcx values would
    lose log10(|h|/t) digits. Cheap (two degree-5 Horner passes with divided differences): it
    runs on every lane.
    """
    a = -SQRT_HALF * (h + t)
    c = SQRT_HALF * (t - h)
    inv_ac = 1.0 / (a * c)  # the only division by a or c: za = (c/(ac))^2, zc = (a/(ac))^2
    inv_a = c * inv_ac
    inv_c = a * inv_ac
    za = inv_a * inv_a
    zc = inv_c * inv_c
    na, nc, ndd = _cody_large_parts(za, zc, _CODY_N)
    ma, mc, mdd = _cody_large_parts(za, zc, _CODY_M)
    inv_ma = 1.0 / ma
    inv_mc = 1.0 / mc
    delta = (ndd * mc - nc * mdd) * (inv_ma * inv_mc)
    inner = (SQRT_PI_INV - zc * nc * inv_mc) - (-SQRT_2 * h) * (inv_a * inv_ac) * (na * inv_ma + zc * delta)
    return (1.0 / SQRT_PI_INV) * t * inv_ac * inner  # sqrt(pi/2) (erfcx(a) - erfcx(c)), c - a = sqrt2 t


def _small_t_series(h, t, ratio, complement, order):
    """Y(h+t) - Y(h-t) = 2 sum_{m odd} Y^(m)(h) t^m / m! (region 2) to ``order``, given
    ``ratio = Y(h)`` and ``complement = Y'(h) = 1 + h Y(h)``.

    The recurrence runs on the Taylor coefficients ``z_m = Y^(m)(h)/m!`` themselves,
    ``z_(m+1) = (h z_m + z_(m-1)) / (m+1)`` (from ``Y^(m+1) = h Y^(m) + m Y^(m-1)``), two orders
    per step: ``z_(m+2) = a z_m + b z_(m-1)`` and ``z_(m+1) = c z_m + d z_(m-1)`` with
    ``a = (h^2 + m + 1)/((m+1)(m+2))``, ``b = h/((m+1)(m+2))``, ``c = h/(m+1)``, ``d = 1/(m+1)``
    computed off the dependency chain. The chain is then two operations deep per two orders
    (it was four), which is what bounds this part's speed on a CPU (the kernel's loop body is
    too long for out-of-order execution to overlap lanes); the odd terms are summed as they
    appear, with the powers of ``t**2`` computed beside the chain.
    """
    h2 = h * h
    t2 = t * t
    z_prev, z_curr = ratio, complement  # (z_0, z_1)
    total = complement
    power = jnp.ones_like(t)
    for m in range(1, order - 1, 2):  # (z_m, z_(m-1)) -> (z_(m+2), z_(m+1)), m odd
        r1, r12 = 1.0 / (m + 1), 1.0 / ((m + 1) * (m + 2))
        a = h2 * r12 + 1.0 / (m + 2)
        b = h * r12
        c = h * r1
        z_prev, z_curr = c * z_curr + r1 * z_prev, a * z_curr + b * z_prev
        power = power * t2
        total = total + z_curr * power
    return 2.0 * t * total


def _call_otm_parts(x, s):
    """Normalised OTM call ``b(x, s)`` for ``x <= 0 < s``, with ``b_max - b`` and the Gaussian factor.

    The four regions share their special-function work: two ``erfcx`` of non-negative
    arguments (``Y(h)`` or ``erfcx(|h+t|/sqrt2)``, and ``erfcx((t-h)/sqrt2)``) and two split
    exponentials (the ``erfcx`` reflection for ``0 < h+t <= 0.85``, or the two normal tails
    of region 3), each evaluated once per lane on its region's argument. Every region computes
    exactly the operations of its textbook form (``erfcx``, ``norm_cdf``, ``mills_complement``).
    ``b_max - b`` is the sum of the two tails in region 3 and ``exp(x/2) - b`` elsewhere.
    """
    h = x / s
    t = 0.5 * s
    u = h + t
    region1 = u < _WING_U
    wide_t, wide_h, wide_order = _WIDE_T[_bits(x.dtype)]
    region2 = (~region1) & ((t < _SMALL_T) | ((t < wide_t) & (h > wide_h)))
    region3 = (~region1) & (~region2) & (u > _CDF_REGION)
    gauss = _gaussian_factor(x, s)
    first = _erfcx_nonneg(SQRT_HALF * jnp.where(region2, -h, jnp.abs(u)))
    second = _erfcx_nonneg(SQRT_HALF * (t - h))
    # split exponentials: region 3 needs exp(-u^2/2) and exp(-(h-t)^2/2); region 4 with u > 0
    # needs exp(y^2), y = u/sqrt2 < 0.61, for erfcx(-y) = 2 exp(y^2) - erfcx(y)
    split_a = split_exp(jnp.where(region3, u, SQRT_HALF * jnp.maximum(u, 0.0)),
                        jnp.where(region3, -0.5, 1.0))
    split_b = split_exp(jnp.where(region3, h - t, 0.0), -0.5)
    erfcx_u = jnp.where(u > 0, 2.0 * split_a - first, first)
    bracket_erfcx = (0.5 * SQRT_2PI) * (erfcx_u - second)
    h2 = jnp.where(region2, h, -1.0)
    t2 = jnp.where(region2, t, 0.1)
    ratio = (0.5 * SQRT_2PI) * first  # Y(h) in region 2
    bracket_small = _small_t_series(h2, t2, ratio, mills_complement_given_ratio(h2, ratio),
                                    wide_order)
    wing = _wing_bracket(jnp.where(region1, h, 2.0 * _WING_U), jnp.where(region1, t, 1.0))
    bracket = jnp.where(region1, wing,
                        jnp.where(region2, bracket_small, bracket_erfcx))
    via_bracket = SQRT_2PI_INV * gauss * bracket
    b_max = jnp.exp(0.5 * x)
    upper_tail = 0.5 * first * split_a  # Phi(-u)
    lower_tail = 0.5 * second * split_b  # Phi(h - t)
    via_cdf = b_max * (1.0 - upper_tail) - jnp.exp(-0.5 * x) * lower_tail
    b = jnp.maximum(jnp.where(region3, via_cdf, via_bracket), 0.0)
    complement = jnp.where(region3, b_max * upper_tail + jnp.exp(-0.5 * x) * lower_tail, b_max - b)
    return b, complement, gauss


def _call_otm(x, s):
    """Normalised OTM call b(x, s) for x <= 0 and s > 0 (all regions evaluated, one selected)."""
    return _call_otm_parts(x, s)[0]


def _normalised_black_value(x, s, theta):
    """Normalised Black value with intrinsic split off: OTM part computed directly."""
    otm_x = -jnp.abs(x)
    finite_x = jnp.isfinite(otm_x)
    good = (s > 0) & jnp.isfinite(s)
    s_safe = jnp.where(good, s, 1.0)
    x_safe = jnp.where(finite_x, otm_x, -1.0)
    time_value = jnp.where(good & finite_x, _call_otm(x_safe, s_safe), 0.0)
    itm = theta * x > 0
    # exp(-|x|/2) and exp(|x|/2): the same two exponentials as inside _call_otm (merged by XLA)
    low, high = jnp.exp(0.5 * x_safe), jnp.exp(-0.5 * x_safe)
    intrinsic = jnp.where(itm, jnp.where(finite_x, high - low, jnp.abs(x)), 0.0)
    # s = +inf: the option is worth its maximum b_max = exp(theta*x/2)
    at_infinity = jnp.where(finite_x, jnp.where(itm, high, low),
                            jnp.where(itm, jnp.inf, jnp.where(jnp.isnan(x), jnp.nan, 0.0)))
    value = intrinsic + time_value
    return jnp.where(jnp.isposinf(s), at_infinity, value)


@jax.custom_jvp
def _normalised_black(x, s, theta):
    return blockwise(_normalised_black_value, x, s, theta)


@_normalised_black.defjvp
def _normalised_black_jvp(primals, tangents):
    x, s, theta = primals
    dx, ds, _ = tangents
    value = _normalised_black(x, s, theta)
    s_safe = jnp.where(s > 0, s, 1.0)
    d1_ = x / s_safe + 0.5 * s_safe
    d2_ = d1_ - s_safe
    vega = jnp.where(s > 0, normalised_vega(x, s_safe), 0.0)
    # db/dx = theta/2 [exp(x/2) Phi(theta d1) + exp(-x/2) Phi(theta d2)] (the phi terms cancel)
    db_dx = 0.5 * theta * (jnp.exp(0.5 * x) * norm_cdf(theta * d1_)
                           + jnp.exp(-0.5 * x) * norm_cdf(theta * d2_))
    intrinsic_slope = jnp.where(theta * x > 0, 0.5 * theta * (jnp.exp(0.5 * x) + jnp.exp(-0.5 * x)), 0.0)
    db_dx = jnp.where(s > 0, db_dx, intrinsic_slope)
    return value, db_dx * dx + vega * ds


@edge
def normalised_vega(x, s):
    """db/ds = exp(-(x^2/s^2 + s^2/4)/2)/sqrt(2 pi), accurate far into the wings."""
    return SQRT_2PI_INV * _gaussian_factor(x, s)


@edge
def normalised_black(x, s, is_call):
    """Normalised Black price ``b(x, s)`` (``price = D sqrt(F K) b``), elementwise.

    ``x = ln(F/K)``, ``s = vol*sqrt(T)``; relative accuracy about 1e-15 far into the wings.
    """
    dtype = float_dtype(x, s)
    x, s = as_float(dtype, x, s)
    theta = jnp.where(as_bool(is_call), 1.0, -1.0).astype(dtype)
    return _normalised_black(x, s, theta)


@edge
def d1(forward, strike, expiry, vol):
    """d1 = ln(F/K)/(vol sqrt T) + vol sqrt T / 2."""
    s = vol * jnp.sqrt(expiry)
    return jnp.log(forward / strike) / s + 0.5 * s


@edge
def d2(forward, strike, expiry, vol):
    """d2 = d1 - vol sqrt T."""
    return d1(forward, strike, expiry, vol) - vol * jnp.sqrt(expiry)


def _safe_sqrt(x):
    safe = jnp.where(x > 0, x, 1.0)
    return jnp.where(x > 0, jnp.sqrt(safe), 0.0)


def _black_formula(forward, strike, expiry, vol, theta, discount):
    """Black-76 price from arrays of one dtype (``theta`` = +1 call, -1 put), elementwise."""
    positive = (forward > 0) & (strike > 0)
    f_safe = jnp.where(positive, forward, 1.0)
    k_safe = jnp.where(positive, strike, 1.0)
    x = log_positive(f_safe / k_safe)
    s = vol * _safe_sqrt(expiry)
    b = _normalised_black(x, s, theta)
    price = discount * jnp.sqrt(f_safe) * jnp.sqrt(k_safe) * b
    return jnp.where(positive, price, jnp.nan)


@jax.custom_jvp
def _black(forward, strike, expiry, vol, theta, discount):
    """The price over cache-sized blocks (:func:`jaxvol._edge.blockwise`): the whole formula,
    logarithm and square roots included, runs as one pass per block on CPU."""
    return blockwise(_black_formula, forward, strike, expiry, vol, theta, discount)


@_black.defjvp
def _black_jvp(primals, tangents):  # derivatives of the formula (normalised Black's own rule)
    return jax.jvp(_black_formula, primals, tangents)


@edge
def black_price(forward, strike, expiry, vol, is_call, *, discount=1.0):
    """Black-76 price ``D * Black(F, K, vol, T)``; broadcasts, jit/vmap/grad-safe.

    Out-of-the-money prices keep ~1e-15 relative accuracy down to 1e-300. Returns the input's
    floating dtype.
    """
    dtype = float_dtype(forward, strike, expiry, vol, discount)
    forward, strike, expiry, vol, discount = as_float(dtype, forward, strike, expiry, vol, discount)
    theta = jnp.where(as_bool(is_call), 1.0, -1.0).astype(dtype)
    return _black(forward, strike, expiry, vol, theta, discount)


@edge
def bsm_price(spot, strike, expiry, vol, rate, div, is_call):
    """Black–Scholes–Merton price with continuous rate and dividend yield."""
    dtype = float_dtype(spot, strike, expiry, vol, rate, div)
    spot, strike, expiry, vol, rate, div = as_float(dtype, spot, strike, expiry, vol, rate, div)
    forward = spot * jnp.exp((rate - div) * expiry)
    return black_price(forward, strike, expiry, vol, is_call, discount=jnp.exp(-rate * expiry))


# --------------------------------------------------------------------------------------------
# greeks
# --------------------------------------------------------------------------------------------
class Greeks(NamedTuple):
    """Closed-form sensitivities (vega per 1.0 vol, theta per year as -dV/dT, rho per 1.0 rate)."""

    price: jax.Array
    delta: jax.Array
    gamma: jax.Array
    vega: jax.Array
    theta: jax.Array
    rho: jax.Array
    vanna: jax.Array
    volga: jax.Array
    dual_delta: jax.Array
    dual_gamma: jax.Array


@edge
def greeks(forward, strike, expiry, vol, is_call, *, discount=1.0) -> Greeks:
    """Black-76 greeks with respect to the forward (delta, gamma, vanna) and the strike (dual).

    The discount factor is ``D = exp(-r T)`` with ``r = -ln(D)/T`` held fixed: theta is
    ``-dV/dT`` at fixed forward and rate, rho is ``dV/dr = -T V`` at fixed forward.
    """
    dtype = float_dtype(forward, strike, expiry, vol, discount)
    forward, strike, expiry, vol, discount = as_float(dtype, forward, strike, expiry, vol, discount)
    theta_sign = jnp.where(as_bool(is_call), 1.0, -1.0).astype(dtype)
    price = black_price(forward, strike, expiry, vol, is_call, discount=discount)
    sqrt_t = jnp.sqrt(expiry)
    s = vol * sqrt_t
    d1_ = log_positive(forward / strike) / s + 0.5 * s
    d2_ = d1_ - s
    pdf1 = norm_pdf(d1_)
    rate = -jnp.log(discount) / expiry
    vega = discount * forward * pdf1 * sqrt_t
    return Greeks(
        price=price,
        delta=theta_sign * discount * norm_cdf(theta_sign * d1_),
        gamma=discount * pdf1 / (forward * s),
        vega=vega,
        theta=rate * price - discount * forward * pdf1 * vol / (2.0 * sqrt_t),
        rho=-expiry * price,
        vanna=-discount * pdf1 * d2_ / vol,
        volga=vega * d1_ * d2_ / vol,
        dual_delta=-theta_sign * discount * norm_cdf(theta_sign * d2_),
        dual_gamma=discount * norm_pdf(d2_) / (strike * s),
    )


@edge
def bsm_greeks(spot, strike, expiry, vol, rate, div, is_call) -> Greeks:
    """Black–Scholes–Merton greeks with respect to spot; rho moves the forward with the rate."""
    dtype = float_dtype(spot, strike, expiry, vol, rate, div)
    spot, strike, expiry, vol, rate, div = as_float(dtype, spot, strike, expiry, vol, rate, div)
    carry = jnp.exp((rate - div) * expiry)
    forward = spot * carry
    g = greeks(forward, strike, expiry, vol, is_call, discount=jnp.exp(-rate * expiry))
    return Greeks(
        price=g.price,
        delta=g.delta * carry,
        gamma=g.gamma * carry * carry,
        vega=g.vega,
        theta=g.theta - g.delta * forward * (rate - div),
        rho=g.rho + g.delta * forward * expiry,
        vanna=g.vanna * carry,
        volga=g.volga,
        dual_delta=g.dual_delta,
        dual_gamma=g.dual_gamma,
    )


# --------------------------------------------------------------------------------------------
# Bachelier (normal) model
# --------------------------------------------------------------------------------------------
def normalised_bachelier_otm(u):
    """psi(u) = phi(u) - u Phi(-u) for u >= 0 (OTM normal time value per unit of vol*sqrt T).

    Written as ``phi(u) * (1 - u*R(u))`` with the Mills ratio ``R``; ``1 - u R(u)`` comes from
    the cancellation-free :func:`jaxvol.special.mills_complement`.
    """
    return norm_pdf(u) * mills_complement(-u)


@edge
def bachelier_price(forward, strike, expiry, vol, is_call, *, discount=1.0):
    """Bachelier (normal-model) price; ``vol`` is the absolute (price-unit) volatility."""
    dtype = float_dtype(forward, strike, expiry, vol, discount)
    forward, strike, expiry, vol, discount = as_float(dtype, forward, strike, expiry, vol, discount)
    theta = jnp.where(as_bool(is_call), 1.0, -1.0).astype(dtype)
    s = vol * _safe_sqrt(expiry)
    moneyness = theta * (forward - strike)
    s_safe = jnp.where(s > 0, s, 1.0)
    u = jnp.abs(moneyness) / s_safe
    time_value = jnp.where(s > 0, s_safe * normalised_bachelier_otm(u), 0.0)
    return discount * (jnp.maximum(moneyness, 0.0) + time_value)
