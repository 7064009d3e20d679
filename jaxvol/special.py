"""Special functions at full double precision: erfcx, the normal CDF, Mills-ratio helpers.

JAX has no ``erfcx`` and its ``ndtr`` loses relative accuracy in the far left tail because
``exp(-z**2/2)`` amplifies the rounding error of ``z**2``. These are elementwise, jit/vmap-safe
functions that keep ~1e-16 relative accuracy:

* :func:`erfcx` follows W. J. Cody, "Rational Chebyshev approximations for the error function",
  Math. Comp. 23 (1969) 631-638 (the published coefficients of his CALERF routine).
* :func:`norm_cdf` uses ``erfc(y) = erfcx(y) * exp(-y**2)`` with Cody's split of ``y**2`` into an
  exactly representable part and a small remainder, so that the exponential is accurate.
* :func:`mills_complement` returns ``1 + h*Y(h)`` with ``Y(h) = Phi(h)/phi(h)`` for ``h <= 0``
  without cancellation (Laplace's continued fraction in the tail).

All functions return the dtype of their input (float32 or float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvol._edge import edge

__all__ = ["SQRT_2", "SQRT_2PI", "SQRT_2PI_INV", "SQRT_HALF", "SQRT_PI_INV", "erfcx",
           "exp_minus_half_square", "exp_minus_square", "log_positive", "mills_complement",
           "mills_complement_given_ratio", "mills_ratio_left", "norm_cdf", "norm_pdf", "opaque",
           "split_exp"]

SQRT_PI_INV = 0.56418958354775628695  # 1/sqrt(pi)
SQRT_2PI_INV = 0.39894228040143267794  # 1/sqrt(2 pi)
SQRT_2PI = 2.50662827463100050242
SQRT_HALF = 0.70710678118654752440
SQRT_2 = 1.41421356237309504880

# Cody (1969) coefficients, as published in CALERF.
_A = (3.1611237438705656, 113.864154151050156, 377.485237685302021, 3209.37758913846947,
      0.185777706184603153)
_B = (23.6012909523441209, 244.024637934444173, 1282.61652607737228, 2844.23683343917062)
_C = (0.564188496988670089, 8.88314979438837594, 66.1191906371416295, 298.635138197400131,
      881.95222124176909, 1712.04761263407058, 2051.07837782607147, 1230.33935479799725,
      2.15311535474403846e-8)
_D = (15.7449261107098347, 117.693950891312499, 537.181101862009858, 1621.38957456669019,
      3290.79923573345963, 4362.61909014324716, 3439.36767414372164, 1230.33935480374942)
_P = (0.305326634961232344, 0.360344899949804439, 0.125781726111229246, 0.0160837851487422766,
      6.58749161529837803e-4, 0.0163153871373020978)
_Q = (2.56852019228982242, 1.87295284992346047, 0.527905102951428412, 0.0605183413124413191,
      0.00233520497626869185)
_THRESH = 0.46875


def _erf_small(y):
    """erf(y) for |y| <= 0.46875 (Cody's first rational approximation)."""
    ysq = y * y
    num = _A[4] * ysq
    den = ysq
    for i in range(3):
        num = (num + _A[i]) * ysq
        den = (den + _B[i]) * ysq
    return y * (num + _A[3]) / (den + _B[3])


def _erfcx_mid(y):
    """erfcx(y) for 0.46875 < y <= 4."""
    num = _C[8] * y
    den = y
    for i in range(7):
        num = (num + _C[i]) * y
        den = (den + _D[i]) * y
    return (num + _C[7]) / (den + _D[7])


def _cody_large_remainder(y):
    """r(y) in Cody's large-argument form erfcx(y) = (1/sqrt(pi) - r(y))/y, y > 4."""
    ysq = 1.0 / (y * y)
    num = _P[5] * ysq
    den = ysq
    for i in range(4):
        num = (num + _P[i]) * ysq
        den = (den + _Q[i]) * ysq
    return ysq * (num + _P[4]) / (den + _Q[4])


def _erfcx_large(y):
    """erfcx(y) for y > 4 (asymptotic rational form, no exponential)."""
    return (SQRT_PI_INV - _cody_large_remainder(y)) / y


def opaque(value):
    """``value`` unchanged, hidden from XLA's algebraic rewrites (a no-op ``max``).

    Under ``jit`` XLA rewrites ``exp(a) * exp(b)`` into ``exp(a + b)`` and, on CPU, contracts
    ``a * b + c`` into a fused multiply-add. Both undo the point of a split exponential or of
    an error-free product (the rounding of ``a + b`` or of ``a * b`` is what they avoid or
    measure), so such a factor or product passes through this first.
    """
    return jnp.maximum(value, jnp.finfo(jnp.result_type(value)).min)


def split_exp(z, k):
    """exp(k z**2) (k < 0, or k > 0 below overflow), accurate to a few ulp for large |z| (Cody's split of z**2: an
    exactly squared high part and a small rest). ``k`` may be an array (one call serves lanes
    that need different k)."""
    z = jnp.abs(z)
    hi = jnp.trunc(z * 16.0) / 16.0
    rest = (z - hi) * (z + hi)
    return opaque(jnp.exp(k * hi * hi)) * jnp.exp(k * rest)  # not fused into exp(k z^2)


def exp_minus_square(y):
    """exp(-y**2) accurate to a few ulp for large |y|."""
    return split_exp(y, -1.0)


def exp_minus_half_square(z):
    """exp(-z**2/2) accurate to a few ulp for large |z|."""
    return split_exp(z, -0.5)


def _erfcx_nonneg(y):
    """erfcx for y >= 0, elementwise; every branch is evaluated at a safe argument."""
    small = y <= _THRESH
    large = y > 4.0
    y_small = jnp.where(small, y, 0.0)
    y_mid = jnp.clip(y, _THRESH, 4.0)
    y_large = jnp.where(large, y, 5.0)
    v_small = jnp.exp(y_small * y_small) * (1.0 - _erf_small(y_small))
    return jnp.where(small, v_small, jnp.where(large, _erfcx_large(y_large), _erfcx_mid(y_mid)))


@edge
def erfcx(x):
    """Scaled complementary error function ``exp(x**2) * erfc(x)``, elementwise.

    Relative accuracy about 1e-16 in float64 for all x (Cody 1969); overflows to ``inf`` for
    ``x < -26.6`` as the true value does.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    pos = _erfcx_nonneg(jnp.abs(x))
    neg_x = jnp.where(x < 0, x, 0.0)
    big = 2.0 / exp_minus_square(neg_x)
    return jnp.where(x < 0, big - pos, pos)


@edge
def norm_pdf(z):
    """Standard normal density."""
    z = jnp.asarray(z)
    return SQRT_2PI_INV * exp_minus_half_square(z)


@edge
def norm_cdf(z):
    """Standard normal CDF with full relative accuracy in the left tail (to ~1e-16)."""
    z = jnp.asarray(z)
    y = -z * SQRT_HALF  # Phi(z) = erfc(y)/2
    ay = jnp.abs(y)
    # erfc(|y|)/2 = erfcx(|y|) exp(-z**2/2)/2; the exponential is split on z itself (not on the
    # rounded y) so that the rounding of z/sqrt(2) is not amplified by z**2.
    tail = 0.5 * _erfcx_nonneg(ay) * exp_minus_half_square(z)
    y_small = jnp.where(ay <= _THRESH, y, 0.0)
    centre = 0.5 - 0.5 * _erf_small(y_small)
    return jnp.where(ay <= _THRESH, centre, jnp.where(y > 0, tail, 1.0 - tail))


@edge
def mills_ratio_left(h):
    """``Y(h) = Phi(h)/phi(h)`` (the Mills ratio of ``-h``), accurate for all h."""
    return (0.5 * SQRT_2PI) * erfcx(-SQRT_HALF * jnp.asarray(h))


_MILLS_CHEB = (
    0.85962942460394249737,
    0.069345989647292270645,
    -0.012182894075608027939,
    0.0017838984105223350778,
    -0.00022707915219865895685,
    0.000025158422554210194922,
    -2.3255293824065513145e-6,
    1.4967322039826027868e-7,
    1.5759813131232064054e-9,
    -2.781638690255472964e-9,
    6.4528858587895709822e-10,
    -1.1165075343196370564e-10,
    1.6820530896567029394e-11,
    -2.3233170614426009362e-12,
    3.0141786134174698728e-13,
    -3.723174571448166181e-14,
    4.4162192177534670217e-15,
    -5.0595251142855639988e-16,
    5.6223708044182356957e-17,
    -6.0787998156613484087e-18,
    6.3457918830596850508e-19,
)


def _clenshaw(coefs, u):
    """Chebyshev series sum_j c_j T_j(u) by Clenshaw's recurrence."""
    b1 = jnp.zeros_like(u)
    b2 = jnp.zeros_like(u)
    for c in coefs[:0:-1]:
        b1, b2 = 2.0 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coefs[0]


@edge
def mills_complement(h):
    """``a(h) = 1 + h*Y(h)`` for ``h <= 0`` without harmful cancellation.

    With y = -h/sqrt(2) > 4, Cody's large-argument form ``erfcx(y) = (1/sqrt(pi) - r(y))/y``
    gives ``a = sqrt(pi) * r(y)`` exactly, with no subtraction at all; a Chebyshev series
    covers 3 <= -h <= 5.66 and the direct form the rest.
    """
    h = jnp.asarray(h)
    h_direct = jnp.where(h > -3.0, h, 0.0)
    return mills_complement_given_ratio(h, mills_ratio_left(h_direct))


def mills_complement_given_ratio(h, ratio):
    """``1 + h*Y(h)`` for ``h <= 0`` as :func:`mills_complement`, given ``ratio = Y(h)``.

    ``ratio`` is used only where ``-h < 3`` (callers that already hold ``Y(h)`` save an erfcx).
    """
    y = -SQRT_HALF * h
    large = y > 4.0
    y_large = jnp.where(large, y, 5.0)
    a_large = (1.0 / SQRT_PI_INV) * _cody_large_remainder(y_large)
    # 3 <= -h <= 5.66: a Chebyshev series of a(z) z^2 (scripts/gen_mills_chebyshev.py, 50-digit
    # mpmath values; the neglected coefficients are below 1e-20).
    z = -h
    middle = (~large) & (z >= 3.0)
    z_mid = jnp.clip(z, 3.0, 4.0 / SQRT_HALF)
    u = (2.0 * z_mid - (3.0 + 4.0 / SQRT_HALF)) / (4.0 / SQRT_HALF - 3.0)
    a_middle = _clenshaw(_MILLS_CHEB, u) / (z_mid * z_mid)
    # -h < 3: the direct form loses at most one digit (a(-3) = 0.086).
    direct = z < 3.0
    a_direct = 1.0 + jnp.where(direct, h, 0.0) * jnp.where(direct, ratio, 0.0)
    a_direct = jnp.where(middle, a_middle, a_direct)
    return jnp.where(large, a_large, a_direct)


# fdlibm e_log.c (Sun Microsystems, 1993): log(1+f) = f - hfsq + s (hfsq + R(z)), s = f/(2+f)
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)


@jax.custom_jvp
def log_positive(x):
    """Natural logarithm, elementwise, written in jnp operations so that XLA vectorises it.

    XLA's CPU backend calls a scalar ``log`` for float64 (about 13 ns per lane where numpy's is
    2.6 ns); this is fdlibm's algorithm (error below 1 ulp): ``x = 2^k (1 + f)`` with
    ``sqrt(2)/2 <= 1 + f < sqrt(2)`` from the bits, then ``log(1+f)`` from a degree-14 minimax
    polynomial in ``s = f/(2+f)``. Special inputs are selected per lane: ``+inf`` gives
    ``+inf``, negative numbers and NaN give NaN, zero and subnormals ``-inf`` (XLA's CPU code
    flushes subnormals to zero, so ``jnp.log`` returns ``-inf`` for them too). float32 inputs
    use ``jnp.log``.
    """
    if isinstance(x, (int, float)) or jnp.result_type(x) != jnp.float64:
        return jnp.log(x)  # Python scalars stay weakly typed; float32 is vectorised already
    x = jnp.asarray(x)
    normal = (x >= 2.2250738585072014e-308) & (x < jnp.inf)
    xs = jnp.where(normal, x, 1.0)
    bits = jax.lax.bitcast_convert_type(xs, jnp.int64)
    # shift the mantissa range to [sqrt(2)/2, sqrt(2)): add the offset of sqrt(2)/2's bits
    shifted = bits + (0x3FF0000000000000 - 0x3FE6A09E667F3BCD)
    k = (shifted >> 52) - 1023
    mant = jax.lax.bitcast_convert_type(
        (shifted & 0x000FFFFFFFFFFFFF) + 0x3FE6A09E667F3BCD, jnp.float64)
    f = mant - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG[1] + w * (_LG[3] + w * _LG[5]))
    t2 = z * (_LG[0] + w * (_LG[2] + w * (_LG[4] + w * _LG[6])))
    r = t2 + t1
    hfsq = 0.5 * f * f
    dk = k.astype(jnp.float64)
    value = dk * _LN2_HI - ((hfsq - (s * (hfsq + r) + dk * _LN2_LO)) - f)
    special = jnp.where(x == jnp.inf, jnp.inf, jnp.where(x >= 0, -jnp.inf, jnp.nan))
    return jnp.where(normal, value, special)


@log_positive.defjvp
def _log_positive_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return log_positive(x), dx / x
