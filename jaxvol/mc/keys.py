"""Random numbers as a function of where they are used: (user key, lane, block, step).

Every random draw of a simulation is derived from the user's key by ``jax.random.fold_in``:
``block_key(key, lane, block) = fold_in(fold_in(key, lane), block)`` for the paths of one block
of one lane (an underlying, a parameter set), then ``fold_in(block_key, step)`` for one time
step. A block always holds the same paths, so the bits of every path are the same whatever the
number of devices, the number of blocks simulated at once (the chunk) or the other lanes of the
batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["block_key", "step_key", "block_normals", "key_parts", "wrap_key", "EXTRA_STREAM"]

EXTRA_STREAM = 0x5EED
"""Folded into a step key for the draws a scheme makes itself (Poisson, gamma, ...), so they
never reuse the bits of the engine's normals."""


def block_key(key, lane, block):
    """The key of the paths of ``block`` of ``lane``: fold_in(fold_in(key, lane), block)."""
    return jax.random.fold_in(jax.random.fold_in(key, lane), block)


def step_key(key, step):
    """The key of one time step of a block."""
    return jax.random.fold_in(key, step)


def block_normals(key, paths, noise, dtype, antithetic):
    """Standard normals [paths, noise] for one block and step; with ``antithetic`` the second
    half of the block is the negated first half (path j and j + paths/2 are partners)."""
    if not antithetic:
        return jax.random.normal(key, (paths, noise), dtype)
    half = jax.random.normal(key, (paths // 2, noise), dtype)
    return jnp.concatenate([half, -half], axis=0)


def key_parts(key):
    """(raw key data, impl name or None) so a key travels as a plain array through jit, vmap
    and device maps; ``wrap_key`` turns it back into the user's key type."""
    key = jnp.asarray(key) if not hasattr(key, "dtype") else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key), str(jax.random.key_impl(key))
    return key, None


def wrap_key(data, impl):
    """The inverse of ``key_parts``: a typed key again when the user passed one."""
    return data if impl is None else jax.random.wrap_key_data(data, impl=impl)
