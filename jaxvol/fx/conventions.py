"""FX delta and ATM conventions: deltas, strike from delta, ATM strikes.

Notation (all per unit of foreign notional, prices in domestic currency):

* ``spot`` S, continuously compounded domestic/foreign rates ``rd``/``rf``, ``expiry`` T in
  years (drives the total standard deviation ``s = vol * sqrt(T)``), ``delivery`` T_d in years
  (drives discounting and the forward ``F = S exp((rd - rf) T_d)``; defaults to ``expiry``).
* ``phi`` = +1 for calls and -1 for puts; ``d1 = (ln(F/K) + s^2/2)/s``, ``d2 = d1 - s``.

Deltas (Wystup, "FX Options and Structured Products", ch. 1; Reiswich & Wystup 2010):

=============  ==========================================
``spot``        phi Df N(phi d1)
``forward``     phi N(phi d1)
``spot_pa``     phi Df (K/F) N(phi d2)
``forward_pa``  phi (K/F) N(phi d2)
=============  ==========================================

Without premium adjustment the strike for a delta is closed-form. With premium adjustment the
call delta rises from 0 (K -> 0) to a maximum and falls back to 0 (K -> inf): the market's
strike is the root on the right of the maximum, and a requested delta above the maximum has no
such strike (NaN and :attr:`StrikeStatus.BEYOND_MAX_DELTA`). The root is found in the variable
d2, where the premium-adjusted delta is monotone on a known bracket and ``log delta`` is concave,
by a fixed number of safeguarded Newton steps (so the function vmaps with fixed work per lane);
gradients follow from the implicit-function theorem (one Newton step on the converged root).

To use discount factors instead of rates, convert with :func:`rate_from_discount`.
"""

from __future__ import annotations

import enum
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol._dtypes import as_float, float_dtype
from jaxvol.fx._math import log_norm_cdf, norm_cdf, norm_ppf
from jaxvol.status import domain_status

__all__ = ["atm_log_moneyness", "atm_strike", "AtmType", "bracketed_newton", "delta",
           "delta_from_moneyness", "DeltaType", "forward_rate_terms", "implicit_root",
           "is_premium_adjusted", "is_spot_delta", "max_call_delta_pa", "max_delta_d2",
           "parse_atm_type", "parse_delta_type", "rate_from_discount", "strike_from_delta",
           "StrikeFromDelta", "StrikeStatus"]

_LOG_SQRT_2PI = 0.9189385332046727
# Safeguarded Newton steps (fixed, so lanes vmap with fixed work). In a 20,000-lane sweep over
# s in [0.01, 1.5] and deltas up to 1 - 1e-12 of the maximum, the PA maximum converged in <= 10
# steps, PA call strikes in <= 6 and PA put strikes in <= 10 (to 1e-14 in ln K, or to the
# ~1e-10 floor set by rounding next to the maximum).
_MAX_ITERATIONS = 12
_PA_ITERATIONS = 12


class DeltaType(enum.IntEnum):
    """Delta convention: spot or forward, with or without premium adjustment."""

    SPOT = 0
    FORWARD = 1
    SPOT_PA = 2
    FORWARD_PA = 3


class AtmType(enum.IntEnum):
    """ATM convention: spot, forward, delta-neutral straddle (non-PA or premium-adjusted)."""

    SPOT = 0
    FORWARD = 1
    DNS = 2
    DNS_PA = 3


StrikeStatus = domain_status("StrikeStatus", "fx", {
    "OK": 0,
    "BAD_INPUT": 1,  # spot, vol or expiry not positive
    "NON_FINITE_INPUT": 2,  # a NaN or infinite input
    "DELTA_OUT_OF_RANGE": 45,  # wrong sign for the option type, zero, or |delta| >= the bound
    "BEYOND_MAX_DELTA": 46,  # premium-adjusted call delta above the maximum attainable delta
}, "Per-lane outcome of :func:`strike_from_delta` (strike is NaN unless OK; codes: "
   "jaxvol.status).")


def _parse(enum_type, value, name):
    if isinstance(value, enum_type):
        return value
    if isinstance(value, str) and value.upper() in enum_type.__members__:
        return enum_type[value.upper()]
    choices = ", ".join(repr(m.lower()) for m in enum_type.__members__)
    raise ValueError(f"unknown {name} {value!r}; expected one of {choices}")


def parse_delta_type(value) -> DeltaType:
    """``"spot"``, ``"forward"``, ``"spot_pa"``, ``"forward_pa"`` (or a :class:`DeltaType`)."""
    return _parse(DeltaType, value, "delta_type")


def parse_atm_type(value) -> AtmType:
    """``"spot"``, ``"forward"``, ``"dns"``, ``"dns_pa"`` (or an :class:`AtmType`)."""
    return _parse(AtmType, value, "atm_type")


def is_premium_adjusted(delta_type) -> bool:
    return parse_delta_type(delta_type) in (DeltaType.SPOT_PA, DeltaType.FORWARD_PA)


def is_spot_delta(delta_type) -> bool:
    return parse_delta_type(delta_type) in (DeltaType.SPOT, DeltaType.SPOT_PA)


@edge
def rate_from_discount(discount, time):
    """Continuously compounded rate of a discount factor over ``time`` years."""
    return -jnp.log(discount) / time


def forward_rate_terms(spot, rd, rf, delivery):
    """(forward, domestic discount factor, foreign discount factor) to ``delivery``."""
    return (spot * jnp.exp((rd - rf) * delivery), jnp.exp(-rd * delivery),
            jnp.exp(-rf * delivery))


def _phi(is_call, dtype):
    return jnp.where(jnp.asarray(is_call), 1.0, -1.0).astype(dtype)


# ----------------------------------------------------------------------------- delta


def delta_from_moneyness(log_moneyness, std_dev, phi, foreign_df, *, delta_type):
    """Delta from ``ln(K/F)`` and ``s``; the kernel behind :func:`delta` (scalar or broadcast)."""
    delta_type = parse_delta_type(delta_type)
    d1 = -log_moneyness / std_dev + 0.5 * std_dev
    if is_premium_adjusted(delta_type):
        value = phi * jnp.exp(log_moneyness) * norm_cdf(phi * (d1 - std_dev))
    else:
        value = phi * norm_cdf(phi * d1)
    return value * foreign_df if is_spot_delta(delta_type) else value


def _delta_kernel(strike, spot, expiry, vol, rd, rf, phi, delivery, *, delta_type):
    forward, _, foreign_df = forward_rate_terms(spot, rd, rf, delivery)
    std_dev = vol * jnp.sqrt(jnp.where(expiry > 0, expiry, 1.0))
    ok = (strike > 0) & (spot > 0) & (std_dev > 0) & (expiry > 0)
    log_moneyness = jnp.where(ok, jnp.log(jnp.where(ok, strike / forward, 1.0)), 0.0)
    value = delta_from_moneyness(log_moneyness, jnp.where(ok, std_dev, 1.0), phi, foreign_df,
                                 delta_type=delta_type)
    return jnp.where(ok, value, jnp.nan)


@edge(static=("delta_type",))
def delta(strike, *, spot, expiry, vol, rd, rf, is_call, delta_type="spot", delivery=None):
    """FX delta of a vanilla under ``delta_type`` (see the module table); broadcasts.

    Returns NaN where strike, spot, vol or expiry is not positive. Output dtype follows the
    floating inputs.
    """
    delta_type = parse_delta_type(delta_type)
    dtype = float_dtype(strike, spot, expiry, vol, rd, rf, delivery)
    args = list(as_float(dtype, strike, spot, expiry, vol, rd, rf))
    delivery = args[2] if delivery is None else as_float(dtype, delivery)[0]
    return _delta_batch(*args, _phi(is_call, dtype), delivery, delta_type=delta_type)


@functools.partial(jax.jit, static_argnames=("delta_type",))
def _delta_batch(*args, delta_type):
    return jnp.vectorize(functools.partial(_delta_kernel, delta_type=delta_type))(*args)


# --------------------------------------------------------------- bracketed root finding


def bracketed_newton(fn, lower, upper, start, iterations):
    """Root of an increasing ``fn`` (returning value, derivative) with fn(lower)<0<=fn(upper).

    Safeguarded Newton (Numerical Recipes' rtsafe) with a fixed number of steps, so it vmaps
    with fixed work per lane. Returns the last iterate (no gradient: see :func:`implicit_root`).
    """
    def step(_, state):
        low, high, x, best, best_value = state
        value, slope = fn(x)
        better = jnp.abs(value) < best_value  # rounding noise near the root: keep the best
        best, best_value = jnp.where(better, x, best), jnp.where(better, jnp.abs(value), best_value)
        low = jnp.where(value < 0, jnp.maximum(x, low), low)
        high = jnp.where(value < 0, high, jnp.minimum(x, high))
        newton = x - value / slope
        inside = (newton >= low) & (newton <= high) & jnp.isfinite(newton)
        return low, high, jnp.where(inside, newton, 0.5 * (low + high)), best, best_value

    start = jax.lax.stop_gradient(start)
    state = (lower, upper, start, start, jnp.full_like(start, jnp.inf))
    state = jax.lax.fori_loop(0, iterations, step, jax.tree.map(jax.lax.stop_gradient, state))
    return state[3]


def implicit_root(fn, root):
    """``root`` with first-order gradients of the implicit-function theorem attached.

    One Newton step from the (gradient-stopped) converged root: its value is the root, and its
    derivative with respect to anything ``fn`` closes over is -f_theta / f_x.
    """
    root = jax.lax.stop_gradient(root)
    value, slope = fn(root)
    return root - value / jax.lax.stop_gradient(slope)


# ------------------------------------------------------------ premium-adjusted maximum


def _mills_gap(d, std_dev):
    """log N(d) - log n(d) + log s: increasing in d, zero where the PA call delta peaks."""
    value = log_norm_cdf(d) + 0.5 * d * d + _LOG_SQRT_2PI + jnp.log(std_dev)
    mills = jnp.exp(-0.5 * d * d - _LOG_SQRT_2PI - log_norm_cdf(d))  # n(d)/N(d)
    return value, mills + d


def max_delta_d2(std_dev):
    """d2 at the maximum of the premium-adjusted call delta: n(d2)/N(d2) = s.

    Bracket: n(d)/N(d) > -d gives a negative gap at d = -s; n/N <= 2n on d >= 0 gives a
    non-negative gap at d = sqrt(max(-2 ln(s sqrt(2 pi)/2), 0)).
    """
    upper = jnp.sqrt(jnp.maximum(-2.0 * (jnp.log(std_dev) + _LOG_SQRT_2PI - jnp.log(2.0)), 0.0))
    lower = -std_dev
    fn = functools.partial(_mills_gap, std_dev=std_dev)
    return bracketed_newton(fn, lower, upper, 0.5 * (lower + upper), _MAX_ITERATIONS)


@edge
def max_call_delta_pa(std_dev, foreign_df=1.0):
    """Largest attainable premium-adjusted call delta (times ``foreign_df`` for spot deltas)."""
    return foreign_df * jnp.exp(_log_max_delta(std_dev)[1])


# -------------------------------------------------------------------- strike from delta


def _safe_sqrt(x):
    """sqrt(max(x, 0)) with a finite gradient at and below zero (double where)."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _pa_gap(d2, std_dev, phi, log_target, log_max):
    """Increasing gap whose root is the market's PA strike (in d2), and its derivative.

    With G(d) = log|PA forward delta| = -s d - s^2/2 + log N(phi d): puts use log t - G(d)
    (G falls monotonically); calls use sqrt(G* - log t) - sqrt(G* - G(d)) on d <= d*, where
    G* = G(d*) is the maximum: the square root turns the double root at the maximum into a
    simple one, so Newton converges quadratically even for deltas next to the maximum.
    """
    log_cdf = log_norm_cdf(phi * d2)
    log_delta = -std_dev * d2 - 0.5 * std_dev**2 + log_cdf
    slope = -std_dev + phi * jnp.exp(-0.5 * d2 * d2 - _LOG_SQRT_2PI - log_cdf)
    depth = _safe_sqrt(log_max - log_delta)
    safe_depth = jnp.maximum(depth, jnp.finfo(depth.dtype).tiny)
    call_value = _safe_sqrt(log_max - log_target) - depth
    call = (call_value, slope / (2.0 * safe_depth))
    put = (log_target - log_delta, -slope)
    return tuple(jnp.where(phi > 0, c, p) for c, p in zip(call, put))


def _pa_bracket(target, std_dev, phi, max_d2):
    """(lower, upper) in d2 with gap(lower) < 0 <= gap(upper) whenever a market root exists.

    Calls: the PA delta is below the forward delta N(d2 + s), so the non-PA d2 is below the
    root; the upper end is the maximum. Puts: |PA delta| >= exp(-s d - s^2/2)/2 for d <= 0 and
    > N(-d - s) (non-PA) give lower ends; |PA delta| <= exp(-s d - s^2/2) gives the upper end.
    """
    non_pa = phi * norm_ppf(jnp.minimum(target, 1.0 - 1e-7)) - std_dev  # puts use it for t < 1
    call_low, call_high = non_pa, max_d2
    put_bound = jnp.minimum(0.0, (-jnp.log(2.0 * target) - 0.5 * std_dev**2) / std_dev)
    put_low = jnp.where(target < 1.0, jnp.maximum(non_pa, put_bound), put_bound)
    put_high = (-jnp.log(target) - 0.5 * std_dev**2) / std_dev
    put_high = jnp.maximum(put_high, put_low)
    return jnp.where(phi > 0, call_low, put_low), jnp.where(phi > 0, call_high, put_high)


def _pa_d2(target, std_dev, phi, max_d2, log_max, iterations=_PA_ITERATIONS):
    low, high = _pa_bracket(target, std_dev, phi, max_d2)
    fn = functools.partial(_pa_gap, std_dev=std_dev, phi=phi, log_target=jnp.log(target),
                           log_max=log_max)
    return implicit_root(fn, bracketed_newton(fn, low, high, low, iterations))


def _log_max_delta(std_dev):
    """(d2 at the maximum, log of the maximum PA forward call delta)."""
    d2 = max_delta_d2(std_dev)
    return d2, -std_dev * d2 - 0.5 * std_dev**2 + log_norm_cdf(d2)


def _strike_status(finite, valid_market, in_range, below_max):
    status = jnp.where(below_max, StrikeStatus.OK, StrikeStatus.BEYOND_MAX_DELTA)
    status = jnp.where(in_range, status, StrikeStatus.DELTA_OUT_OF_RANGE)
    status = jnp.where(valid_market, status, StrikeStatus.BAD_INPUT)
    return jnp.where(finite, status, StrikeStatus.NON_FINITE_INPUT).astype(jnp.int32)


def _strike_kernel(delta, spot, expiry, vol, rd, rf, phi, delivery, *, delta_type):
    premium_adjusted = is_premium_adjusted(delta_type)
    finite = jnp.all(jnp.isfinite(jnp.stack([delta, spot, expiry, vol, rd, rf, delivery])))
    valid_market = finite & (spot > 0) & (vol > 0) & (expiry > 0)
    forward, _, foreign_df = forward_rate_terms(spot, rd, rf, delivery)
    scale = foreign_df if is_spot_delta(delta_type) else 1.0
    target = phi * delta / scale  # |forward-type delta|, positive when the sign is right
    unbounded = (phi < 0) if premium_adjusted else jnp.asarray(False)  # PA put deltas reach -inf
    in_range = valid_market & (target > 0) & (unbounded | (target < 1))
    std_dev = jnp.where(valid_market, vol * jnp.sqrt(jnp.where(valid_market, expiry, 1.0)), 0.2)
    target = jnp.where(in_range, target, 0.25)
    if premium_adjusted:
        max_d2, log_max = jax.lax.stop_gradient(_log_max_delta(std_dev))
        below_max = (phi < 0) | (jnp.log(target) <= log_max)
        target = jnp.where(below_max, target, 0.25)
        d2 = _pa_d2(target, std_dev, phi, max_d2, log_max)
    else:
        below_max = jnp.asarray(True)
        d2 = phi * norm_ppf(target) - std_dev
    ok = in_range & below_max
    strike = forward * jnp.exp(-std_dev * d2 - 0.5 * std_dev**2)
    status = _strike_status(finite, valid_market, in_range, below_max)
    return jnp.where(ok, strike, jnp.nan), status


class StrikeFromDelta(NamedTuple):
    """Strikes (NaN where no strike has the delta) and :class:`StrikeStatus` codes (int32)."""

    strike: jax.Array
    status: jax.Array


@edge(static=("delta_type",))
def strike_from_delta(delta, *, spot, expiry, vol, rd, rf, is_call, delta_type="spot",
                      delivery=None) -> StrikeFromDelta:
    """Strike with the given FX delta under ``delta_type``; broadcasts over all arguments.

    ``delta`` is signed (puts negative). Premium-adjusted calls return the root on the right of
    the delta maximum, and NaN with ``BEYOND_MAX_DELTA`` above the maximum (see
    :func:`max_call_delta_pa`). Gradients with respect to every input are the exact implicit
    derivatives.
    """
    delta_type = parse_delta_type(delta_type)
    dtype = float_dtype(delta, spot, expiry, vol, rd, rf, delivery)
    args = list(as_float(dtype, delta, spot, expiry, vol, rd, rf))
    delivery = args[2] if delivery is None else as_float(dtype, delivery)[0]
    strike, status = _strike_batch(*args, _phi(is_call, dtype), delivery, delta_type=delta_type)
    return StrikeFromDelta(strike, status)


@functools.partial(jax.jit, static_argnames=("delta_type",))
def _strike_batch(*args, delta_type):
    return jnp.vectorize(functools.partial(_strike_kernel, delta_type=delta_type))(*args)


# ------------------------------------------------------------------------------- ATM


def atm_log_moneyness(std_dev, *, atm_type, log_spot_over_forward=None):
    """ln(K_ATM / F) for the ATM convention (``spot`` needs ln(S/F))."""
    atm_type = parse_atm_type(atm_type)
    if atm_type == AtmType.SPOT:
        return log_spot_over_forward + 0.0 * std_dev
    if atm_type == AtmType.FORWARD:
        return 0.0 * std_dev
    sign = 1.0 if atm_type == AtmType.DNS else -1.0
    return sign * 0.5 * std_dev**2


@edge(static=("atm_type",))
def atm_strike(*, spot, expiry, vol, rd, rf, atm_type="dns", delivery=None):
    """ATM strike: S, F, F e^{s^2/2} (delta-neutral straddle) or F e^{-s^2/2} (DNS, PA)."""
    atm_type = parse_atm_type(atm_type)
    dtype = float_dtype(spot, expiry, vol, rd, rf, delivery)
    spot, expiry, vol, rd, rf = as_float(dtype, spot, expiry, vol, rd, rf)
    delivery = expiry if delivery is None else as_float(dtype, delivery)[0]
    forward, _, _ = forward_rate_terms(spot, rd, rf, delivery)
    std_dev = vol * jnp.sqrt(expiry)
    return forward * jnp.exp(atm_log_moneyness(std_dev, atm_type=atm_type,
                                               log_spot_over_forward=jnp.log(spot / forward)))
