"""Run a lane-batched function over fixed-size chunks of lanes (``lax.map`` over chunks), or
again over the lanes still pending (:func:`compacted`).

Two reasons to chunk a big batch: each chunk's working set stays in cache, and a solver with a
batch-level early exit stops each chunk when *its* slowest lane is done rather than the whole
batch's. Lanes never interact, so each lane's result is the same as in one big batch up to
rounding. The blocking (and its padding rule) is the batching edge's
:func:`jaxvol.batching.map_blocks`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvol.batching import map_blocks

__all__ = ["compacted", "map_chunks"]


def map_chunks(fn, chunk_size: int | None, *arrays):
    """``fn(*chunk_arrays)`` over chunks of ``chunk_size`` lanes of every array leaf
    (:func:`jaxvol.batching.map_blocks`: padded lanes repeat the first lane and are dropped from
    every output leaf); ``chunk_size`` None or >= lanes calls ``fn`` once on everything."""
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    return map_blocks(fn, chunk_size, *arrays)


def compacted(pending, lanes, fn, arrays, outputs):
    """Re-run ``fn`` on the pending lanes only, gathered ``lanes`` at a time from the batch (the
    slow tail of a batch, after a first pass over every lane).

    ``fn(valid, *gathered_arrays) -> gathered outputs``; each round scatters its results into
    ``outputs`` (a tuple of [batch, ...] arrays) and clears those lanes from ``pending``."""
    size = pending.shape[0]

    def one_round(carry):
        pending, outputs = carry
        index = jnp.nonzero(pending, size=lanes, fill_value=0)[0]
        valid = jnp.arange(lanes) < jnp.sum(pending.astype(jnp.int32))
        new = fn(valid, *(x[index] for x in arrays))
        target = jnp.where(valid, index, size)  # out of range: dropped
        return (pending.at[target].set(False, mode="drop"),
                tuple(o.at[target].set(n, mode="drop") for o, n in zip(outputs, new)))

    return jax.lax.while_loop(lambda carry: jnp.any(carry[0]), one_round,
                              (pending, outputs))[1]
