"""Complex arithmetic on (real, imaginary) pairs of real arrays, with vectorisable sin/cos/atan2.

Why: XLA's CPU backend evaluates complex multiply, divide, sqrt, exp and log, and real sin, cos
and atan2, through scalar library calls (measured 17-95 ns per element on the 2-core benchmark
machine, against 1-2 ns for real exp, log and arithmetic, which it vectorises). The Heston
integrand is nothing but these operations, so :mod:`jaxvol.heston.analytic` writes them on
pairs of real arrays with the polynomial kernels below, which XLA fuses and vectorises.

* ``sincos``: Cody & Waite reduction by pi/2 with the three-part constant of fdlibm
  (``e_rem_pio2``: exact products for |n| < 2^20, i.e. |x| < 1.6e6), then fdlibm's
  ``__kernel_sin`` / ``__kernel_cos`` minimax polynomials on [-pi/4, pi/4] (error < 1 ulp of
  the reduced argument). Arguments beyond 1.6e6 lose accuracy gradually; the Heston code never
  needs them where the integrand is not already below e^-40.
* ``atan2``: octant reduction and the Cephes ``atan`` rational approximation (P4/Q5 on
  |t| <= 0.66, t -> (t - 1)/(t + 1) above), about 1 ulp.
Both carry exact ``custom_jvp`` rules (cos, -sin; (x dy - y dx) / (x^2 + y^2)), so forward and
nested derivatives are those of the true functions, not of the polynomials.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["add", "atan2", "div", "exp", "exp_and_one_minus", "log1p", "mul", "scale", "sincos",
           "sqrt", "sub"]

_INV_PIO2 = 6.36619772367581382433e-01
_PIO2_1 = 1.57079632673412561417e+00  # first 33 bits of pi/2
_PIO2_2 = 6.07710050630396597660e-11  # next 33 bits
_PIO2_3 = 2.02226624871116645580e-21  # next 33 bits
_S = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
      2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
_C = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
      -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
_ATAN_P = (  # Cephes atan.c, highest power first
    -8.750608600031904122785e-01, -1.615753718733365076637e+01,
    -7.500855792314704667340e+01, -1.228866684490136173410e+02,
    -6.485021904942025371773e+01)
_ATAN_Q = (  # z^5 + ..., highest power first after the leading 1
    2.485846490142306297962e+01, 1.650270098316988542046e+02,
    4.328810604912902668951e+02, 4.853903996359136964868e+02, 1.945506571482613964425e+02)
_MOREBITS = 6.123233995736765886130e-17  # pi/2 - fl(pi/2)


def _horner(z, coefficients):
    acc = coefficients[-1]
    for c in coefficients[-2::-1]:
        acc = acc * z + c
    return acc


@jax.custom_jvp
def sincos(x):
    """(sin x, cos x) of a real array, vectorisable (module docstring)."""
    n = jnp.round(x * _INV_PIO2)
    r = ((x - n * _PIO2_1) - n * _PIO2_2) - n * _PIO2_3
    z = r * r
    s = r + r * z * _horner(z, _S)
    c = 1.0 - 0.5 * z + z * z * _horner(z, _C)
    quadrant = n - 4.0 * jnp.floor(0.25 * n)  # n mod 4 in {0, 1, 2, 3}
    swap = (quadrant == 1.0) | (quadrant == 3.0)
    sin = jnp.where(swap, c, s)
    cos = jnp.where(swap, s, c)
    sin = jnp.where(quadrant >= 2.0, -sin, sin)
    cos = jnp.where((quadrant == 1.0) | (quadrant == 2.0), -cos, cos)
    return sin, cos


@sincos.defjvp
def _sincos_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    s, c = sincos(x)
    return (s, c), (c * dx, -s * dx)


@jax.custom_jvp
def atan2(y, x):
    """Principal argument of x + i y in (-pi, pi], vectorisable (module docstring)."""
    ax, ay = jnp.abs(x), jnp.abs(y)
    swap = ay > ax
    big = jnp.maximum(ax, ay)
    t = jnp.minimum(ax, ay) / jnp.where(big > 0, big, 1.0)  # in [0, 1]
    upper = t > 0.66
    t = jnp.where(upper, (t - 1.0) / (t + 1.0), t)
    z = t * t
    atan = t + t * z * _horner(z, _ATAN_P[::-1]) / _horner(z, _ATAN_Q[::-1] + (1.0,))
    atan = jnp.where(upper, (0.25 * math.pi + 0.5 * _MOREBITS) + atan, atan)
    angle = jnp.where(swap, (0.5 * math.pi + _MOREBITS) - atan, atan)
    angle = jnp.where(x < 0, (math.pi + 2.0 * _MOREBITS) - angle, angle)
    return jnp.where(y < 0, -angle, angle)


@atan2.defjvp
def _atan2_jvp(primals, tangents):
    (y, x), (dy, dx) = primals, tangents
    r2 = x * x + y * y
    return atan2(y, x), (x * dy - y * dx) / jnp.where(r2 > 0, r2, 1.0)


# Complex numbers as (re, im) tuples.

def mul(a, b):
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def scale(a, s):
    return a[0] * s, a[1] * s


def add(a, b):
    return a[0] + b[0], a[1] + b[1]


def sub(a, b):
    return a[0] - b[0], a[1] - b[1]


def div(a, b):
    """a / b, with b scaled by max(|re|, |im|) first so that |b|^2 cannot overflow."""
    big = jnp.maximum(jnp.abs(b[0]), jnp.abs(b[1]))
    inv_big = 1.0 / jnp.where(big > 0, big, 1.0)
    br, bi = b[0] * inv_big, b[1] * inv_big
    inv = inv_big / (br * br + bi * bi)
    return (a[0] * br + a[1] * bi) * inv, (a[1] * br - a[0] * bi) * inv


def sqrt(a):
    """Principal square root (non-negative real part)."""
    x, y = a
    ax, ay = jnp.abs(x), jnp.abs(y)
    big = jnp.maximum(ax, ay)
    safe = jnp.where(big > 0, big, 1.0)
    inv = 1.0 / safe
    modulus = safe * jnp.sqrt((ax * inv) ** 2 + (ay * inv) ** 2)
    t = jnp.sqrt(0.5 * (ax + modulus))
    half = 0.5 * ay / jnp.where(t > 0, t, 1.0)
    re = jnp.where(x >= 0, t, half)
    im = jnp.where(x >= 0, jnp.where(y < 0, -half, half), jnp.where(y < 0, -t, t))
    return re, im


def exp(a):
    magnitude = jnp.exp(a[0])
    s, c = sincos(a[1])
    return magnitude * c, magnitude * s


def exp_and_one_minus(a):
    """(e^a, 1 - e^a), the second without cancellation for small |a| (expm1 and
    cos y - 1 = -2 sin^2(y/2))."""
    s, c = sincos(0.5 * a[1])
    sin_y, cos_y_m1 = 2.0 * s * c, -2.0 * s * s
    em1 = jnp.expm1(a[0])
    magnitude = 1.0 + em1
    e = (magnitude * (1.0 + cos_y_m1), magnitude * sin_y)
    return e, (-(em1 * (1.0 + cos_y_m1) + cos_y_m1), -e[1])


def log1p(a):
    """Principal log(1 + a), accurate for small |a|."""
    x, y = a
    re = 0.5 * jnp.log1p(x * (2.0 + x) + y * y)
    return re, atan2(y, 1.0 + x)
