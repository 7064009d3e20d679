"""Run a lane-batched function over fixed-size chunks of lanes (``lax.map`` over chunks).

Two reasons to chunk a big batch: each chunk's working set stays in cache, and a solver with a
batch-level early exit stops each chunk when *its* slowest lane is done rather than the whole
batch's. Lanes never interact, so each lane's result is the same as in one big batch up to
rounding (XLA may vectorise a chunk differently from the whole batch: last-bit differences).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["map_chunks"]


def map_chunks(fn, chunk_size: int | None, *arrays):
    """``fn(*chunk_arrays)`` over chunks of the leading (lanes) axis of every array leaf.

    The lanes are padded to a multiple of ``chunk_size`` by repeating the last lane (so padding
    is well-formed data), and the padding is dropped from every output leaf. ``chunk_size``
    None or >= lanes calls ``fn`` once on everything.
    """
    leaves = [leaf for leaf in jax.tree.leaves(arrays)]
    lanes = leaves[0].shape[0]
    if chunk_size is None or chunk_size >= lanes:
        return fn(*arrays)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    count = -(-lanes // chunk_size)
    padded = count * chunk_size

    def split(x):
        x = jnp.concatenate([x, jnp.repeat(x[-1:], padded - lanes, axis=0)], axis=0)
        return x.reshape((count, chunk_size) + x.shape[1:])

    outputs = jax.lax.map(lambda chunk: fn(*chunk), jax.tree.map(split, arrays))
    return jax.tree.map(lambda y: y.reshape((padded,) + y.shape[2:])[:lanes], outputs)
