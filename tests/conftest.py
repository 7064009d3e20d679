"""Test configuration: float64, strict dtype promotion, 8 host CPU devices, compile cache.

These settings must be applied before JAX initialises its backends, which is why they sit
at import time of the conftest (pytest imports it before any test module).
"""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
try:  # newer JAX spells the device count as a config option
    jax.config.update("jax_num_cpu_devices", 8)
except AttributeError:  # pragma: no cover - older JAX relies on XLA_FLAGS above
    pass

_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

DATA = pathlib.Path(__file__).resolve().parent / "data"
