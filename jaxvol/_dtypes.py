"""Dtype helpers shared by the public edge of every domain."""

from __future__ import annotations

import jax.numpy as jnp


__all__ = ["as_bool", "as_float", "float_dtype", "two_product"]


def float_dtype(*values):
    """The floating dtype of the inputs (Python scalars are weak, None is skipped); ints/bools
    (or no arrays at all) give the default float."""
    values = [v for v in values if v is not None]
    if not values:
        return jnp.result_type(float)
    dtype = jnp.result_type(*values)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def as_float(dtype, *values):
    """Cast each value to ``dtype`` (a tuple of arrays, one per value; bools become 0/1).

    The one dtype-cast helper of the library (the dtype comes first, then the values)."""
    return tuple(jnp.asarray(v, dtype=dtype) for v in values)


def as_bool(is_call):
    """Option type as a boolean array: True (or any non-zero number) is a call."""
    is_call = jnp.asarray(is_call)
    if is_call.dtype == jnp.bool_:
        return is_call
    return is_call != 0


def dekker_split_constant(dtype) -> float:
    """Veltkamp/Dekker splitting constant 2**ceil(p/2) + 1 for the dtype's precision p."""
    return 134217729.0 if jnp.finfo(dtype).bits == 64 else 4097.0


def two_product(a, b):
    """Error-free product ``a*b = p + e`` exactly (Dekker's algorithm, no FMA needed).

    The products pass through :func:`jaxvol.special.opaque`, so that XLA's FMA contraction on
    CPU cannot fuse them into the corrections (which would make ``e`` measure the wrong
    rounding). Used by the double-double Gaussian factor of the normalised Black kernel.
    """
    from jaxvol.special import opaque  # special imports no dtype helper: no cycle

    c = dekker_split_constant(a.dtype)
    p = opaque(a * b)
    ah = opaque(a * c)
    ah = ah - (ah - a)
    al = a - ah
    bh = opaque(b * c)
    bh = bh - (bh - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e
