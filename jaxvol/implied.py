"""Implied volatility under Black-76 and Bachelier, at machine precision, fixed work per lane.

Algorithm (Black). The price is normalised to ``beta = price/(D sqrt(F K))`` and reduced to an
out-of-the-money call ``b(x, s)`` with ``x = -|ln(F/K)| <= 0`` (put–call symmetry; the intrinsic
value is subtracted in price units). Following Jäckel ("Let's Be Rational", 2015) the price axis
is cut at the points where the tangent through the inflection point ``s_c = sqrt(2|x|)`` meets 0
and ``b_max = exp(x/2)``:

* low prices use the objective ``1/ln(b) - 1/ln(beta)`` and start from an asymptotic guess
  (the leading term of the deep out-of-the-money expansion, solved by fixed point);
* middle prices use ``b - beta`` and start on the inflection tangent;
* high prices use ``ln(b_max - beta) - ln(b_max - b)`` and start from the inverse of
  ``b_max - b ~ (e^{x/2} + e^{-x/2}) Phi(-s/2)``.

A FIXED number of third-order Householder steps follows, safeguarded by a bracket that every
evaluation tightens (b is increasing in s), so a step that would leave the bracket bisects it.
All steps but the last use a cheaper evaluation of ``b`` (two normal CDFs or erfcx terms) that is
accurate to ~1e-10 relative in the far wings, where ``s`` is insensitive to it; the last step
uses the full-precision :func:`jaxvol.black.normalised_black` kernel. No data-dependent loop:
every lane does identical work under ``vmap``.

Gradients use the implicit-function theorem (``dvol/dprice = 1/vega`` and likewise for forward,
strike, expiry and discount); lanes without a solution get NaN and zero gradients, and never
affect other lanes.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jaxvol._dtypes import as_bool, as_float, float_dtype
from jaxvol.black import (_call_otm, _erfcx_bracket, _gaussian_factor, bachelier_price,
                          black_price, normalised_bachelier_otm, normalised_vega)
from jaxvol.special import SQRT_2PI, SQRT_2PI_INV, norm_cdf, norm_pdf

__all__ = ["IVStatus", "ImpliedVol", "implied_vol", "implied_normal_vol"]

_HOUSEHOLDER_STEPS = 3  # plus the final full-precision step


class IVStatus(enum.IntEnum):
    """Outcome of an implied-volatility inversion, per lane."""

    OK = 0
    BELOW_INTRINSIC = 1  # price below the discounted intrinsic value
    ABOVE_MAX_PRICE = 2  # price at or above D*F (call) or D*K (put)
    ZERO_PRICE_OR_EXPIRY = 3  # expiry <= 0, or no time value (price equal to intrinsic)
    NON_FINITE_INPUT = 4  # NaN or infinite price, forward, strike, expiry or discount
    INVALID_INPUT = 5  # non-positive forward, strike or discount


class ImpliedVol(NamedTuple):
    """Implied volatilities (NaN where no solution exists) and their :class:`IVStatus` codes."""

    vol: jax.Array
    status: jax.Array


# --------------------------------------------------------------------------------------------
# normalised OTM call and its derivatives in s
# --------------------------------------------------------------------------------------------
def _cheap_call_otm(x, s):
    """b(x, s) for x <= 0 from the erfcx form alone (~1e-10 relative where it is worst).

    Used for the bracketing steps only: where its error is largest (tiny s, |x|/s large) the
    implied s is least sensitive to b, and the last step uses the full-precision kernel.
    """
    h = x / s
    t = 0.5 * s
    return jnp.maximum(SQRT_2PI_INV * _gaussian_factor(x, s) * _erfcx_bracket(h, t), 0.0)


def _complement(x, s):
    """b_max - b = e^{x/2} Phi(-d1) + e^{-x/2} Phi(d2), a sum of positive terms."""
    h = x / s
    t = 0.5 * s
    return jnp.exp(0.5 * x) * norm_cdf(-(h + t)) + jnp.exp(-0.5 * x) * norm_cdf(h - t)


def _vega(x, s):
    """Normalised vega db/ds with a plain exponential (enough for Householder derivatives)."""
    return SQRT_2PI_INV * jnp.exp(-0.5 * (x * x / (s * s) + 0.25 * s * s))


def _log_vega_derivatives(x, s):
    """b''/b' and b'''/b' (from ln b' = -x^2/(2 s^2) - s^2/8 + const)."""
    g1 = x * x / (s * s * s) - 0.25 * s
    g2 = g1 * g1 - 3.0 * x * x / (s * s * s * s) - 0.25
    return g1, g2


def _householder(newton, halley, third):
    """Third-order Householder factor (Jäckel's form) applied to a Newton step."""
    return newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + third * newton / 6.0))


def _step(x, s, beta, b_max, region, b, complement, final=False):
    """One Householder(3) step for the region's objective, given b(x, s) and b_max - b.

    The final step uses log-ratio objectives, ``ln(b/beta)`` (or ``ln((b_max-beta)/(b_max-b))``
    at high prices), whose rounding error is ~1 ulp of the ratio, so the last correction does
    not amplify the residual's rounding (``1/ln b`` would, by ``|ln b|``).
    """
    v = _vega(x, s)
    g1, g2 = _log_vega_derivatives(x, s)
    b1, b2, b3 = v, v * g1, v * g2
    # low prices: f = 1/l with l = ln b, derivatives from ratios (b itself may be ~1e-300)
    tiny = jnp.finfo(b.dtype).tiny
    b_safe = jnp.maximum(b, tiny)
    lb = jnp.log(b_safe)
    r1 = v / b_safe  # l' = b'/b
    l1 = r1
    l2 = r1 * g1 - r1 * r1
    l3 = r1 * g2 - 3.0 * r1 * r1 * g1 + 2.0 * r1 * r1 * r1
    f_low = 1.0 / lb - 1.0 / jnp.log(beta)
    d1_low = -l1 / (lb * lb)
    d2_low = -l2 / (lb * lb) + 2.0 * l1 * l1 / (lb * lb * lb)
    d3_low = -l3 / (lb * lb) + 6.0 * l1 * l2 / (lb * lb * lb) - 6.0 * l1 * l1 * l1 / (lb * lb * lb * lb)
    # high prices: f = ln(b_max - beta) - ln(b_max - b)
    c = complement
    f_high = jnp.log(b_max - beta) - jnp.log(c)
    r1 = -b1 / c
    d1_high = -r1
    d2_high = (b2 / c) + r1 * r1
    d3_high = (b3 / c) + 3.0 * (b1 * b2) / (c * c) + 2.0 * (-r1) ** 3
    if final:
        f_log = jnp.log(b_safe / beta)
        f_high = jnp.log((b_max - beta) / c)
        f = jnp.where(region == 2, f_high, f_log)
        d1 = jnp.where(region == 2, d1_high, l1)
        d2 = jnp.where(region == 2, d2_high, l2)
        d3 = jnp.where(region == 2, d3_high, l3)
        return s + _householder(-f / d1, d2 / d1, d3 / d1)
    # choose by region: 0 low, 1 middle, 2 high
    f = jnp.where(region == 0, f_low, jnp.where(region == 1, b - beta, f_high))
    d1 = jnp.where(region == 0, d1_low, jnp.where(region == 1, b1, d1_high))
    d2 = jnp.where(region == 0, d2_low, jnp.where(region == 1, b2, d2_high))
    d3 = jnp.where(region == 0, d3_low, jnp.where(region == 1, b3, d3_high))
    newton = -f / d1
    return s + _householder(newton, d2 / d1, d3 / d1)


def _barrier(values):
    """Stop XLA from fusing (and so recomputing) an expensive value into each of its users."""
    return jax.lax.optimization_barrier(values)


def _safeguard(s_new, lo, hi):
    """Keep the iterate strictly inside the bracket; bisect (geometrically) when it leaves."""
    inside = (s_new >= lo) & (s_new <= hi) & jnp.isfinite(s_new)
    fallback = jnp.where(jnp.isfinite(hi), jnp.where(lo > 0, jnp.sqrt(lo * hi), 0.5 * hi), 2.0 * lo)
    return jnp.where(inside, s_new, fallback)


def _initial_guess(x, beta, b_max):
    """Initial s, region code and bracket from the inflection-tangent construction."""
    ax = -x
    s_c = jnp.sqrt(2.0 * ax)
    s_c_safe = jnp.where(s_c > 0, s_c, 1.0)
    b_c = jnp.where(s_c > 0, _cheap_call_otm(x, s_c_safe), 0.0)
    v_c = jnp.where(s_c > 0, _vega(x, s_c_safe), SQRT_2PI_INV)
    b_c, v_c = _barrier((b_c, v_c))
    s_l = s_c - b_c / v_c
    s_u = s_c + (b_max - b_c) / v_c
    s_l_safe = jnp.where(s_l > 0, s_l, 1.0)
    b_l = jnp.where(s_l > 0, _cheap_call_otm(x, s_l_safe), 0.0)
    b_u = _cheap_call_otm(x, s_u)
    b_l, b_u = _barrier((b_l, b_u))
    region = jnp.where(beta < b_l, 0, jnp.where(beta > b_u, 2, 1))
    # middle: the tangent through the inflection point
    s_mid = s_c + (beta - b_c) / v_c
    # low: b ~ s^3 exp(-x^2/(2 s^2) - s^2/8) / (sqrt(2 pi) x^2), solved by fixed point
    ax_safe = jnp.where(ax > 0, ax, 1.0)
    log_beta = jnp.log(beta)
    s_low = ax_safe / jnp.sqrt(-2.0 * log_beta)
    for _ in range(3):
        rhs = 3.0 * jnp.log(s_low) - jnp.log(SQRT_2PI * ax_safe * ax_safe) - log_beta - 0.125 * s_low**2
        s_low = ax_safe / jnp.sqrt(2.0 * jnp.maximum(rhs, 1e-3))
    # high: b_max - b ~ (e^{x/2} + e^{-x/2}) Phi(-s/2)
    s_high = -2.0 * ndtri((b_max - beta) / (jnp.exp(0.5 * x) + jnp.exp(-0.5 * x)))
    s_low, s_high = _barrier((s_low, s_high))
    s0 = jnp.where(region == 0, s_low, jnp.where(region == 1, s_mid, s_high))
    lo = jnp.where(region == 0, 0.0, jnp.where(region == 1, jnp.maximum(s_l, 0.0), s_u))
    hi = jnp.where(region == 0, jnp.where(s_l > 0, s_l, jnp.inf), jnp.where(region == 1, s_u, jnp.inf))
    return s0, region, lo, hi


def _stage(fn, *operands):
    """Run ``fn(*operands)`` as its own XLA computation (a conditional with equal branches).

    XLA's CPU fusion otherwise merges the guess, the loop and the final full-precision step
    into fusions that recompute shared producers, which measured 2.3x slower than running the
    stages separately. The predicate is an opaque constant (through an optimisation barrier),
    so it is never batched and ``vmap`` keeps a real conditional instead of running both
    branches.
    """
    pred = jax.lax.optimization_barrier(jnp.asarray(True))
    return jax.lax.cond(pred, lambda ops: fn(*ops), lambda ops: fn(*ops), operands)


def _solve_otm(x, beta):
    """Normalised vol s with b(x, s) = beta for x <= 0, 0 < beta < exp(x/2)."""
    b_max = jnp.exp(0.5 * x)

    def guess(x, beta, b_max):
        s, region, lo, hi = _initial_guess(x, beta, b_max)
        return _safeguard(s, lo, hi), region, lo, hi

    def bracketing(x, beta, b_max, s, region, lo, hi):
        def cheap_step(_, carry):
            s, lo, hi = carry
            b = _cheap_call_otm(x, s)
            lo = jnp.where(b < beta, jnp.maximum(lo, s), lo)
            hi = jnp.where(b > beta, jnp.minimum(hi, s), hi)
            s = _safeguard(_step(x, s, beta, b_max, region, b, b_max - b), lo, hi)
            return s, lo, hi

        return jax.lax.fori_loop(0, _HOUSEHOLDER_STEPS, cheap_step, (s, lo, hi))[0]

    def final(x, beta, b_max, s, region):
        b, c = _call_otm(x, s), _complement(x, s)
        return _step(x, s, beta, b_max, region, b, c, final=True)

    s, region, lo, hi = _stage(guess, x, beta, b_max)
    s = _stage(bracketing, x, beta, b_max, s, region, lo, hi)
    return _stage(final, x, beta, b_max, s, region)


# --------------------------------------------------------------------------------------------
# public Black inversion
# --------------------------------------------------------------------------------------------
def _black_status(price, forward, strike, expiry, discount, theta):
    finite = (jnp.isfinite(price) & jnp.isfinite(forward) & jnp.isfinite(strike)
              & jnp.isfinite(expiry) & jnp.isfinite(discount))
    positive = (forward > 0) & (strike > 0) & (discount > 0)
    intrinsic = discount * jnp.maximum(theta * (forward - strike), 0.0)
    upper = discount * jnp.where(theta > 0, forward, strike)
    status = jnp.where(
        ~finite, IVStatus.NON_FINITE_INPUT,
        jnp.where(~positive, IVStatus.INVALID_INPUT,
                  jnp.where(expiry <= 0, IVStatus.ZERO_PRICE_OR_EXPIRY,
                            jnp.where(price < intrinsic, IVStatus.BELOW_INTRINSIC,
                                      jnp.where(price >= upper, IVStatus.ABOVE_MAX_PRICE,
                                                jnp.where(price == intrinsic,
                                                          IVStatus.ZERO_PRICE_OR_EXPIRY,
                                                          IVStatus.OK))))))
    return status.astype(jnp.int32), intrinsic


_CPU_BLOCK = 16384  # lanes per block on CPU: keeps the long elementwise chain in cache


def _blockwise(kernel, *arrays):
    """Apply an elementwise kernel in cache-sized blocks on CPU (one fused pass elsewhere).

    XLA on CPU materialises the many intermediates of the solver as full-size arrays; running
    it over blocks of 16,384 lanes (``lax.map`` with ``batch_size``) keeps them in cache. On
    accelerators the whole batch goes through at once.
    """
    shape = arrays[0].shape
    size = int(np.prod(shape)) if shape else 1
    if jax.default_backend() != "cpu" or size <= _CPU_BLOCK:
        return kernel(*arrays)
    flat = [a.reshape(-1) for a in arrays]
    out = jax.lax.map(lambda args: kernel(*args), tuple(flat), batch_size=_CPU_BLOCK)
    return jax.tree_util.tree_map(lambda o: o.reshape(shape), out)


def _implied_vol_primal(price, forward, strike, expiry, discount, theta):
    return _blockwise(_implied_vol_kernel, price, forward, strike, expiry, discount, theta)


def _implied_vol_kernel(price, forward, strike, expiry, discount, theta):
    status, intrinsic = _black_status(price, forward, strike, expiry, discount, theta)
    ok = status == IVStatus.OK
    f = jnp.where(ok, forward, 1.0)
    k = jnp.where(ok, strike, 1.0)
    d = jnp.where(ok, discount, 1.0)
    t = jnp.where(ok, expiry, 1.0)
    x = -jnp.abs(jnp.log(f / k))
    beta = (price - intrinsic) / (d * jnp.sqrt(f) * jnp.sqrt(k))
    beta = jnp.where(ok, beta, 0.5 * jnp.exp(0.5 * x))
    beta = jnp.clip(beta, jnp.finfo(beta.dtype).tiny, jnp.exp(0.5 * x))
    s = _solve_otm(x, beta)
    vol = jnp.where(ok, s / jnp.sqrt(t), jnp.nan)
    return vol, status


def _implicit_jvp(solver, price_fn, vol_fallback, primals, tangents):
    """Implicit-function JVP shared by both models: dvol = (dprice - sum dV/di di) / vega.

    Lanes without a solution get a zero tangent (inputs masked first: NaN-safe gradients).
    """
    price, forward, strike, expiry, discount, theta = primals
    dprice, dforward, dstrike, dexpiry, ddiscount, _ = tangents
    vol, status = solver(*primals)
    ok = status == IVStatus.OK
    vol_safe = jnp.where(ok, vol, vol_fallback)
    inputs = [jnp.where(ok, a, 1.0) for a in (forward, strike, expiry, discount)]

    def model(f, k, t, d, v):
        return price_fn(f, k, t, v, theta > 0, discount=d)

    zero = jnp.zeros_like(vol_safe)
    _, dmodel = jax.jvp(model, (*inputs, vol_safe), (dforward, dstrike, dexpiry, ddiscount, zero))
    _, vega = jax.jvp(model, (*inputs, vol_safe), (zero, zero, zero, zero, jnp.ones_like(zero)))
    vega_safe = jnp.where(ok & (vega > 0), vega, 1.0)
    dvol = jnp.where(ok & (vega > 0), (dprice - dmodel) / vega_safe, 0.0)
    return (vol, status), (dvol, jnp.zeros(status.shape, dtype=jax.dtypes.float0))


def _broadcast_inputs(price, forward, strike, expiry, is_call, discount):
    """Common dtype, theta = +-1 and one broadcast shape for the six solver inputs."""
    dtype = float_dtype(price, forward, strike, expiry, discount)
    price, forward, strike, expiry, discount = as_float(dtype, price, forward, strike, expiry, discount)
    theta = jnp.where(as_bool(is_call), 1.0, -1.0).astype(dtype)
    arrays = (price, forward, strike, expiry, discount, theta)
    shape = jnp.broadcast_shapes(*(a.shape for a in arrays))
    return [jnp.broadcast_to(a, shape) for a in arrays]


@jax.custom_jvp
def _implied_vol(price, forward, strike, expiry, discount, theta):
    return _implied_vol_primal(price, forward, strike, expiry, discount, theta)


@_implied_vol.defjvp
def _implied_vol_jvp(primals, tangents):
    return _implicit_jvp(_implied_vol, black_price, 0.2, primals, tangents)

def implied_vol(price, forward, strike, expiry, is_call, *, discount=1.0) -> ImpliedVol:
    """Black-76 implied volatility, broadcasting over any batch shape.

    Args:
        price: option price (discounted, same units as ``forward``).
        forward: forward price ``F`` of the underlying for the expiry.
        strike: strike ``K``.
        expiry: time to expiry in years.
        is_call: boolean (or non-zero) for calls, False/0 for puts.
        discount: discount factor ``D`` to the payment date.

    Returns:
        :class:`ImpliedVol` with ``vol`` (the input's float dtype; NaN where no solution) and
        ``status`` (int32 :class:`IVStatus` codes).
    """
    args = _broadcast_inputs(price, forward, strike, expiry, is_call, discount)
    vol, status = _implied_vol(*args)
    return ImpliedVol(vol=vol, status=status)


# --------------------------------------------------------------------------------------------
# Bachelier (normal) implied volatility
# --------------------------------------------------------------------------------------------
def _solve_bachelier_u(ratio):
    """u > 0 with psi(u)/u = ratio (psi(u) = phi(u) - u Phi(-u)), monotone decreasing in u."""
    # initial guess: large ratio -> u ~ 1/(sqrt(2pi) ratio + 1/2); small ratio -> asymptotic
    # psi(u)/u ~ phi(u)/u^3 solved by fixed point.
    u_small = 1.0 / (SQRT_2PI * ratio + 0.5)
    log_ratio = jnp.log(ratio)
    u_large = jnp.sqrt(jnp.maximum(-2.0 * log_ratio, 1.0))
    for _ in range(4):
        u_large = jnp.sqrt(jnp.maximum(-2.0 * (log_ratio + 3.0 * jnp.log(u_large) + jnp.log(SQRT_2PI)), 1e-6))
    u = jnp.where(ratio > 0.1, u_small, u_large)
    for _ in range(6):  # Householder(3) on g(u) = ln psi(u) - ln u - ln ratio
        u = jnp.maximum(u, 1e-300)
        psi = normalised_bachelier_otm(u)
        tail = norm_cdf(-u)  # psi' = -Phi(-u), psi'' = phi(u)
        phi = norm_pdf(u)
        p1, p2, p3 = -tail / psi, phi / psi, -u * phi / psi
        g = jnp.log(psi) - jnp.log(u) - log_ratio
        g1 = p1 - 1.0 / u
        g2 = p2 - p1 * p1 + 1.0 / (u * u)
        g3 = p3 - 3.0 * p1 * p2 + 2.0 * p1**3 - 2.0 / (u * u * u)
        u = u + _householder(-g / g1, g2 / g1, g3 / g1)
    return u


def _bachelier_status(price, forward, strike, expiry, discount, theta):
    finite = (jnp.isfinite(price) & jnp.isfinite(forward) & jnp.isfinite(strike)
              & jnp.isfinite(expiry) & jnp.isfinite(discount))
    intrinsic = discount * jnp.maximum(theta * (forward - strike), 0.0)
    status = jnp.where(
        ~finite, IVStatus.NON_FINITE_INPUT,
        jnp.where(discount <= 0, IVStatus.INVALID_INPUT,
                  jnp.where(expiry <= 0, IVStatus.ZERO_PRICE_OR_EXPIRY,
                            jnp.where(price < intrinsic, IVStatus.BELOW_INTRINSIC,
                                      jnp.where(price == intrinsic, IVStatus.ZERO_PRICE_OR_EXPIRY,
                                                IVStatus.OK)))))
    return status.astype(jnp.int32), intrinsic


def _implied_normal_primal(price, forward, strike, expiry, discount, theta):
    return _blockwise(_implied_normal_kernel, price, forward, strike, expiry, discount, theta)


def _implied_normal_kernel(price, forward, strike, expiry, discount, theta):
    status, intrinsic = _bachelier_status(price, forward, strike, expiry, discount, theta)
    ok = status == IVStatus.OK
    d = jnp.where(ok, discount, 1.0)
    t = jnp.where(ok, expiry, 1.0)
    time_value = jnp.where(ok, (price - intrinsic) / d, 1.0)
    distance = jnp.abs(forward - strike)
    atm = distance == 0
    ratio = time_value / jnp.where(atm, 1.0, distance)
    u = _solve_bachelier_u(jnp.where(atm, 1.0, ratio))
    s = jnp.where(atm, time_value * SQRT_2PI, distance / u)
    vol = jnp.where(ok, s / jnp.sqrt(t), jnp.nan)
    return vol, status


@jax.custom_jvp
def _implied_normal(price, forward, strike, expiry, discount, theta):
    return _implied_normal_primal(price, forward, strike, expiry, discount, theta)


@_implied_normal.defjvp
def _implied_normal_jvp(primals, tangents):
    return _implicit_jvp(_implied_normal, bachelier_price, 1.0, primals, tangents)

def implied_normal_vol(price, forward, strike, expiry, is_call, *, discount=1.0) -> ImpliedVol:
    """Bachelier (normal) implied volatility in price units per sqrt(year); see implied_vol."""
    args = _broadcast_inputs(price, forward, strike, expiry, is_call, discount)
    vol, status = _implied_normal(*args)
    return ImpliedVol(vol=vol, status=status)
