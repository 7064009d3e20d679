"""Runtime set-up for entry points (CLI, scripts, notebooks): x64 and the compilation cache.

Importing :mod:`jaxvol` never changes JAX's global configuration; a user (or an entry point)
calls :func:`enable_compilation_cache` and/or :func:`configure` explicitly.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["adopt_unlocked_entries", "configure", "default_cache_dir",
           "enable_compilation_cache"]


def default_cache_dir() -> pathlib.Path:
    """``$JAXVOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxvol/jax``, else ``~/.cache/jaxvol/jax``."""
    if os.environ.get("JAXVOL_CACHE_DIR"):
        return pathlib.Path(os.environ["JAXVOL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxvol" / "jax"


CACHE_MAX_BYTES = 8 * 2**30
"""Default size cap of the persistent compilation cache (least recently used entries go)."""


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             min_compile_time_secs: float = 0.2,
                             max_size_bytes: int = CACHE_MAX_BYTES) -> pathlib.Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_cache_dir`).

    Compiled programs are then written to disk and a fresh process reuses them: the first call
    of ``jaxvol.implied_vol`` or ``jaxvol.heston.price`` in a new process loads its program in
    a fraction of a second instead of compiling it (figures in ``docs/benchmarks.md``). Only
    programs that took at least ``min_compile_time_secs`` to compile are stored. Changes nothing
    else (x64 stays the caller's choice). Call it before the first JAX computation; returns the
    folder used.

    Several processes may share the folder (``--num-processes``, Dask workers, pytest-xdist
    workers): with a size cap (``max_size_bytes``, least recently used entries evicted beyond
    it) JAX takes a file lock (the ``filelock`` package) around every read and write of the
    cache, so no process reads an entry another is still writing. Without the cap (pass -1)
    JAX writes entries unlocked, which is safe for one process only.
    """
    import jax

    folder = pathlib.Path(path) if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    if int(max_size_bytes) != -1:
        adopt_unlocked_entries(folder)
    jax.config.update("jax_compilation_cache_max_size", int(max_size_bytes))
    return folder


def adopt_unlocked_entries(folder: str | os.PathLike) -> int:
    """Give entries written without a size cap their access-time file, so that JAX's size-capped
    cache (which reads one beside every entry when it evicts) accepts a folder filled by an
    unlocked run; returns how many were added. (File names as in jax._src.lru_cache:
    ``<key>-cache`` and ``<key>-atime``.)"""
    import time

    stamp = time.time_ns().to_bytes(8, "little")
    added = 0
    for entry in pathlib.Path(folder).glob("*-cache"):
        atime = entry.with_name(entry.name[:-len("-cache")] + "-atime")
        if not atime.exists():
            try:
                atime.write_bytes(stamp)
                added += 1
            except OSError:  # pragma: no cover - read-only cache: JAX only reads it
                pass
    return added


def configure(*, x64: bool = True, cache_dir: str | os.PathLike | None = None,
              num_cpu_devices: int | None = None) -> None:
    """Enable float64 and JAX's persistent compilation cache (call before any JAX work)."""
    import jax

    if num_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
    jax.config.update("jax_enable_x64", bool(x64))
    enable_compilation_cache(cache_dir)
