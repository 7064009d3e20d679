"""Constant-maturity interpolation of model-free variance across expiries.

Total variance ``T * sigma^2`` is interpolated linearly in time to expiry measured in minutes, as
in the Cboe VIX methodology; the result is annualised again at the target tenor. Between two
expiries that bracket the target this is the Cboe formula

    sigma_target^2 = [T1 s1^2 (N2 - Nt)/(N2 - N1) + T2 s2^2 (Nt - N1)/(N2 - N1)] * N365 / Nt.

Outside the quoted range the same straight line through the nearest two expiries is used (Cboe
does the same when a weekly expiry is missing: the weights simply leave [0, 1]).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvol._edge import edge
from jaxvol.status import domain_status

__all__ = ["MINUTES_PER_YEAR", "MINUTES_30_DAYS", "TermStatus", "TermStructure",
           "interpolate_variance", "variance_to_index", "term_structure",
           "term_structure_status"]

TermStatus = domain_status("TermStatus", "indices", {
    "OK": 0,                    # the tenor lies between two quoted expiries
    "TOO_FEW_POINTS": 4,        # fewer than two valid expiries: NaN
    "EXTRAPOLATED": 34,         # outside the quoted expiries: the Cboe straight line (a value)
    "NEGATIVE_VARIANCE": 35,    # the extrapolated total variance is negative: NaN
}, "Outcome of each constant-maturity value (jaxvol.status numbering).")

MINUTES_PER_YEAR = 525_600.0
"""N365: minutes in a 365-day year, the Cboe time unit."""

MINUTES_30_DAYS = 43_200.0
"""N30: the VIX target tenor in minutes."""


@edge
def interpolate_variance(near_minutes, near_variance, next_minutes, next_variance,
                         target_minutes=MINUTES_30_DAYS):
    """Annualised variance at ``target_minutes`` from two expiries (the Cboe 30-day rule).

    ``*_variance`` are annualised (sigma^2 per year); minutes are times to expiry. Broadcasts;
    returns the dtype of ``near_variance``.
    """
    dtype = jnp.result_type(near_variance)
    n1, n2, nt = (jnp.asarray(m).astype(dtype) for m in (near_minutes, next_minutes,
                                                          target_minutes))
    total1 = near_variance * n1 / MINUTES_PER_YEAR
    total2 = jnp.asarray(next_variance).astype(dtype) * n2 / MINUTES_PER_YEAR
    weight1 = (n2 - nt) / (n2 - n1)
    total = total1 * weight1 + total2 * (1.0 - weight1)
    return total * MINUTES_PER_YEAR / nt


@edge
def variance_to_index(variance):
    """Index level 100 * sqrt(variance), NaN for a negative or NaN variance (gradient-safe)."""
    ok = variance >= 0
    return jnp.where(ok, 100.0 * jnp.sqrt(jnp.where(ok, variance, 1.0)), jnp.nan)


def _term_structure_lane(minutes, variance, valid, target_minutes):
    """One underlying: minutes/variance/valid [expiries], target_minutes [targets]."""
    dtype = variance.dtype
    key = jnp.where(valid & jnp.isfinite(variance), minutes, jnp.inf)
    order = jnp.argsort(key)
    minutes_sorted, variance_sorted = minutes[order], variance[order]
    count = jnp.sum(jnp.isfinite(key), dtype=jnp.int32)
    # Upper bracketing expiry: first quoted expiry at or after the target, kept inside [1, count-1]
    upper = jnp.searchsorted(minutes_sorted, target_minutes, side="left").astype(jnp.int32)
    upper = jnp.clip(upper, 1, jnp.maximum(count - 1, 1))
    lower = upper - 1
    result = interpolate_variance(minutes_sorted[lower], variance_sorted[lower],
                                  minutes_sorted[upper], variance_sorted[upper],
                                  target_minutes.astype(dtype))
    return jnp.where(count >= 2, result, jnp.nan)


@jax.jit
def term_structure(minutes, variance, valid, target_minutes):
    """Constant-maturity annualised variances of many underlyings at many tenors.

    Args:
      minutes: ``[..., expiries]`` minutes to each expiry (any order).
      variance: ``[..., expiries]`` annualised model-free variance of each expiry.
      valid: ``[..., expiries]`` bool, False for padding or failed expiries.
      target_minutes: ``[targets]`` tenors, e.g. 9 days to 1 year in minutes.

    Returns ``[..., targets]`` annualised variances (NaN where fewer than two valid expiries),
    linear in total variance between the bracketing expiries, extrapolated linearly from the
    nearest two outside the quoted range.
    """
    dtype = jnp.result_type(variance)
    lane = jnp.vectorize(_term_structure_lane, signature="(e),(e),(e),(q)->(q)")
    return lane(jnp.asarray(minutes).astype(dtype), variance, jnp.asarray(valid),
                jnp.asarray(target_minutes).astype(dtype))


class TermStructure(NamedTuple):
    """Constant-maturity values with a status per tenor (``[..., targets]`` each)."""

    variance: jax.Array   # annualised variance (NaN where not computable)
    index: jax.Array      # 100 sqrt(variance), vol points
    status: jax.Array     # int32 TermStatus


def _status_lane(minutes, variance, valid, target_minutes):
    usable = valid & jnp.isfinite(variance)
    count = jnp.sum(usable, dtype=jnp.int32)
    first = jnp.min(jnp.where(usable, minutes, jnp.inf))
    last = jnp.max(jnp.where(usable, minutes, -jnp.inf))
    inside = (target_minutes >= first) & (target_minutes <= last)
    return count, inside


@jax.jit
def term_structure_status(minutes, variance, valid, target_minutes) -> TermStructure:
    """:func:`term_structure` with a status per value and the index in vol points.

    OK between two quoted expiries; EXTRAPOLATED outside them (the Cboe straight line in total
    variance through the nearest two, kept when positive); NEGATIVE_VARIANCE (NaN) where that
    line gives a negative total variance (an upward term structure extrapolated to a short
    tenor), TOO_FEW_POINTS (NaN) with fewer than two valid expiries. Never 0.0 for a value that
    cannot be computed.
    """
    annual = term_structure(minutes, variance, valid, target_minutes)
    dtype = annual.dtype
    lane = jnp.vectorize(_status_lane, signature="(e),(e),(e),(q)->(),(q)")
    count, inside = lane(jnp.asarray(minutes).astype(dtype), jnp.asarray(variance, dtype),
                         jnp.asarray(valid), jnp.asarray(target_minutes).astype(dtype))
    enough = (count >= 2)[..., None]
    status = jnp.where(inside, TermStatus.OK, TermStatus.EXTRAPOLATED)
    status = jnp.where(annual < 0, TermStatus.NEGATIVE_VARIANCE, status)
    status = jnp.where(enough & jnp.isfinite(annual), status, TermStatus.TOO_FEW_POINTS)
    value = jnp.where((status == TermStatus.OK) | (status == TermStatus.EXTRAPOLATED), annual,
                      jnp.nan)
    return TermStructure(value, variance_to_index(value), status.astype(jnp.int32))
