"""Sharding of the slice/underlying axis across the local devices.

The nightly job pads every batch it fits to a fixed multiple (a power of two at least
``job.slice_multiple``), so a run on one device and a run on eight compile the same global
shapes; the leading axis is then split across a 1-D mesh with ``NamedSharding`` and the fitting
functions (pure, per lane) run where the data lies.
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


def padded_size(lanes: int, multiple: int, devices: int) -> int:
    """The padded lane count: a power of two >= lanes, multiple of ``multiple`` and devices."""
    base = math.lcm(multiple, devices)
    size = base
    while size < lanes:
        size *= 2
    return size


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
