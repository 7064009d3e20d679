"""The batching edge: bucket sizes, one padding rule, jit over padded blocks (and devices).

Ragged work (slices with different strike counts, chunks with different numbers of slices or
underlyings) is padded to a few fixed shapes so that a nightly run compiles each kernel once per
shape, never per chunk (the design's jax-md-style fixed capacity):

- :data:`STRIKE_BUCKETS` / :func:`strike_bucket`: the one table of strike-axis widths (chains
  packing and the job's per-slice fits);
- :func:`power_of_two`, :func:`padded_size`: lane-axis capacities;
- :func:`pad_leading`: the one padding rule, padded lanes repeat the first lane (a well-posed
  problem, so a padded fit converges like a real one and never produces NaN gradients) and are
  dropped from every output;
- :func:`run_blocks`: ``fn`` over the leading (lane) axis in fixed blocks of ``block`` lanes, on
  the default device (one ``jax.jit`` per block shape) or split over a mesh's devices through a
  :class:`DeviceMap` (one executable run by every device, so one device and eight give the same
  bits); :func:`map_blocks`: the same inside a traced function (``lax.map`` over blocks);
- the trace-count guard: :data:`TRACE_COUNTS` (traces of the functions run here, by name) and
  :func:`count_traces`, a context manager that counts every JAX trace in the process (a test
  asserts that a second chunk of the same shapes traces nothing at all).

:class:`DeviceMap` compiles ``jax.jit(fn)`` once for the local block shape [block, ...] on one
device, serialises the executable, and loads it for the mesh as D replicas of that one-device
program, replica k on device k (XLA's replica mode: no partitioner runs, and loading takes a
tenth of a second, no compilation); one asynchronous dispatch then runs every device on its own
shard. A one-device run loads the same bytes as one replica. So every device runs the same
machine code on the same local shape, and a one-device run is bitwise identical to an
eight-device run by construction (per-lane work, and a block holds the same lanes whatever the
device count).

Why not ``jax.jit(jax.shard_map(fn, mesh))``: XLA runs the SPMD partitioner only when there are
two or more partitions, and the optimisation passes then see a different module and simplify it
differently (measured on ``jaxvol.sabr.fit`` with [1, 192] local blocks: the one-device program
had other fusions and 54 instead of 59 divides; Levenberg-Marquardt amplifies those last-bit
differences). ``jax.pmap`` lowers through ``shard_map`` too, and compiling ``jax.jit(fn)`` per
device would cost a full compilation per device. Loading one executable as replicas costs
neither.

The bytes must come from a fresh compilation: an executable that JAX read from its persistent
cache serialises without part of its code (jaxlib 0.10.2: a copy loaded from those bytes fails
with "Function ... not found"). So this compilation bypasses JAX's cache, and the serialised
executable goes to a store of its own (``<jax_compilation_cache_dir>/jaxvol-device-map``, one
file per program, keyed by the lowered module, the JAX/jaxlib versions, the platform and the XLA
flags that JAX's cache key counts): a warm run loads, it does not compile, whatever its device
count. Where loading fails (a JAX whose executable serialisation changed), :class:`DeviceMap`
compiles ``jax.jit(fn)`` for each device instead (same module, same results, D times the compile
time) and logs a warning; :data:`COUNTS` records which path ran.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import pathlib
import threading
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

__all__ = ["AXIS", "COUNTS", "STRIKE_BUCKETS", "TRACE_COUNTS", "DeviceMap", "clear_programs",
           "count_traces",
           "local_mesh", "map_blocks", "pad_leading", "padded_size", "power_of_two",
           "run_blocks", "shard_leading", "strike_bucket", "strike_buckets"]

AXIS = "lanes"
log = logging.getLogger("jaxvol.jobs")

# ------------------------------------------------------------------------------ sizes
STRIKE_BUCKETS = (8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Strike-axis widths: powers of two and their 1.5x (at most a third of a row is padding);
beyond the last bucket, its multiples."""


def strike_bucket(count: int, buckets=STRIKE_BUCKETS) -> int:
    """The smallest bucket holding ``count`` strikes (see :data:`STRIKE_BUCKETS`)."""
    return int(strike_buckets(np.asarray([count]), buckets)[0])


def strike_buckets(counts, buckets=STRIKE_BUCKETS) -> np.ndarray:
    """:func:`strike_bucket` of every count (counts below 1 count as 1)."""
    table = np.asarray(sorted(buckets), dtype=np.int64)
    if table.size == 0 or table[0] < 1:
        raise ValueError(f"strike buckets must be positive sizes, got {tuple(buckets)}")
    n = np.maximum(np.asarray(counts, dtype=np.int64), 1)
    index = np.searchsorted(table, n)
    step = int(table[-1])
    beyond = -(-n // step) * step
    return np.where(index < len(table), table[np.minimum(index, len(table) - 1)], beyond)


def power_of_two(count: int, minimum: int = 1) -> int:
    """The smallest power of two >= ``count`` and >= ``minimum``."""
    return max(int(minimum), 1 << max(0, int(count) - 1).bit_length())


def padded_size(lanes: int, block: int, devices: int = 1) -> int:
    """The padded lane count: the smallest positive multiple of ``block x devices`` >= lanes."""
    step = int(block) * int(devices)
    if step < 1:
        raise ValueError(f"block and devices must be >= 1, got {block} and {devices}")
    return max(1, math.ceil(lanes / step)) * step


def pad_leading(array, size: int, fill=None):
    """``array`` padded along axis 0 to ``size`` rows: copies of its first row (``fill`` None,
    the default: padded lanes are well-posed problems) or ``fill``. numpy in, numpy out; a JAX
    array (or tracer) in, a JAX array out."""
    xp = np if isinstance(array, np.ndarray) or np.isscalar(array) else jnp
    array = xp.asarray(array)
    missing = size - array.shape[0]
    if missing <= 0:
        return array
    if fill is None and array.shape[0]:
        pad = xp.repeat(array[:1], missing, axis=0)
    else:
        pad = xp.full((missing,) + array.shape[1:], 0 if fill is None else fill,
                      dtype=array.dtype)
    return xp.concatenate([array, pad], axis=0)


# ------------------------------------------------------------------------------ traces
TRACE_COUNTS: collections.Counter = collections.Counter()
"""Traces of the functions run through :func:`run_blocks` / :class:`DeviceMap`, by name (one
per new input shape; a nightly run holds each at one per bucket)."""

_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"
_RECORDERS: list[collections.Counter] = []
_LISTENING = threading.Lock()
_listener_installed = False


def _on_event(event: str, duration: float, **kwargs) -> None:
    if event == _TRACE_EVENT and _RECORDERS:
        name = str(kwargs.get("fun_name", "?"))
        for counter in _RECORDERS:
            counter[name] += 1


@contextlib.contextmanager
def count_traces():
    """Count every JAX trace (``jax.jit`` tracing, eager primitives' first use included) in the
    block, by function name: ``with count_traces() as traces: ...; assert not traces``."""
    global _listener_installed
    with _LISTENING:
        if not _listener_installed:
            jax.monitoring.register_event_duration_secs_listener(_on_event)
            _listener_installed = True
    counter: collections.Counter = collections.Counter()
    _RECORDERS.append(counter)
    try:
        yield counter
    finally:
        _RECORDERS.remove(counter)


def _counted(name: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def traced(*args, **kwargs):
        TRACE_COUNTS[name] += 1
        return fn(*args, **kwargs)
    return traced


# ------------------------------------------------------------------------------ blocks
def map_blocks(fn, block: int | None, *arrays):
    """``fn(*block_arrays)`` over blocks of the leading (lane) axis of every array leaf, inside
    a traced function (``lax.map`` over blocks: each block's working set stays in cache, and a
    solver with a batch-level early exit stops each block when *its* slowest lane is done).

    Lanes are padded to a multiple of ``block`` by :func:`pad_leading`; the padding is dropped
    from every output leaf. ``block`` None or >= lanes calls ``fn`` once on everything. Lanes
    never interact, so a lane's result is the same as in one big batch up to rounding."""
    lanes = jax.tree.leaves(arrays)[0].shape[0]
    if block is None or block >= lanes:
        return fn(*arrays)
    if int(block) < 1:
        raise ValueError(f"block must be >= 1, got {block!r}")
    count = -(-lanes // block)
    padded = count * block

    def split(x):
        x = pad_leading(jnp.asarray(x), padded)
        return x.reshape((count, block) + x.shape[1:])

    outputs = jax.lax.map(lambda part: fn(*part), jax.tree.map(split, arrays))
    return jax.tree.map(lambda y: y.reshape((padded,) + y.shape[2:])[:lanes], outputs)


_PROGRAMS: dict = {}
"""Programs of :func:`run_blocks` kept across calls (and runs of the job) in this process: a
later call with the same ``name`` and settings reuses the traced and compiled program."""


def _program(fn: Callable, name: str | None, settings, mesh):
    key = (name, json.dumps(settings, sort_keys=True, default=str), mesh is not None) \
        if name else None
    program = _PROGRAMS.get(key) if key else None
    if program is None:
        counted = _counted(name or getattr(fn, "__name__", "fn"), fn)
        program = DeviceMap(counted) if mesh is not None else jax.jit(counted, keep_unused=True)
        if key:
            if len(_PROGRAMS) > 128:  # many distinct settings in one process: start afresh
                _PROGRAMS.clear()
            _PROGRAMS[key] = program
    return program


def clear_programs() -> None:
    """Forget the programs :func:`run_blocks` keeps by name (so that a function a name stands
    for can be swapped, e.g. to compare two settings of a domain function in one process)."""
    _PROGRAMS.clear()


def run_blocks(fn: Callable, arrays, block: int, *, mesh=None, name: str | None = None,
               settings=None, jit: bool = True):
    """``fn(*arrays)`` over the leading (lane) axis in fixed blocks; outputs (a PyTree of arrays
    with the lane axis) come back as numpy, without the padding.

    The lanes are padded (:func:`pad_leading`) to a multiple of ``block x D`` and run in calls
    of that many lanes, where D is 1 without a ``mesh`` (``jax.jit`` on the default device) and
    the mesh size with one (a :class:`DeviceMap`: ``block`` lanes per device, one executable on
    every device). Every call therefore has the same shape: one trace and one compile per
    (``name``, ``settings``, input bucket) for the whole process. ``name`` keys the program for
    reuse across calls (``fn`` must then depend only on ``settings``, a JSON-able value);
    without it each call traces afresh. ``jit=False`` (no mesh) calls ``fn`` itself on each
    block, for a ``fn`` made of its own jitted kernels."""
    arrays = [np.asarray(a) for a in arrays]
    lanes = arrays[0].shape[0]
    if any(a.shape[:1] != (lanes,) for a in arrays):
        raise ValueError(f"run_blocks: every array needs {lanes} lanes on axis 0, got "
                         f"{[a.shape for a in arrays]}")
    devices = 1 if mesh is None else mesh.size
    size = padded_size(lanes, block, devices)
    padded = [pad_leading(a, size) for a in arrays]
    program = _program(fn, name, settings, mesh) if jit or mesh is not None else fn
    step = int(block) * devices
    parts = []
    for start in range(0, size, step):
        part = [a[start:start + step] for a in padded]
        out = program(mesh, *part) if mesh is not None else program(*part)
        parts.append(jax.tree.map(np.asarray, out))  # host copies: device buffers freed
    return jax.tree.map(lambda *leaves: np.concatenate(leaves)[:lanes], *parts)


# ------------------------------------------------------------------------------ devices
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
        raise ValueError(f"devices = {devices} but only {len(available)} local devices exist")
    return jax.make_mesh((count,), (AXIS,), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=available[:count])


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
