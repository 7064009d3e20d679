"""The batching edge shared by every simulation: lanes vmapped, sharded over local devices.

:func:`run_lanes` maps a per-lane function over the leading (lane) axis of its arrays. Under a
JAX transformation (the caller's ``jit``/``vmap``/``grad``) or with ``devices=1`` it is a plain
``jax.vmap``. Called eagerly with ``devices`` > 1 (``None``: every local device), the lanes are
padded to a multiple of the device count (copies of lane 0, dropped afterwards) and run by
:class:`jaxvol.jobs.sharding.DeviceMap`, which loads one single-device executable on every device
(XLA's SPMD partitioner, used by ``jit(shard_map)``, changes fusions for two or more partitions
and so the last bits). A lane's random numbers depend only on its lane id, so its result does not
depend on which device runs it.
"""

from __future__ import annotations


import jax
import numpy as np

__all__ = ["run_lanes", "is_traced"]

_MAPS: dict = {}
_JITS: dict = {}


def is_traced(*trees) -> bool:
    """True when any leaf is a tracer (we are inside the caller's jit/vmap/grad)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def run_lanes(lane_fn, arrays, *, devices=None, cache_key=None):
    """``jax.vmap(lane_fn)(*arrays)`` over the leading axis, sharded as the module describes.

    ``lane_fn`` must be a pure function of arrays only (static settings bound in a
    ``functools.partial``); ``cache_key`` (hashable) identifies it for the device-map cache."""
    key = cache_key if cache_key is not None else lane_fn
    jitted = _JITS.get(key)
    if jitted is None:
        jitted = _JITS[key] = jax.jit(jax.vmap(lane_fn))
    lanes = jax.tree.leaves(arrays)[0].shape[0]
    count = len(jax.local_devices()) if devices is None else int(devices)
    if count < 1:
        raise ValueError(f"devices must be >= 1, got {devices!r}")
    if count == 1 or lanes == 0 or is_traced(arrays):
        return jitted(*arrays)
    from jaxvol.jobs.sharding import DeviceMap, local_mesh

    mesh = local_mesh(count)
    leaves, tree = jax.tree.flatten(arrays)
    device_map = _MAPS.get((key, count, tree))
    if device_map is None:
        device_map = _MAPS[(key, count, tree)] = DeviceMap(
            lambda *flat: jax.vmap(lane_fn)(*jax.tree.unflatten(tree, flat)))
    padded = -(-lanes // count) * count
    host = [np.asarray(a) for a in leaves]
    host = [np.concatenate([a, np.repeat(a[:1], padded - lanes, axis=0)]) if padded > lanes
            else a for a in host]
    out = device_map(mesh, *host)
    return jax.tree.map(lambda a: jax.device_put(a, jax.local_devices()[0])[:lanes], out)
