"""Sharding of the slice/underlying axis across the local devices.

The nightly job runs every fit on fixed blocks: ``block`` lanes per device per call
(``job.slice_block`` for per-slice fits, ``job.underlying_block`` for per-underlying ones). A
batch is padded to a multiple of ``block x devices`` lanes and cut into calls of that many lanes;
each call places its lanes on a 1-D mesh with ``NamedSharding`` (split along the leading axis
only) and maps the fitting function over the devices with ``jax.shard_map``. Every device thus
runs the function on the same local shape whatever the chunk size or the device count, so one
device and eight give bitwise-identical results and a whole run compiles each fit once.
"""

from __future__ import annotations

import math

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["AXIS", "local_mesh", "padded_size", "pad_leading", "shard_leading"]

AXIS = "lanes"


def local_mesh(devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh over the first ``devices`` local devices (0 = all of them)."""
    available = jax.local_devices()
    count = len(available) if devices <= 0 else devices
    if count > len(available):
        raise ValueError(f"job.devices = {devices} but only {len(available)} local devices exist")
    # Auto axes: the arrays carry a NamedSharding and XLA propagates it through the fitting
    # functions (which are written for unsharded inputs), rather than sharding-in-types.
    return jax.make_mesh((count,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=available[:count])


def padded_size(lanes: int, block: int, devices: int) -> int:
    """The padded lane count: the smallest positive multiple of ``block x devices`` >= lanes."""
    step = block * devices
    return max(1, math.ceil(lanes / step)) * step


def pad_leading(array: np.ndarray, size: int, fill) -> np.ndarray:
    """``array`` padded along axis 0 to ``size`` rows with ``fill`` (copies the first row when
    ``fill`` is None, so padded lanes are well-posed problems)."""
    missing = size - array.shape[0]
    if missing <= 0:
        return array
    if fill is None:
        pad = np.repeat(array[:1], missing, axis=0) if array.shape[0] else np.zeros(
            (missing,) + array.shape[1:], array.dtype)
    else:
        pad = np.full((missing,) + array.shape[1:], fill, dtype=array.dtype)
    return np.concatenate([array, pad], axis=0)


def shard_leading(mesh: jax.sharding.Mesh, *arrays):
    """Place each array on ``mesh`` split along its leading axis (replicated otherwise)."""
    placed = []
    for array in arrays:
        spec = PartitionSpec(AXIS, *([None] * (np.ndim(array) - 1)))
        placed.append(jax.device_put(array, NamedSharding(mesh, spec)))
    return placed
