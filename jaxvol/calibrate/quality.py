"""Fits that are what they say: the checks that turn "the optimiser stopped" into a status.

A convergence test passing is not a usable fit. :func:`refine_status` downgrades a lane that
has a solution (CONVERGED or MAX_ITERATIONS) to the first of these that applies, in this order
of precedence: TOO_FEW_POINTS, UNIDENTIFIED (the data cannot identify the model: too few
distinct strikes, all quotes equal), DEGENERATE (a degenerate limit of the model), AT_BOUND (a
parameter on a bound of its box), ARBITRAGE (a static no-arbitrage bound violated) and
OUTSIDE_QUOTES (the fitted model contradicts a one-sided quote: above the ask of an option
without a bid). Lanes
without a solution keep their status. Every domain fit (svi, ssvi, sabr, heston, fx) states its
own criteria and applies them through this one function, so the precedence is the same
everywhere.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxvol.calibrate._types import FitStatus, has_solution

__all__ = ["distinct_count", "near_bounds", "refine_status"]

#: relative distance to a bound below which a fitted parameter counts as on it
BOUND_TOLERANCE = 1e-6


def refine_status(status, *, too_few=None, unidentified=None, degenerate=None, at_bound=None,
                  arbitrage=None, outside=None):
    """The fit status after the usability checks (each a bool array like ``status``, or None).

    Only lanes with a solution change; the checks are applied in the order of precedence of
    the module docstring (the first one that holds wins)."""
    status = jnp.asarray(status)
    solved = has_solution(status)
    out = status
    for check, code in ((outside, FitStatus.OUTSIDE_QUOTES), (arbitrage, FitStatus.ARBITRAGE),
                        (at_bound, FitStatus.AT_BOUND),
                        (degenerate, FitStatus.DEGENERATE),
                        (unidentified, FitStatus.UNIDENTIFIED)):
        if check is not None:
            out = jnp.where(solved & check, int(code), out)
    if too_few is not None:
        out = jnp.where(too_few, int(FitStatus.TOO_FEW_POINTS), out)
    return out.astype(jnp.int32)


def near_bounds(params, lower, upper, tolerance: float = BOUND_TOLERANCE):
    """Per lane: some parameter of ``params`` [lanes, P] lies within ``tolerance`` (relative to
    max(1, |bound|)) of a finite bound of the box (``lower``, ``upper``: [P], +-inf allowed)."""
    params = jnp.asarray(params)
    lower = jnp.asarray(lower, params.dtype)
    upper = jnp.asarray(upper, params.dtype)
    def close(bound):
        scale = jnp.maximum(1.0, jnp.abs(jnp.where(jnp.isfinite(bound), bound, 0.0)))
        return jnp.isfinite(bound) & (jnp.abs(params - bound) <= tolerance * scale)
    return jnp.any(close(lower) | close(upper), axis=-1)


def distinct_count(values, usable, tolerance: float = 1e-9, limit: int | None = None):
    """Number of distinct usable values per lane along the last axis (values closer than
    ``tolerance`` times the lane's largest magnitude count once).

    ``limit``: count at most this many (``min(count, limit)``), without sorting: ``limit``
    passes of a masked minimum, each taking the smallest value more than the tolerance above
    the last one counted. A fit's identification check needs only "fewer than P", and XLA's
    CPU sort of [lanes, quotes] was 3/4 of svi.fit's checks (21 of 28 ms on 10,000 x 50).
    The two agree except on chains of values each within the tolerance of the next (1e-9
    relative by default), which the sort counts once and the passes every tolerance width.
    """
    values = jnp.asarray(values)
    big = jnp.where(usable, jnp.abs(values), 0.0)
    scale = jnp.maximum(jnp.max(big, axis=-1, keepdims=True), float(jnp.finfo(values.dtype).tiny))
    if limit is not None:
        candidates = jnp.where(usable & jnp.isfinite(values), values, jnp.inf)
        step = tolerance * scale
        last = jnp.min(candidates, axis=-1, keepdims=True)
        count = jnp.isfinite(last[..., 0]).astype(jnp.int32)
        for _ in range(int(limit) - 1):
            last = jnp.min(jnp.where(candidates > last + step, candidates, jnp.inf), axis=-1,
                           keepdims=True)
            count = count + jnp.isfinite(last[..., 0]).astype(jnp.int32)
        return count
    ordered = jnp.sort(jnp.where(usable, values, jnp.inf), axis=-1)
    gaps = jnp.diff(ordered, axis=-1)
    new = jnp.isfinite(gaps) & (gaps > tolerance * scale)
    any_usable = jnp.any(usable, axis=-1)
    return jnp.where(any_usable, 1 + jnp.sum(new.astype(jnp.int32), axis=-1), 0)
