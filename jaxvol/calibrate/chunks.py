"""Run a lane-batched function over fixed-size chunks of lanes (``lax.map`` over chunks).

Two reasons to chunk a big batch: each chunk's working set stays in cache, and a solver with a
batch-level early exit stops each chunk when *its* slowest lane is done rather than the whole
batch's. Lanes never interact, so each lane's result is the same as in one big batch up to
rounding. The blocking (and its padding rule) is the batching edge's
:func:`jaxvol.batching.map_blocks`.
"""

from __future__ import annotations

from jaxvol.batching import map_blocks

__all__ = ["map_chunks"]

__all__ = ["map_chunks"]


def map_chunks(fn, chunk_size: int | None, *arrays):
    """``fn(*chunk_arrays)`` over chunks of ``chunk_size`` lanes of every array leaf
    (:func:`jaxvol.batching.map_blocks`: padded lanes repeat the first lane and are dropped from
    every output leaf); ``chunk_size`` None or >= lanes calls ``fn`` once on everything."""
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    return map_blocks(fn, chunk_size, *arrays)
