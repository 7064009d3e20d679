"""Implied volatility under Black-76 and Bachelier, at machine precision, fixed work per lane.

Algorithm (Black). The price is normalised to ``beta = price/(D sqrt(F K))`` and reduced to an
out-of-the-money call ``b(x, s)`` with ``x = -|ln(F/K)| <= 0`` (put–call symmetry; the intrinsic
value is subtracted in price units). Following Jäckel ("Let's Be Rational", 2015, §4-5) the
price axis is cut at ``b_l``, ``b_c`` and ``b_u``, the prices at ``s_c = sqrt(2|x|)`` (the
inflection point) and where its tangent meets 0 and ``b_max = exp(x/2)``:

* the initial guess interpolates ``s(beta)`` by a shape-preserving rational cubic between
  ``b_l`` and ``b_u``, and below ``b_l`` / above ``b_u`` interpolates the transformed maps
  ``2 pi/sqrt27 |x| Phi(-|x|/(sqrt3 s))^3`` / ``Phi(-s/2)`` and inverts them through the
  inverse normal CDF. Each lane evaluates only its own segment (select'ed arguments);
* low prices iterate on ``1/ln(b) - 1/ln(beta)``, middle ones on ``b - beta`` and high ones
  (``beta > max(b_u, b_max/2)``) on ``ln(b_max - beta) - ln(b_max - b)``.

Then ONE third-order Householder step on a two-erfcx evaluation of ``b`` (accurate to ~1e-10
relative where it is worst, far in the wings, where ``s`` is insensitive to it), safeguarded by
the segment's bracket, and one final log-ratio step on the full-precision four-region kernel
(:func:`jaxvol.black._call_otm_parts`). No data-dependent loop: every lane does identical
work under ``vmap``.

Gradients use the implicit-function theorem (``dvol/dprice = 1/vega`` and likewise for forward,
strike, expiry and discount); lanes without a solution get NaN and zero gradients, and never
affect other lanes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtri

from jaxvol._dtypes import as_bool, as_float, float_dtype
from jaxvol._edge import blockwise
from jaxvol.black import (_call_otm_parts, _gaussian_factor, bachelier_price,
                          black_price, normalised_bachelier_otm)
from jaxvol.special import (SQRT_2, SQRT_2PI, SQRT_2PI_INV, SQRT_HALF, _erfcx_nonneg,
                            log_positive, norm_cdf, norm_pdf)
from jaxvol.status import domain_status

__all__ = ["IVStatus", "ImpliedVol", "implied_vol", "implied_normal_vol"]

_HOUSEHOLDER_STEPS = 1  # plus the final full-precision step


IVStatus = domain_status("IVStatus", "implied", {
    "OK": 0,
    "BAD_INPUT": 1,  # non-positive forward, strike or discount (old name INVALID_INPUT)
    "NON_FINITE_INPUT": 2,  # NaN or infinite price, forward, strike, expiry or discount
    "BELOW_INTRINSIC": 10,  # price below the discounted intrinsic value
    "ABOVE_MAX_PRICE": 11,  # price at or above D*F (call) or D*K (put)
    "ZERO_PRICE_OR_EXPIRY": 12,  # expiry <= 0, or no time value (price equal to intrinsic)
}, "Outcome of an implied-volatility inversion, per lane (codes: jaxvol.status).",
    aliases={"INVALID_INPUT": "BAD_INPUT"})


class ImpliedVol(NamedTuple):
    """Implied volatilities (NaN where no solution exists) and their :class:`IVStatus` codes."""

    vol: jax.Array
    status: jax.Array


# --------------------------------------------------------------------------------------------
# normalised OTM call, its complement and vega, for the solver
# --------------------------------------------------------------------------------------------
def _cheap_call_otm(x, s, b_max):
    """``b(x, s)``, ``b_max - b`` and the Gaussian factor for ``x <= 0 < s`` from two erfcx.

    With ``h = x/s``, ``t = s/2`` and ``G = exp(-(h^2+t^2)/2)``:
    ``b = G/2 [erfcx(-(h+t)/sqrt2) - erfcx((t-h)/sqrt2)]`` while ``h + t <= 0`` and
    ``b_max - b = G/2 [erfcx((h+t)/sqrt2) + erfcx((t-h)/sqrt2)]`` (a sum of positive terms)
    beyond, so both erfcx arguments are non-negative and no exponential is needed besides
    ``G``. The difference loses ~``log10(|h|/t)`` digits where ``t`` is small; that is harmless
    for the guess and the intermediate step (the final step uses the full kernel).
    """
    h = x / s
    t = 0.5 * s
    u = h + t
    gauss = _gaussian_factor(x, s)
    first = _erfcx_nonneg(SQRT_HALF * jnp.abs(u))
    second = _erfcx_nonneg(SQRT_HALF * (t - h))
    half = 0.5 * gauss
    above = u > 0
    c_above = half * (first + second)
    b = jnp.maximum(jnp.where(above, b_max - c_above, half * (first - second)), 0.0)
    return b, jnp.where(above, c_above, b_max - b), gauss


def _log_vega_derivatives(x, s):
    """b''/b' and b'''/b' (from ln b' = -x^2/(2 s^2) - s^2/8 + const)."""
    g1 = x * x / (s * s * s) - 0.25 * s
    g2 = g1 * g1 - 3.0 * x * x / (s * s * s * s) - 0.25
    return g1, g2


def _householder(newton, halley, third):
    """Third-order Householder factor (Jäckel's form) applied to a Newton step."""
    return newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + third * newton / 6.0))


def _step(x, s, beta, b_max, region, b, complement, vega, final=False):
    """One Householder(3) step for the region's objective, given b, b_max - b and b' at s.

    Regions: 0 low (``1/ln b - 1/ln beta``), 1 middle (``b - beta``), 2 high
    (``ln(b_max - beta) - ln(b_max - b)``). The final step uses log-ratio objectives,
    ``ln(b/beta)`` (or ``ln((b_max-beta)/(b_max-b))`` at high prices), whose rounding error is
    ~1 ulp of the ratio, so the last correction does not amplify the residual's rounding
    (``1/ln b`` would, by ``|ln b|``).
    """
    g1, g2 = _log_vega_derivatives(x, s)
    b1, b2, b3 = vega, vega * g1, vega * g2
    tiny = jnp.finfo(b.dtype).tiny
    b_safe = jnp.maximum(b, tiny)
    lb = log_positive(b_safe)
    r1 = vega / b_safe  # l' = b'/b for l = ln b
    l1 = r1
    l2 = r1 * g1 - r1 * r1
    l3 = r1 * g2 - 3.0 * r1 * r1 * g1 + 2.0 * r1 * r1 * r1
    c = complement
    q1 = b1 / c  # -d/ds ln(b_max - b)
    d2_high = (b2 / c) + q1 * q1
    d3_high = (b3 / c) + 3.0 * (b1 * b2) / (c * c) + 2.0 * q1 ** 3
    if final:
        f = jnp.where(region == 2, log_positive((b_max - beta) / c), log_positive(b_safe / beta))
        d1 = jnp.where(region == 2, q1, l1)
        d2 = jnp.where(region == 2, d2_high, l2)
        d3 = jnp.where(region == 2, d3_high, l3)
        return s + _householder(-f / d1, d2 / d1, d3 / d1)
    # low prices: f = 1/l, derivatives by the chain rule (b itself may be ~1e-300)
    f_low = 1.0 / lb - 1.0 / log_positive(beta)
    d1_low = -l1 / (lb * lb)
    d2_low = -l2 / (lb * lb) + 2.0 * l1 * l1 / (lb * lb * lb)
    d3_low = -l3 / (lb * lb) + 6.0 * l1 * l2 / (lb * lb * lb) - 6.0 * l1 * l1 * l1 / (lb * lb * lb * lb)
    f_high = log_positive(b_max - beta) - log_positive(c)
    f = jnp.where(region == 0, f_low, jnp.where(region == 1, b - beta, f_high))
    d1 = jnp.where(region == 0, d1_low, jnp.where(region == 1, b1, q1))
    d2 = jnp.where(region == 0, d2_low, jnp.where(region == 1, b2, d2_high))
    d3 = jnp.where(region == 0, d3_low, jnp.where(region == 1, b3, d3_high))
    return s + _householder(-f / d1, d2 / d1, d3 / d1)


def _safeguard(s_new, lo, hi):
    """Keep the iterate strictly inside the bracket; bisect (geometrically) when it leaves."""
    inside = (s_new >= lo) & (s_new <= hi) & jnp.isfinite(s_new)
    fallback = jnp.where(jnp.isfinite(hi), jnp.where(lo > 0, jnp.sqrt(lo * hi), 0.5 * hi), 2.0 * lo)
    return jnp.where(inside, s_new, fallback)


# --------------------------------------------------------------------------------------------
# initial guess: Jäckel's transformed rational-cubic interpolation ("Let's Be Rational", §4-5)
# --------------------------------------------------------------------------------------------
def _control_limits(dtype):
    eps = float(jnp.finfo(dtype).eps)
    return -(1.0 - eps ** 0.5), 2.0 / (eps * eps)  # linear interpolation at the upper limit


def _safe_div(num, den):
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0), ok


def _minimum_control(d_l, d_r, slope, prefer_shape):
    """Smallest Delbourgo–Gregory control parameter keeping monotonicity and convexity."""
    r_min, r_max = _control_limits(slope.dtype)
    monotonic = (d_l * slope >= 0) & (d_r * slope >= 0)
    convex = (d_l <= slope) & (slope <= d_r)
    concave = (d_l >= slope) & (slope >= d_r)
    curved = convex | concave
    linear_or_none = jnp.where(prefer_shape, r_max, -jnp.inf)
    r1, slope_ok = _safe_div(d_r + d_l, slope)
    r1 = jnp.where(monotonic, jnp.where(slope_ok, r1, linear_or_none), -jnp.inf)
    gap = d_r - d_l
    q_r, ok_r = _safe_div(gap, d_r - slope)
    q_l, ok_l = _safe_div(gap, slope - d_l)
    r2 = jnp.where(ok_r & ok_l, jnp.maximum(jnp.abs(q_r), jnp.abs(q_l)), linear_or_none)
    r2 = jnp.where(curved, r2, jnp.where(monotonic, linear_or_none, -jnp.inf))
    r = jnp.maximum(r_min, jnp.maximum(r1, r2))
    return jnp.where(monotonic | curved, r, r_min)


def _rational_cubic(x, x_l, x_r, y_l, y_r, d_l, d_r, second, fit_right, prefer_shape):
    """Delbourgo–Gregory rational cubic through (x_l, y_l), (x_r, y_r) with end slopes d_l, d_r,
    its control parameter fitting the second derivative ``second`` at the right (or left) end,
    and at least the shape-preserving minimum."""
    r_min, r_max = _control_limits(x.dtype)
    width = x_r - x_l
    slope = (y_r - y_l) / width
    num = 0.5 * width * second + (d_r - d_l)
    den = jnp.where(fit_right, d_r - slope, slope - d_l)
    r, den_ok = _safe_div(num, den)
    r = jnp.where(num == 0, 0.0, jnp.where(den_ok, r, jnp.where(num > 0, r_max, r_min)))
    r = jnp.maximum(r, _minimum_control(d_l, d_r, slope, prefer_shape))
    t = (x - x_l) / width
    omt = 1.0 - t
    cubic = ((y_r * t * t * t + (r * y_r - width * d_r) * t * t * omt
              + (r * y_l + width * d_l) * t * omt * omt + y_l * omt * omt * omt)
             / (1.0 + (r - 3.0) * t * omt))
    return jnp.where(r >= r_max, y_r * t + y_l * omt, cubic)


_LOWER_MAP = float(2.0 * np.pi / np.sqrt(27.0))
_SQRT_3 = float(np.sqrt(3.0))


def _outer_maps(x, s, low):
    """Jäckel's transformed branches at the outer node s and their first two beta-derivatives.

    Low: ``f = 2 pi/sqrt27 |x| Phi(-z)^3`` with ``z = |x|/(sqrt3 s)``; high: ``f = Phi(-s/2)``.
    Both need one ``Phi(-a) = phi(a) Y(-a)`` and three exponentials, so each lane evaluates
    them once on its own branch's arguments.
    """
    ax = -x
    ss = s * s
    z = ax / (_SQRT_3 * s)
    y = z * z
    w = (x / s) ** 2
    ratio = (0.5 * SQRT_2PI) * _erfcx_nonneg(SQRT_HALF * jnp.where(low, z, 0.5 * s))
    e1 = jnp.exp(jnp.where(low, -0.5 * y, -0.125 * ss))
    e2 = jnp.exp(jnp.where(low, 0.125 * ss, 0.5 * w))
    e3 = jnp.exp(jnp.where(low, 1.5 * y + 0.25 * ss, w + 0.125 * ss))
    cdf = SQRT_2PI_INV * e1 * ratio
    f_low = _LOWER_MAP * ax * cdf * cdf * cdf
    d1_low = y * ratio * ratio * e2
    d2_low = (float(np.pi / 6.0) * SQRT_2PI_INV * y / (ss * s) * ratio * e3
              * (8.0 * _SQRT_3 * s * ax + (3.0 * ss * (ss - 8.0) - 8.0 * x * x) * ratio))
    d1_high = -0.5 * e2
    d2_high = (0.5 * SQRT_2PI) * e3 * w / s
    return (jnp.where(low, f_low, cdf), jnp.where(low, d1_low, d1_high),
            jnp.where(low, d2_low, d2_high))


def _initial_guess(x, beta, b_max):
    """Initial s, objective region and bracket from Jäckel's four-segment interpolation.

    Nodes: 0, s_l, s_c = sqrt(2|x|), s_u (where the inflection tangent meets 0 and b_max).
    Between s_l and s_u, s(beta) is a rational cubic; below s_l and above s_u the transformed
    maps are interpolated and inverted through the inverse normal CDF. Each lane evaluates
    one price (at s_l or s_u, whichever side of b_c its beta lies on), one rational cubic,
    one erfcx and one inverse normal CDF.
    """
    ax = -x
    root = jnp.sqrt(ax)
    s_c = SQRT_2 * root
    e_c = _erfcx_nonneg(root)  # b_c = b_max (1 - erfcx(sqrt|x|)) / 2, no cancellation issue
    b_c = 0.5 * b_max * (1.0 - e_c)
    v_c = SQRT_2PI_INV * b_max
    s_l = s_c - (0.5 * SQRT_2PI) * (1.0 - e_c)  # s_c - b_c / v_c
    s_u = s_c + (0.5 * SQRT_2PI) * (1.0 + e_c)  # s_c + (b_max - b_c) / v_c
    below = beta < b_c
    has_low = s_l > 0
    s_o = jnp.where(below, jnp.where(has_low, s_l, 1.0), s_u)
    b_o, _, gauss = _cheap_call_otm(x, s_o, b_max)
    b_o = jnp.where(below & ~has_low, 0.0, b_o)
    inv_v_o = SQRT_2PI / gauss
    low = below & (beta < b_o)
    high = ~below & (beta > b_o)
    outer = low | high
    f_o, d1_o, d2_o = _outer_maps(x, s_o, low)
    inv_v_c = 1.0 / v_c
    # segment end points: low [0, b_l], mid-low [b_l, b_c], mid-high [b_c, b_u], high [b_u, b_max]
    x_l = jnp.where(below, jnp.where(low, 0.0, b_o), jnp.where(high, b_o, b_c))
    x_r = jnp.where(below, jnp.where(low, b_o, b_c), jnp.where(high, b_max, b_o))
    y_l = jnp.where(below, jnp.where(low, 0.0, s_o), jnp.where(high, f_o, s_c))
    y_r = jnp.where(below, jnp.where(low, f_o, s_c), jnp.where(high, 0.0, s_o))
    d_l = jnp.where(below, jnp.where(low, 1.0, inv_v_o), jnp.where(high, d1_o, inv_v_c))
    d_r = jnp.where(below, jnp.where(low, d1_o, inv_v_c), jnp.where(high, -0.5, inv_v_o))
    second = jnp.where(outer, d2_o, 0.0)
    f = _rational_cubic(beta, x_l, x_r, y_l, y_r, d_l, d_r, second, below, outer)
    # roundoff fallbacks (extreme |x|): quadratics through the end values and the known slope
    t = (beta - x_l) / (x_r - x_l)
    quad_low = (f_o * t + b_o * (1.0 - t)) * t
    quad_high = (f_o * (1.0 - t) + 0.5 * (b_max - b_o) * t) * (1.0 - t)
    bad = ~(f > 0)
    f = jnp.where(low & bad, quad_low, jnp.where(high & bad, quad_high, f))
    ax_safe = jnp.where(ax > 0, ax, 1.0)
    q = jnp.where(low, jnp.cbrt(f / (_LOWER_MAP * ax_safe)), jnp.where(high, f, 0.25))
    n = ndtri(q)
    s0 = jnp.where(low, ax / (_SQRT_3 * jnp.abs(n)), jnp.where(high, -2.0 * n, f))
    lo = jnp.where(below, jnp.where(low, 0.0, s_o), jnp.where(high, s_o, s_c))
    hi = jnp.where(below, jnp.where(low, s_o, s_c), jnp.where(high, jnp.inf, s_o))
    region = jnp.where(low, 0, jnp.where(high & (beta > 0.5 * b_max), 2, 1))
    return _safeguard(s0, lo, hi), region, lo, hi


def _stage(fn, *operands):
    """Run ``fn(*operands)`` as its own XLA computation (a conditional that always runs ``fn``).

    XLA's CPU fusion otherwise merges the guess, the step and the final full-precision step
    into fusions that recompute shared producers, which measured 2.3x slower than running the
    stages separately. The predicate is an opaque constant (through an optimisation barrier),
    so it is never batched and ``vmap`` keeps a real conditional instead of running both
    branches; the other branch returns zeros, so the stage is compiled once.
    """
    pred = jax.lax.optimization_barrier(jnp.asarray(True))
    shapes = jax.eval_shape(fn, *operands)

    def zeros(ops):  # derived from an operand, so it carries shard_map's axis types too
        zero = ops[0] * 0
        return jax.tree_util.tree_map(
            lambda a: jnp.broadcast_to(zero, a.shape).astype(a.dtype), shapes)

    return jax.lax.cond(pred, lambda ops: fn(*ops), zeros, operands)


def _solve_otm(x, beta):
    """Normalised vol s with b(x, s) = beta for x <= 0, 0 < beta < exp(x/2)."""
    b_max = jnp.exp(0.5 * x)

    def bracketing(x, beta, b_max, s, region, lo, hi):
        for _ in range(_HOUSEHOLDER_STEPS):
            b, c, gauss = _cheap_call_otm(x, s, b_max)
            lo = jnp.where(b < beta, jnp.maximum(lo, s), lo)
            hi = jnp.where(b > beta, jnp.minimum(hi, s), hi)
            s_new = _step(x, s, beta, b_max, region, b, c, SQRT_2PI_INV * gauss)
            s = _safeguard(s_new, lo, hi)
        return s

    def final(x, beta, b_max, s, region):
        b, c, gauss = _call_otm_parts(x, s)
        return _step(x, s, beta, b_max, region, b, c, SQRT_2PI_INV * gauss, final=True)

    s, region, lo, hi = _stage(_initial_guess, x, beta, b_max)
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


_CPU_BLOCK = 4096  # lanes per block on CPU: keeps the long elementwise chain in cache


def _blockwise(kernel, *arrays):
    """Apply an elementwise kernel in cache-sized blocks on CPU (one fused pass elsewhere).

    XLA on CPU materialises the many intermediates of the solver as full-size arrays; running
    it over blocks of 4,096 lanes (:func:`jaxvol._edge.blockwise`: a loop of dynamic slices,
    no padded copies of the inputs) keeps them in cache. On accelerators the whole batch goes
    through at once.
    """
    return blockwise(kernel, *arrays, block=_CPU_BLOCK)


def _implied_vol_primal(price, forward, strike, expiry, discount, theta):
    return _blockwise(_implied_vol_kernel, price, forward, strike, expiry, discount, theta)


def _implied_vol_kernel(price, forward, strike, expiry, discount, theta):
    status, intrinsic = _black_status(price, forward, strike, expiry, discount, theta)
    ok = status == IVStatus.OK
    f = jnp.where(ok, forward, 1.0)
    k = jnp.where(ok, strike, 1.0)
    d = jnp.where(ok, discount, 1.0)
    t = jnp.where(ok, expiry, 1.0)
    x = -jnp.abs(log_positive(f / k))
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
    return _jitted_black(*_array_likes(price, forward, strike, expiry, is_call, discount))


@jax.jit
def _jitted_black(price, forward, strike, expiry, is_call, discount):
    vol, status = _implied_vol(*_broadcast_inputs(price, forward, strike, expiry, is_call, discount))
    return ImpliedVol(vol=vol, status=status)


def _array_likes(*values):
    """Lists and tuples become arrays (jit takes arrays and scalars; scalars stay weakly typed).

    The entry points are jitted so that eager callers compile one program per shape rather
    than every primitive separately.
    """
    return [np.asarray(v) if isinstance(v, (list, tuple)) else v for v in values]


# --------------------------------------------------------------------------------------------
# Bachelier (normal) implied volatility
# --------------------------------------------------------------------------------------------
def _solve_bachelier_u(ratio):
    """u > 0 with psi(u)/u = ratio (psi(u) = phi(u) - u Phi(-u)), monotone decreasing in u."""
    # initial guess: large ratio -> u ~ 1/(sqrt(2pi) ratio + 1/2); small ratio -> asymptotic
    # psi(u)/u ~ phi(u)/u^3 solved by fixed point.
    u_small = 1.0 / (SQRT_2PI * ratio + 0.5)
    log_ratio = log_positive(ratio)
    u_large = jnp.sqrt(jnp.maximum(-2.0 * log_ratio, 1.0))
    for _ in range(4):
        u_large = jnp.sqrt(jnp.maximum(-2.0 * (log_ratio + 3.0 * log_positive(u_large) + jnp.log(SQRT_2PI)), 1e-6))
    u = jnp.where(ratio > 0.1, u_small, u_large)

    def householder_step(_, u):  # Householder(3) on g(u) = ln psi(u) - ln u - ln ratio
        u = jnp.maximum(u, 1e-300)
        psi = normalised_bachelier_otm(u)
        tail = norm_cdf(-u)  # psi' = -Phi(-u), psi'' = phi(u)
        phi = norm_pdf(u)
        p1, p2, p3 = -tail / psi, phi / psi, -u * phi / psi
        g = log_positive(psi) - log_positive(u) - log_ratio
        g1 = p1 - 1.0 / u
        g2 = p2 - p1 * p1 + 1.0 / (u * u)
        g3 = p3 - 3.0 * p1 * p2 + 2.0 * p1**3 - 2.0 / (u * u * u)
        return u + _householder(-g / g1, g2 / g1, g3 / g1)

    return jax.lax.fori_loop(0, 6, householder_step, u)  # a loop: compiled once, not 6 times


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
    return _jitted_normal(*_array_likes(price, forward, strike, expiry, is_call, discount))


@jax.jit
def _jitted_normal(price, forward, strike, expiry, is_call, discount):
    vol, status = _implied_normal(*_broadcast_inputs(price, forward, strike, expiry, is_call, discount))
    return ImpliedVol(vol=vol, status=status)
