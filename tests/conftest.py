"""Test configuration: float64, strict dtype promotion, 8 host CPU devices, compile cache.

These settings must be applied before JAX initialises its backends, which is why they sit
at import time of the conftest (pytest imports it before any test module).
"""

import os
import pathlib

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402

from jaxvol._runtime import adopt_unlocked_entries  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
try:  # newer JAX spells the device count as a config option
    jax.config.update("jax_num_cpu_devices", 8)
except AttributeError:  # pragma: no cover - older JAX relies on XLA_FLAGS above
    pass

# One cache folder for all pytest-xdist workers, so that a test file finds its programs whichever
# worker it lands on (with --dist loadfile the file-to-worker assignment changes from run to run;
# per-worker folders made a second run only half warm). A size cap turns on JAX's file lock
# around cache reads and writes (jaxvol.enable_compilation_cache does the same): without it a
# worker could read an entry another is still writing.
# The cache lives outside the checkout (override with JAXVOL_TEST_CACHE) so that a fresh clone
# on the same machine, as CI makes, reuses earlier compilations.
_CACHE = pathlib.Path(os.environ.get(
    "JAXVOL_TEST_CACHE", pathlib.Path.home() / ".cache" / "jaxvol" / "jax-tests"))
_CACHE.mkdir(parents=True, exist_ok=True)
adopt_unlocked_entries(_CACHE)
jax.config.update("jax_compilation_cache_dir", str(_CACHE))
jax.config.update("jax_compilation_cache_max_size", 8 * 2**30)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

DATA = pathlib.Path(__file__).resolve().parent / "data"


# The suite runs on two xdist workers with --dist loadfile, which hands out files in collection
# order. Longest-first scheduling keeps one worker from starting a several-minute file at the
# end while the other sits idle: the files below dominate a cold run (compile time), so they go
# first, the rest keep their alphabetical order.
_HEAVY_FIRST = ("test_jobs_pipeline.py", "test_heston_pricing.py", "test_heston_calibration.py",
                "test_implied.py", "test_indices_vxj.py", "test_smile_svi.py",
                "test_fx_strangle.py", "test_chains_pack.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(_HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: keeps the rest


# Every compiled XLA:CPU program keeps about three memory mappings (code, constants, data) for as
# long as a jit cache holds it, and a pytest-xdist worker lives for the whole suite: by the last
# files a worker held 50,000-60,000 mappings, near Linux's default vm.max_map_count of 65,530, and
# the next LLVM compilation failed ("Cannot allocate memory / releaseMappedMemory failed") and
# took the worker down. Forgetting the compiled programs after each test file bounds the count to
# one file's worth; a later file that needs a program again loads it from the persistent cache.
@pytest.fixture(scope="module", autouse=True)
def _forget_compiled_programs():
    yield
    import gc

    from jaxvol import batching
    from jaxvol.mc import batch as mc_batch

    jax.clear_caches()
    batching.clear_programs()
    batching._PAYLOADS.clear()
    mc_batch._MAPS.clear()
    mc_batch._JITS.clear()
    gc.collect()
