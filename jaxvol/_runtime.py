"""Runtime set-up for entry points (CLI, scripts, notebooks): x64 and the compilation cache.

Importing :mod:`jaxvol` never changes JAX's global configuration; a user (or an entry point)
calls :func:`enable_compilation_cache` and/or :func:`configure` explicitly.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["configure", "default_cache_dir", "enable_compilation_cache"]


def default_cache_dir() -> pathlib.Path:
    """``$JAXVOL_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxvol/jax``, else ``~/.cache/jaxvol/jax``."""
    if os.environ.get("JAXVOL_CACHE_DIR"):
        return pathlib.Path(os.environ["JAXVOL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxvol" / "jax"


def enable_compilation_cache(path: str | os.PathLike | None = None, *,
                             min_compile_time_secs: float = 0.2) -> pathlib.Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_cache_dir`).

    Compiled programs are then written to disk and a fresh process reuses them: the first call
    of ``jaxvol.implied_vol`` or ``jaxvol.heston.price`` in a new process loads its program in
    a fraction of a second instead of compiling it (figures in ``docs/benchmarks.md``). Only
    programs that took at least ``min_compile_time_secs`` to compile are stored. Changes nothing
    else (x64 stays the caller's choice). Call it before the first JAX computation; returns the
    folder used.
    """
    import jax

    folder = pathlib.Path(path) if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
    return folder


def configure(*, x64: bool = True, cache_dir: str | os.PathLike | None = None,
              num_cpu_devices: int | None = None) -> None:
    """Enable float64 and JAX's persistent compilation cache (call before any JAX work)."""
    import jax

    if num_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
    jax.config.update("jax_enable_x64", bool(x64))
    enable_compilation_cache(cache_dir)
