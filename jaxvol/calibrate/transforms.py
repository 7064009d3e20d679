"""Smooth maps from unconstrained parameters u to box-bounded parameters x (per component).

Kinds, fixed at trace time from which bounds are finite:
free ``x = u``; lower only ``x = lower + exp(u)``; upper only ``x = upper - exp(-u)``;
both ``x = lower + (upper - lower) * sigmoid(u)``. Bounds are open: a bound is approached, never
crossed (rounding may land exactly on it). Start points on or outside a bound are pulled just
inside it before inversion.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Bounds", "make_bounds", "to_bounded", "to_unbounded"]

FREE, LOWER, UPPER, BOTH = 0, 1, 2, 3


class Bounds(NamedTuple):
    """Static (hashable) box bounds: tuples of Python floats, +-inf where unbounded."""

    lower: tuple[float, ...]
    upper: tuple[float, ...]

    def kinds(self) -> tuple[int, ...]:
        return tuple(_kind(lo, hi) for lo, hi in zip(self.lower, self.upper))


def _kind(lo: float, hi: float) -> int:
    return (LOWER if math.isfinite(lo) else 0) + (UPPER if math.isfinite(hi) else 0)


def make_bounds(lower, upper, num_params: int) -> Bounds:
    """Validate concrete bounds of shape [P] (or None) into a static :class:`Bounds`."""
    lo = _as_static(lower, num_params, -math.inf, "lower")
    hi = _as_static(upper, num_params, math.inf, "upper")
    for i, (a, b) in enumerate(zip(lo, hi)):
        if math.isnan(a) or math.isnan(b) or not a < b:
            raise ValueError(f"bounds of parameter {i} must satisfy lower < upper, got {a}, {b}")
    return Bounds(lo, hi)


def _as_static(value, num_params: int, default: float, name: str) -> tuple[float, ...]:
    if value is None:
        return (default,) * num_params
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name} bounds must be concrete (not traced) arrays of shape [P]")
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 0:
        array = np.full(num_params, float(array))
    if array.shape != (num_params,):
        raise ValueError(f"{name} bounds must have shape ({num_params},), got {array.shape}")
    return tuple(float(v) for v in array)


def to_bounded(u, bounds: Bounds):
    """Map unconstrained u [P] to bounded x [P]."""
    parts = [_forward(u[i], lo, hi, kind) for i, (lo, hi, kind)
             in enumerate(zip(bounds.lower, bounds.upper, bounds.kinds()))]
    return jnp.stack(parts) if parts else u


def to_unbounded(x, bounds: Bounds):
    """Inverse of :func:`to_bounded`, after pulling x just inside its bounds."""
    parts = [_inverse(x[i], lo, hi, kind) for i, (lo, hi, kind)
             in enumerate(zip(bounds.lower, bounds.upper, bounds.kinds()))]
    return jnp.stack(parts) if parts else x


def _forward(u, lo, hi, kind):
    if kind == FREE:
        return u
    if kind == LOWER:
        return lo + jnp.exp(u)
    if kind == UPPER:
        return hi - jnp.exp(-u)
    return lo + (hi - lo) * jax.nn.sigmoid(u)


def _inverse(x, lo, hi, kind):
    tiny = jnp.finfo(x.dtype).tiny
    eps = jnp.finfo(x.dtype).eps
    if kind == FREE:
        return x
    if kind == LOWER:
        return jnp.log(jnp.maximum(x - lo, tiny))
    if kind == UPPER:
        return -jnp.log(jnp.maximum(hi - x, tiny))
    fraction = jnp.clip((x - lo) / (hi - lo), 16 * eps, 1 - 16 * eps)
    return jnp.log(fraction) - jnp.log1p(-fraction)
