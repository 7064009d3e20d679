"""Host-free preparation of one tick series inside the jit: compaction, checks, options.

A series is ``(times, values, mask)`` padded to a fixed length. After :func:`prepare` the valid
ticks sit first, in order; padded slots hold ``+inf`` times and zero values, and ``count`` is
the number of valid ticks. A series that fails a check gets ``count = 0`` (so it contributes
nothing) and a non-zero status.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from jaxvol.leadlag.status import LeadLagStatus

__all__ = ["compact", "increments", "prepare", "search", "Series"]


class Series(NamedTuple):
    times: jnp.ndarray   # [n] seconds, valid first, +inf after
    values: jnp.ndarray  # [n] valid first, 0 after
    count: jnp.ndarray   # number of valid ticks (default int)
    status: jnp.ndarray  # int32 LeadLagStatus


def compact(times, values, keep):
    """Move the kept ticks to the front (order preserved), +inf / 0 behind: O(n)."""
    n = times.shape[-1]
    position = jnp.where(keep, jnp.cumsum(keep) - 1, n)
    out_t = jnp.full_like(times, jnp.inf).at[position].set(times, mode="drop")
    out_v = jnp.zeros_like(values).at[position].set(values, mode="drop")
    return out_t, out_v, jnp.sum(keep).astype(jnp.result_type(int))


def _first_bad(*checks):
    """The code of the first true (condition, code) pair, else OK."""
    status = jnp.int32(LeadLagStatus.OK)
    for bad, code in reversed(checks):
        status = jnp.where(bad, jnp.int32(code), status)
    return status


def prepare(times, values, mask, *, tie_tolerance, merge_ties, subsample, preaverage):
    """Check and condition one padded series (see the module docstring)."""
    n = times.shape[-1]
    times, values, count = compact(times, values, mask)
    index = jnp.arange(n)
    valid = index < count
    finite = jnp.all(jnp.where(valid, jnp.isfinite(times) & jnp.isfinite(values), True))
    gap = jnp.diff(times)
    pair_valid = index[1:] < count
    unsorted = jnp.any(pair_valid & (gap < 0))
    tie = pair_valid & (gap <= tie_tolerance)
    if merge_ties:  # keep the last tick of each run of ties
        keep = valid & ~jnp.concatenate([tie, jnp.zeros((1,), bool)])
        times, values, count = compact(times, values, keep)
        duplicated = jnp.bool_(False)
    else:
        duplicated = jnp.any(tie)
    valid = index < count
    if preaverage > 1:  # flat mean of the last `preaverage` levels, in tick time
        level = jnp.cumsum(jnp.where(valid, values, 0.0))
        shifted = jnp.concatenate([jnp.zeros((preaverage,), values.dtype), level[:-preaverage]])
        values = (level - shifted) / preaverage
        times, values, count = compact(times, values, valid & (index >= preaverage - 1))
        valid = index < count
    if subsample > 1:  # sparse sampling: every `subsample`-th tick
        times, values, count = compact(times, values, valid & (index % subsample == 0))
    status = _first_bad((~finite, LeadLagStatus.NON_FINITE_INPUT),
                        (unsorted, LeadLagStatus.UNSORTED_TIMES),
                        (duplicated, LeadLagStatus.DUPLICATE_TIMES),
                        (count < 2, LeadLagStatus.TOO_FEW_POINTS))
    bad = status != LeadLagStatus.OK
    count = jnp.where(bad, 0, count)
    valid = index < count
    times = jnp.where(valid, times, jnp.inf)
    values = jnp.where(valid, values, 0.0)
    return Series(times, values, count, status)


def increments(series: Series):
    """Increments ``values[i+1] - values[i]`` of the valid intervals (0 elsewhere), [n-1]."""
    valid = jnp.arange(1, series.values.shape[-1]) < series.count
    return jnp.where(valid, jnp.diff(series.values), 0.0)


def search(sorted_values, query, side):
    """jnp.searchsorted in the default int dtype (it returns int32)."""
    return jnp.searchsorted(sorted_values, query, side=side).astype(jnp.result_type(int))
