"""Sharding of the slice/underlying axis across the local devices.

The nightly job runs every fit on fixed blocks: ``block`` lanes per device per call
(``job.slice_block`` for per-slice fits, ``job.underlying_block`` for per-underlying ones). A
batch is padded to a multiple of ``block x devices`` lanes and cut into calls of that many lanes;
each call places its lanes on a 1-D mesh with ``NamedSharding`` (split along the leading axis
only, :func:`shard_leading`), and :class:`DeviceMap` runs the fitting function on every device's
shard and reassembles the outputs into arrays with the same ``NamedSharding``.

One program, every device. :class:`DeviceMap` compiles ``jax.jit(fn)`` once for the local block
shape [block, ...] and loads that executable onto every device of the mesh (serialised with
``jax.experimental.serialize_executable``, deserialised with the target device's assignment: a
fraction of a second, no compilation), then calls each device's copy on that device's shard; the
calls are dispatched asynchronously, so the devices run concurrently. A one-device mesh takes the
ordinary ``jax.jit`` path for that device. Every device therefore runs the same module compiled
with the same options on the same local shape, and a one-device run is bitwise identical to an
eight-device run by construction (the job's fits are per lane, and a block holds the same lanes
whatever the device count). Within a process a map keeps its executables per device, so
device 0 runs the very same executable whatever the mesh; across processes the identity rests
on XLA compiling one module deterministically, as JAX's persistent cache does.

Why not ``jax.jit(jax.shard_map(fn, mesh))``, the obvious tool: XLA runs the SPMD partitioner
only when there are two or more partitions, and the optimisation passes then see a different
module (the manual-sharding region, partition-id arithmetic) and simplify it differently:
measured on ``jaxvol.sabr.fit`` with [1, 192] local blocks, the optimised HLO over meshes of 2,
4 and 8 devices was the same, but the one-device program (which equals a plain ``jax.jit``)
had other fusions and 54 instead of 59 divides. Levenberg-Marquardt amplifies those last-bit
differences (SVI RMSE off by 3e-12, a SABR lane at the rho bound changing status). ``jax.pmap``
now lowers through ``shard_map`` too, and compiling ``jax.jit(fn)`` separately for each device
would cost a full compilation per device (the persistent cache keys CPU executables by device
assignment). Loading one executable everywhere costs neither.

The executable to load must come from a fresh compilation: one that JAX read from its persistent
cache serialises without part of its code (jaxlib 0.10.2: a copy loaded from those bytes fails
with "Function ... not found" when called). So the multi-device compilation bypasses JAX's cache
and keeps the serialised executable in a store of its own next to it
(``<jax_compilation_cache_dir>/jaxvol-device-map``, keyed by the lowered module, the JAX/jaxlib
versions, the platform and XLA_FLAGS): a warm run loads, it does not compile.

Where loading fails (a JAX whose executable serialisation changed), :class:`DeviceMap` falls back
to compiling ``jax.jit(fn)`` for each device (same module, so the same results, at D times the
compile time) and logs a warning; :data:`COUNTS` records which path ran.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import logging
import math
import os
import pathlib

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["AXIS", "COUNTS", "DeviceMap", "local_mesh", "padded_size", "pad_leading",
           "shard_leading"]

AXIS = "lanes"
log = logging.getLogger("jaxvol.jobs")

COUNTS: collections.Counter = collections.Counter()
"""What the device maps of this process did: ``compiled`` (programs compiled; a one-device map's
come from JAX's persistent cache where it has them), ``stored`` (executables read from the
payload store instead of compiled), ``loaded`` (executables loaded onto a device) and
``fallback`` (programs compiled per device because loading failed)."""


def local_mesh(devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh over the first ``devices`` local devices (0 = all of them)."""
    available = jax.local_devices()
    count = len(available) if devices <= 0 else devices
    if count > len(available):
        raise ValueError(f"job.devices = {devices} but only {len(available)} local devices exist")
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


def _leading_spec(ndim: int) -> PartitionSpec:
    return PartitionSpec(AXIS, *([None] * (ndim - 1)))


def shard_leading(mesh: jax.sharding.Mesh, *arrays):
    """Place each array on ``mesh`` split along its leading axis (replicated otherwise)."""
    return [jax.device_put(array, NamedSharding(mesh, _leading_spec(np.ndim(array))))
            for array in arrays]


class DeviceMap:
    """``fn`` over the leading (lane) axis of arrays split across a mesh by :func:`shard_leading`:
    each device runs its own copy of one executable, compiled once per local input shape, on
    its own shard.

    ``fn`` maps arrays with a leading lane axis to a PyTree of arrays with the same lane axis (a
    fit per lane). Calling the map with a mesh and global arrays returns that PyTree as global
    arrays split along the lane axis over the mesh, like the inputs. The executables are kept
    per device, so the map may be called with any mesh of local devices, and device 0 runs the
    same executable whatever the mesh."""

    def __init__(self, fn):
        self._jit = jax.jit(fn)
        self._programs: dict = {}  # local input signature -> {device: jax.stages.Compiled}

    def __call__(self, mesh: jax.sharding.Mesh, *arrays):
        placed = shard_leading(mesh, *arrays)
        shards = [{shard.device: shard.data for shard in array.addressable_shards}
                  for array in placed]
        devices = list(mesh.devices.flat)
        local = [[by_device[device] for by_device in shards] for device in devices]
        programs = self._programs_for(local[0], devices)
        # asynchronous dispatch: every call returns at once and the devices run concurrently
        outputs = [programs[device](*args) for device, args in zip(devices, local)]
        return jax.tree.map(lambda *leaves: _assemble(mesh, leaves), *outputs)

    def _programs_for(self, local: list, devices: list) -> dict:
        signature = tuple((a.shape, a.dtype) for a in local)
        programs = self._programs.setdefault(signature, {})
        missing = [device for device in devices if device not in programs]
        if not missing:
            return programs
        if not programs and len(missing) == 1:  # one device: the ordinary jit path
            programs[missing[0]] = self._jit.lower(*local).compile()
            COUNTS["compiled"] += 1
            return programs
        try:
            payload = _payload(self._jit.lower(*local), devices[0])
            for device in missing:
                programs[device] = _deserialize(payload, device)
                COUNTS["loaded"] += 1
        except Exception as error:  # noqa: BLE001 - any failure: compile for each device
            log.warning("cannot load one executable onto every device (%s: %s); compiling "
                        "for each device instead", type(error).__name__, error)
            for device in missing:
                if device not in programs:
                    on_device = [jax.device_put(a, device) for a in local]
                    programs[device] = self._jit.lower(*on_device).compile()
                    COUNTS["fallback"] += 1
        return programs


def _assemble(mesh: jax.sharding.Mesh, leaves) -> jax.Array:
    """Per-device blocks (in mesh order) as one global array split along its leading axis."""
    shape = (sum(leaf.shape[0] for leaf in leaves),) + leaves[0].shape[1:]
    sharding = NamedSharding(mesh, _leading_spec(len(shape)))
    return jax.make_array_from_single_device_arrays(shape, sharding, list(leaves))


_PAYLOADS: dict = {}
"""Serialised executables of this process by key (see :func:`_payload`)."""


def _payload(lowered, device) -> tuple:
    """The serialised executable of ``lowered`` (lowered for one device) with its argument and
    result trees: from this process, from the payload store next to JAX's compilation cache,
    or compiled now.
    (see the module docstring for why it must be a fresh compilation)."""
    from jax._src.lib import version_str as jaxlib_version

    key = hashlib.sha256("\n".join([
        lowered.as_text(), jax.__version__, jaxlib_version, device.client.platform,
        device.client.platform_version, device.device_kind, os.environ.get("XLA_FLAGS", ""),
        str(jax.config.jax_enable_x64)]).encode()).hexdigest()
    trees = (jax.tree_util.tree_structure(lowered.args_info), lowered.out_tree)
    serialized = _PAYLOADS.get(key)
    store = _store()
    path = store / key if store is not None else None
    if serialized is None and path is not None and path.exists():
        serialized = path.read_bytes()
        COUNTS["stored"] += 1
    if serialized is None:
        with _without_jax_cache():
            compiled = lowered.compile()
        COUNTS["compiled"] += 1
        serialized = _serialize(compiled)[0]
        if path is not None:
            store.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(serialized)
            os.replace(partial, path)
    _PAYLOADS[key] = serialized
    return (serialized,) + trees


def _store() -> pathlib.Path | None:
    cache_dir = jax.config.jax_compilation_cache_dir
    return pathlib.Path(cache_dir) / "jaxvol-device-map" if cache_dir else None


@contextlib.contextmanager
def _without_jax_cache():
    from jax.experimental.compilation_cache import compilation_cache

    enabled = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", enabled)
        compilation_cache.reset_cache()


def _serialize(program: jax.stages.Compiled):
    from jax.experimental import serialize_executable

    return serialize_executable.serialize(program)


def _deserialize(payload, device) -> jax.stages.Compiled:
    """The executable ``payload`` (compiled for one device) loaded onto ``device``: its device
    references and its device assignment point at ``device`` instead."""
    from jax._src import compiler
    from jax.experimental import serialize_executable

    serialized, in_tree, out_tree = payload
    options = compiler.get_compile_options(num_replicas=1, num_partitions=1,
                                           device_assignment=[device])

    class Unpickler(serialize_executable._JaxPjrtUnpickler):
        def persistent_load(self, pid):
            if pid[0] == "exec":
                return self.backend.deserialize_executable(
                    pid[1], executable_devices=self.execution_devices, compile_options=options)
            if pid[0] == "device":
                return device
            return super().persistent_load(pid)

    unloaded, args_info, no_kwargs = Unpickler(io.BytesIO(serialized), device.client,
                                               [device]).load()
    return jax.stages.Compiled(unloaded.load(), [], in_tree.unflatten(args_info), out_tree,
                               no_kwargs=no_kwargs)
