"""Runtime set-up for entry points (CLI, scripts): x64 and the compilation cache.

Importing :mod:`jaxvol` never changes JAX's global configuration; entry points call
:func:`configure` explicitly.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["configure"]


def configure(*, x64: bool = True, cache_dir: str | os.PathLike | None = None,
              num_cpu_devices: int | None = None) -> None:
    """Enable float64 and JAX's persistent compilation cache (call before any JAX work)."""
    import jax

    if num_cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", int(num_cpu_devices))
    jax.config.update("jax_enable_x64", bool(x64))
    if cache_dir is None:
        cache_dir = os.environ.get(
            "JAXVOL_CACHE_DIR", pathlib.Path.home() / ".cache" / "jaxvol" / "jax")
    jax.config.update("jax_compilation_cache_dir", str(cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
