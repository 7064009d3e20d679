"""The public edge of jaxvol.leadlag: shape checks, batching, host-side sizing."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvol._dtypes import float_dtype

__all__ = ["bucket", "chunk_size", "concrete", "lag_grid", "lane_batch", "map_lanes", "pair_batch",
           "series_batch", "span_cells"]


def series_batch(name: str, times, values, mask):
    """Arrays [..., n] (n >= 2: shorter series are padded with masked slots)."""
    times, values = jnp.asarray(times), jnp.asarray(values)
    if times.ndim == 0 or times.shape != values.shape:
        raise ValueError(f"t_{name} and {name} must be arrays of the same shape [..., ticks], "
                         f"got {times.shape} and {values.shape}")
    mask = jnp.ones(times.shape, bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != times.shape:
        raise ValueError(f"mask_{name} must have the shape of t_{name} {times.shape}, "
                         f"got {mask.shape}")
    short = 2 - times.shape[-1]
    if short > 0:
        pad = [(0, 0)] * (times.ndim - 1) + [(0, short)]
        times, values, mask = (jnp.pad(a, pad) for a in (times, values, mask))
    return times, values, mask


def pair_batch(t_x, x, mask_x, t_y, y, mask_y):
    """Both series flattened to [batch, n] / [batch, m], their batch shape and the float dtype."""
    dtype = float_dtype(jnp.asarray(t_x), jnp.asarray(x), jnp.asarray(t_y), jnp.asarray(y))
    tx, x, mx = series_batch("x", t_x, x, mask_x)
    ty, y, my = series_batch("y", t_y, y, mask_y)
    try:
        batch = jnp.broadcast_shapes(tx.shape[:-1], ty.shape[:-1])
    except ValueError:
        raise ValueError(f"the batch shapes of x {tx.shape[:-1]} and y {ty.shape[:-1]} do not "
                         f"broadcast") from None
    flat = []
    for arrays in ((tx, x, mx), (ty, y, my)):
        n = arrays[0].shape[-1]
        for a in arrays:
            a = jnp.broadcast_to(a, batch + (n,)).reshape((-1, n))
            flat.append(a.astype(dtype) if a.dtype != jnp.bool_ else a)
    return tuple(flat), batch, dtype


def concrete(*arrays):
    """numpy copies of the arrays, or None when any is a tracer (inside a user's jit)."""
    try:
        return tuple(np.asarray(a) for a in arrays)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def lane_batch(per_lane_bytes: int, budget: int = 1 << 28) -> int:
    """Lanes per step of a lax.map over a batch so one step stays within ``budget`` bytes."""
    return max(1, budget // max(per_lane_bytes, 1))


def chunk_size(n: int, m: int) -> int:
    """Pairs per step of the exact sweep: enough to amortise a step, small for small series."""
    return int(min(1 << 16, max(1 << 10, 1 << math.ceil(math.log2(8 * (n + m))))))


def lag_grid(max_lag, resolution):
    """Half-width (in cells) of the grid -max_lag .. max_lag at ``resolution`` seconds."""
    if not (isinstance(max_lag, (int, float)) and isinstance(resolution, (int, float))):
        raise ValueError("max_lag and resolution must be Python numbers (seconds), got "
                         f"{type(max_lag).__name__} and {type(resolution).__name__}")
    if not (math.isfinite(resolution) and resolution > 0):
        raise ValueError(f"resolution must be a positive number of seconds, got {resolution!r}")
    if not (math.isfinite(max_lag) and max_lag >= 0):
        raise ValueError(f"max_lag must be a non-negative number of seconds, got {max_lag!r}")
    half = round(max_lag / resolution)
    if abs(half * resolution - max_lag) > 1e-9 * max(max_lag, resolution):
        raise ValueError(f"max_lag {max_lag!r} must be a whole number of resolutions "
                         f"{resolution!r}")
    return int(half)


def span_cells(arrays, resolution, guard):
    """Host: the most cells any lane's ticks span (None when traced)."""
    got = concrete(*arrays)
    if got is None:
        return None
    tx, mx, ty, my = got
    tx = np.where(mx & np.isfinite(tx), tx, np.nan)
    ty = np.where(my & np.isfinite(ty), ty, np.nan)
    with np.errstate(all="ignore"), _quiet():
        low = np.fmin(np.nanmin(tx, axis=-1), np.nanmin(ty, axis=-1))
        high = np.fmax(np.nanmax(tx, axis=-1), np.nanmax(ty, axis=-1))
        span = np.floor(high / resolution + guard) - np.floor(low / resolution + guard) + 1
    span = span[np.isfinite(span)]
    return int(span.max()) if span.size else 2


def bucket(n: int) -> int:
    """Round a cell count up to a bucket (<= 12.5% above), so nearby sizes share a compile."""
    n = max(int(n), 2)
    step = 1 << max(n.bit_length() - 4, 0)
    return -(-n // step) * step


class _quiet:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def map_lanes(kernel, arrays, lanes: int):
    """kernel over the leading (lane) axis: one vmap if the batch fits in ``lanes``, else a
    lax.map over groups of ``lanes`` (the batch padded with copies of lane 0 so the groups are
    even: one compiled copy of the kernel)."""
    batch = arrays[0].shape[0]
    if batch <= lanes:
        return jax.vmap(kernel)(*arrays)
    groups = -(-batch // lanes)
    extra = groups * lanes - batch
    padded = tuple(jnp.concatenate([a, jnp.repeat(a[:1], extra, axis=0)]) if extra else a
                   for a in arrays)
    out = jax.lax.map(lambda args: kernel(*args), padded, batch_size=lanes)
    return jax.tree_util.tree_map(lambda a: a[:batch], out)
