"""Static no-arbitrage diagnostics of option slices, bid/ask aware, with violation sizes.

Relations per slice (on consecutive *usable* strikes K1 < K2 < K3 of the side concerned):

1. ``CALL_MONOTONIC``  C non-increasing with slope >= -D:
   size max(bid(K2) - ask(K1), bid(K1) - ask(K2) - D (K2 - K1)), at K1.
2. ``PUT_MONOTONIC``   P non-decreasing with slope <= D:
   size max(bid(K1) - ask(K2), bid(K2) - ask(K1) - D (K2 - K1)), at K1.
3. ``CALL_CONVEXITY``  bid(K2) - [l ask(K1) + (1 - l) ask(K3)], l = (K3 - K2)/(K3 - K1), at K2.
4. ``PUT_CONVEXITY``   the same for puts.
5. ``CALL_BOUNDS``     D (F - K)+ <= C <= D F: size max(D (F - K)+ - ask, bid - D F).
6. ``PUT_BOUNDS``      D (K - F)+ <= P <= D K: size max(D (K - F)+ - ask, bid - D K).
7. ``PARITY``          C - P = D (F - K): distance of D (F - K) from [bid_C - ask_P, ask_C - bid_P].
8. ``CALENDAR``        total implied variance w = sigma^2 T non-decreasing in T at fixed
   k = ln(K / F): for each strike of the earlier slice, w_bid(T1, k) - w_ask(T2, k), the later
   slice's ask variance linearly interpolated in k (only inside its strike range); OTM vols.

Every relation uses the most favourable prices inside the quoted spreads, so it is violated only
when no choice of prices within the quotes satisfies it.  Sizes are in price units (variance
units for ``CALENDAR``); sizes not above ``tolerance * D * F`` (``tolerance`` for the calendar)
count as zero, which absorbs float round-off on exactly quoted boards.  F and D are the slice's
(estimated or supplied) values; when they are unknown relations 5-8 are NaN and 1-2 check
monotonicity only.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["ArbitrageResult", "calendar_arbitrage", "Relation", "report_frame", "static_arbitrage",
           "STATIC_RELATIONS"]


class Relation(enum.IntEnum):
    """Index (0-based) of each relation in the arrays' relation axis."""

    CALL_MONOTONIC = 0
    PUT_MONOTONIC = 1
    CALL_CONVEXITY = 2
    PUT_CONVEXITY = 3
    CALL_BOUNDS = 4
    PUT_BOUNDS = 5
    PARITY = 6
    CALENDAR = 7


STATIC_RELATIONS = tuple(Relation)[:7]


class ArbitrageResult(NamedTuple):
    """Violation sizes; ``size`` is [slices, relations, strikes], the others [slices, relations].

    ``size`` holds 0 where a relation holds (or has nothing to check), the violation size where
    it fails; ``worst`` the largest size of the slice (NaN where the relation cannot be checked),
    ``count`` the number of violating strikes, ``worst_strike`` the strike of the largest one.
    """

    size: jax.Array
    worst: jax.Array
    count: jax.Array
    worst_strike: jax.Array


def static_arbitrage(strike, call_bid, call_ask, put_bid, put_ask, call_mask, put_mask,
                     forward, discount, *, tolerance: float = 1e-10) -> ArbitrageResult:
    """Relations 1-7 for a batch.

    Quotes and masks are [slices, strikes]; ``forward``/``discount`` are [slices].
    """
    kernel = jax.vmap(lambda *a: _slice_static(*a, tolerance=tolerance))
    return kernel(strike, call_bid, call_ask, put_bid, put_ask, call_mask, put_mask, forward,
                  discount)


def _slice_static(strike, call_bid, call_ask, put_bid, put_ask, call_mask, put_mask, forward,
                  discount, *, tolerance):
    known = jnp.isfinite(forward) & jnp.isfinite(discount)
    d = jnp.where(jnp.isfinite(discount), discount, 0.0)
    f = jnp.where(known, forward, 0.0)
    calls, puts = (call_bid, call_ask, call_mask), (put_bid, put_ask, put_mask)
    sizes = jnp.stack([
        _monotonic(strike, *calls, d, decreasing=True),
        _monotonic(strike, *puts, d, decreasing=False),
        _convexity(strike, *calls),
        _convexity(strike, *puts),
        _bounds(strike, *calls, d, f, is_call=True),
        _bounds(strike, *puts, d, f, is_call=False),
        _parity(strike, calls, puts, d, f)])
    sizes = jnp.where(sizes > tolerance * jnp.where(known, d * f, 1.0), sizes, 0.0)
    checkable = jnp.array([True] * 4 + [False] * 3) | known
    return _summarise(sizes, strike, checkable)


def _summarise(sizes, strike, checkable):
    worst_at = jnp.argmax(sizes, axis=-1)
    worst = jnp.where(checkable, jnp.max(sizes, axis=-1), jnp.nan)
    count = jnp.sum(sizes > 0, axis=-1).astype(jnp.int32)
    return ArbitrageResult(sizes, worst, count, jnp.where(worst > 0, strike[worst_at], jnp.nan))


def _compact(mask, *arrays):
    """Usable entries moved to the front in strike order; returns (positions, count, arrays)."""
    n = mask.shape[0]
    order = jnp.argsort(jnp.where(mask, jnp.arange(n), n + jnp.arange(n)))
    return order, jnp.sum(mask), tuple(a[order] for a in arrays)


def _scatter(order, values, valid):
    """Values at compact positions back to grid positions (0 where not ``valid``)."""
    return jnp.zeros_like(values).at[order].set(jnp.where(valid, values, 0.0))


def _monotonic(strike, bid, ask, mask, discount, *, decreasing):
    order, n, (k, b, a) = _compact(mask, strike, bid, ask)
    valid = jnp.arange(k.shape[0]) + 1 < n
    nxt = lambda x: jnp.roll(x, -1)  # noqa: E731
    gap = jnp.where(valid, nxt(k) - k, 0.0)
    if decreasing:   # C(K1) >= C(K2) and C(K1) - C(K2) <= D (K2 - K1)
        size = jnp.maximum(nxt(b) - a, b - nxt(a) - discount * gap)
    else:            # P(K2) >= P(K1) and P(K2) - P(K1) <= D (K2 - K1)
        size = jnp.maximum(b - nxt(a), nxt(b) - a - discount * gap)
    return _scatter(order, jnp.maximum(jnp.where(valid, size, 0.0), 0.0), valid)


def _convexity(strike, bid, ask, mask):
    order, n, (k, b, a) = _compact(mask, strike, bid, ask)
    valid = jnp.arange(k.shape[0]) + 2 < n
    k1, k2, k3 = k, jnp.roll(k, -1), jnp.roll(k, -2)
    span = jnp.where(valid, k3 - k1, 1.0)
    weight = jnp.where(valid, (k3 - k2) / span, 0.5)
    size = jnp.roll(b, -1) - weight * a - (1.0 - weight) * jnp.roll(a, -2)
    size = jnp.maximum(jnp.where(valid, size, 0.0), 0.0)
    return _scatter(jnp.roll(order, -1), size, valid)  # attributed to the middle strike K2


def _bounds(strike, bid, ask, mask, discount, forward, *, is_call):
    k = jnp.where(mask, strike, 0.0)
    intrinsic = discount * jnp.maximum(forward - k if is_call else k - forward, 0.0)
    ceiling = discount * (forward if is_call else k)
    size = jnp.maximum(intrinsic - ask, bid - ceiling)
    return jnp.where(mask, jnp.maximum(size, 0.0), 0.0)


def _parity(strike, calls, puts, discount, forward):
    mask = calls[2] & puts[2]
    target = discount * (forward - jnp.where(mask, strike, 0.0))
    low, high = calls[0] - puts[1], calls[1] - puts[0]
    size = jnp.maximum(target - high, low - target)
    return jnp.where(mask, jnp.maximum(size, 0.0), 0.0)


def calendar_arbitrage(moneyness_early, variance_bid_early, moneyness_late, variance_ask_late,
                       *, tolerance: float = 1e-12) -> ArbitrageResult:
    """Relation 8 for pairs of slices (same underlying, consecutive expiries): all [pairs, N].

    Points with non-finite moneyness or variance are ignored.  Returns an ArbitrageResult with a
    relation axis of length 1 and ``worst_strike`` holding the *moneyness* of the worst point.
    """
    kernel = jax.vmap(lambda *a: _pair_calendar(*a, tolerance=tolerance))
    return kernel(moneyness_early, variance_bid_early, moneyness_late, variance_ask_late)


def _pair_calendar(k1, w_bid1, k2, w_ask2, *, tolerance):
    mask1 = jnp.isfinite(k1) & jnp.isfinite(w_bid1)
    mask2 = jnp.isfinite(k2) & jnp.isfinite(w_ask2)
    _, n2, (grid, ask) = _compact(mask2, jnp.where(mask2, k2, jnp.inf), w_ask2)
    point = jnp.where(mask1, k1, 0.0)
    lo = jnp.clip(jnp.searchsorted(grid, point, side="right").astype(n2.dtype) - 1, 0,
                  jnp.maximum(n2 - 2, 0))
    hi = jnp.minimum(lo + 1, grid.shape[0] - 1)
    top = grid[jnp.maximum(n2 - 1, 0)]
    inside = mask1 & (n2 >= 2) & (point >= grid[0]) & (point <= top)
    width = jnp.where(inside, grid[hi] - grid[lo], 1.0)
    t = jnp.clip(jnp.where(inside, (point - grid[lo]) / width, 0.0), 0.0, 1.0)
    late = jnp.where(inside, (1.0 - t) * ask[lo] + t * jnp.where(inside, ask[hi], 0.0), 0.0)
    size = jnp.where(inside, w_bid1 - late, 0.0)
    size = jnp.where(size > tolerance, size, 0.0)[None]
    return _summarise(size, point, jnp.array([True]))


def report_frame(slices: pd.DataFrame, worst: np.ndarray, count: np.ndarray,
                 worst_strike: np.ndarray) -> pd.DataFrame:
    """Tidy report: one row per (slice, relation); inputs are [slices, 8] in ``slices`` order."""
    n, r = worst.shape
    names = [rel.name.lower() for rel in Relation][:r]
    report = pd.DataFrame({
        "underlying": np.repeat(slices["underlying"].to_numpy(), r),
        "expiry": np.repeat(slices["expiry"].to_numpy(), r),
        "relation": pd.Categorical(np.tile(names, n), categories=names),
        "size": worst.reshape(-1),
        "violations": count.reshape(-1),
        "worst_strike": worst_strike.reshape(-1)})
    report["violated"] = report["size"] > 0
    return report
