"""Sharding of the slice/underlying axis across the local devices.

The nightly job runs every fit on fixed blocks: ``block`` lanes per device per call
(``job.slice_block`` for per-slice fits, ``job.underlying_block`` for per-underlying ones). A
batch is padded to a multiple of ``block x devices`` lanes and cut into calls of that many lanes;
each call places its lanes on a 1-D mesh with ``NamedSharding`` (split along the leading axis
only, :func:`shard_leading`), and :class:`DeviceMap` runs the fitting function on every device's
shard and reassembles the outputs into arrays with the same ``NamedSharding``.

One program, every device. :class:`DeviceMap` compiles ``jax.jit(fn)`` once for the local block
shape [block, ...] on one device, serialises the executable, and loads it for the mesh as D
replicas of that one-device program, replica k on device k (XLA's replica mode: no partitioner
runs, and loading takes a tenth of a second, no compilation); one asynchronous dispatch then
runs every device on its own shard. A one-device run loads the same bytes as one replica. So
every device runs the same machine code on the same local shape, and a one-device run is bitwise
identical to an eight-device run by construction (the job's fits are per lane, and a block holds
the same lanes whatever the device count).

Why not ``jax.jit(jax.shard_map(fn, mesh))``, the obvious tool: XLA runs the SPMD partitioner
only when there are two or more partitions, and the optimisation passes then see a different
module (the manual-sharding region, partition-id arithmetic) and simplify it differently:
measured on ``jaxvol.sabr.fit`` with [1, 192] local blocks, the optimised HLO over meshes of 2,
4 and 8 devices was the same, but the one-device program (which equals a plain ``jax.jit``)
had other fusions and 54 instead of 59 divides. Levenberg-Marquardt amplifies those last-bit
differences (SVI RMSE off by 3e-12, a SABR lane at the rho bound changing status). ``jax.pmap``
now lowers through ``shard_map`` too, and compiling ``jax.jit(fn)`` separately for each device
would cost a full compilation per device (the persistent cache keys CPU executables by device
assignment). Loading one executable as replicas costs neither.

The bytes must come from a fresh compilation: an executable that JAX read from its persistent
cache serialises without part of its code (jaxlib 0.10.2: a copy loaded from those bytes fails
with "Function ... not found" when called). So this compilation bypasses JAX's cache, and the
serialised executable goes to a store of its own next to it
(``<jax_compilation_cache_dir>/jaxvol-device-map``, one file per program, keyed by the lowered
module, the JAX/jaxlib versions, the platform and the XLA flags that JAX's cache key counts): a
warm run loads, it does not compile, whatever its device count.

Where loading fails (a JAX whose executable serialisation changed), :class:`DeviceMap` falls back
to compiling ``jax.jit(fn)`` for each device (same module, so the same results, at D times the
compile time) and logs a warning; :data:`COUNTS` records which path ran.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
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
"""What the device maps of this process did: ``compiled`` (programs compiled), ``stored``
(executables read from the payload store instead), ``loaded`` (executables loaded for a mesh, as
one replica per device) and ``fallback`` (programs compiled per device because loading
failed)."""


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
    one executable, compiled once per local input shape, run by every device of the mesh on its
    own shard.

    ``fn`` maps arrays with a leading lane axis to a PyTree of arrays with the same lane axis (a
    fit per lane), with no side effects. Calling the map with a mesh and global arrays returns
    that PyTree as global arrays split along the lane axis over the mesh, like the inputs."""

    def __init__(self, fn):
        self._jit = jax.jit(fn, keep_unused=True)  # every argument is a parameter of the module
        self._programs: dict = {}  # (local input signature, devices) -> callable

    def __call__(self, mesh: jax.sharding.Mesh, *arrays):
        placed = shard_leading(mesh, *arrays)
        devices = tuple(mesh.devices.flat)
        local = [next(s.data for s in a.addressable_shards if s.device == devices[0])
                 for a in placed]
        key = (tuple((a.shape, a.dtype) for a in local), devices)
        program = self._programs.get(key)
        if program is None:
            program = self._programs[key] = self._program(local, devices)
        return program(mesh, placed)

    def _program(self, local: list, devices: tuple):
        try:
            serialized, out_tree = _payload(self._jit.lower(*local), devices[0])
            executable = _load(serialized, devices)
            if (len(executable.get_parameter_layouts()) != len(local)
                    or len(executable.get_output_layouts()) != out_tree.num_leaves):
                raise ValueError("the executable's parameters or results are not the function's")
        except Exception as error:  # noqa: BLE001 - any failure: compile for each device
            log.warning("cannot run one executable on every device (%s: %s); compiling for "
                        "each device instead", type(error).__name__, error)
            return self._per_device(local, devices)
        COUNTS["loaded"] += 1
        return functools.partial(_run, executable, out_tree)

    def _per_device(self, local: list, devices: tuple):
        programs = [self._jit.lower(*(jax.device_put(a, d) for a in local)).compile()
                    for d in devices]
        COUNTS["fallback"] += len(devices)

        def run(mesh, placed):
            shards = [{s.device: s.data for s in a.addressable_shards} for a in placed]
            outputs = [program(*(by_device[d] for by_device in shards))
                       for d, program in zip(devices, programs)]
            return jax.tree.map(lambda *leaves: _assemble(mesh, leaves), *outputs)

        return run


def _run(executable, out_tree, mesh: jax.sharding.Mesh, placed: list):
    """One asynchronous dispatch: replica k runs on the mesh's device k with its shards."""
    results = executable.execute_sharded(placed)
    leaves = results.consume_with_handlers(
        [functools.partial(_assemble, mesh)] * out_tree.num_leaves)
    return jax.tree.unflatten(out_tree, leaves)


def _assemble(mesh: jax.sharding.Mesh, leaves) -> jax.Array:
    """Per-device blocks (in mesh order) as one global array split along its leading axis."""
    shape = (sum(leaf.shape[0] for leaf in leaves),) + leaves[0].shape[1:]
    sharding = NamedSharding(mesh, _leading_spec(len(shape)))
    return jax.make_array_from_single_device_arrays(shape, sharding, list(leaves))


def _load(serialized: bytes, devices: tuple):
    """The single-device executable ``serialized`` loaded as ``len(devices)`` replicas, replica k
    on ``devices[k]`` (the machine code is loaded, not compiled again)."""
    from jax._src import compiler
    from jax._src.lib import xla_client

    options = compiler.get_compile_options(num_replicas=len(devices), num_partitions=1,
                                           device_assignment=devices)
    client = devices[0].client
    return client.deserialize_executable(serialized, xla_client.DeviceList(devices), options)


_PAYLOADS: dict = {}
"""Serialised executables of this process by key (see :func:`_payload`)."""


def _payload(lowered, device) -> tuple:
    """The serialised executable of ``lowered`` (lowered for ``device``) and its result tree:
    from this process, from the payload store next to JAX's compilation cache, or compiled now
    with JAX's persistent cache bypassed (see the module docstring)."""
    from jax._src.lib import version_str as jaxlib_version

    key = hashlib.sha256("\n".join([
        "replicas-1", lowered.as_text(), jax.__version__, jaxlib_version, device.client.platform,
        device.client.platform_version, device.device_kind, _xla_flags(),
        str(jax.config.jax_enable_x64)]).encode()).hexdigest()
    serialized = _PAYLOADS.get(key)
    store = _store()
    path = store / key if store is not None else None
    if serialized is None and path is not None and path.exists():
        serialized = path.read_bytes()
        COUNTS["stored"] += 1
    if serialized is None:
        with _without_jax_cache():
            executable = lowered.compile().runtime_executable()
        COUNTS["compiled"] += 1
        serialized = executable.client.serialize_executable(executable)
        if path is not None:
            store.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(serialized)
            os.replace(partial, path)
    _PAYLOADS[key] = serialized
    return serialized, lowered.out_tree


def _xla_flags() -> str:
    """XLA_FLAGS less those that JAX's own cache key leaves out (the host device count...)."""
    try:
        from jax._src.cache_key import xla_flags_to_exclude_from_cache_key as excluded
    except ImportError:  # pragma: no cover - another JAX
        excluded = ["--xla_force_host_platform_device_count"]
    flags = os.environ.get("XLA_FLAGS", "").split()
    return " ".join(sorted(f for f in flags if f.split("=")[0] not in excluded))


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
