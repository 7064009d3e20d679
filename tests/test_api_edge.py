"""The compiled public edge: every public array function is one program per shape.

Guarded with JAX's own compile monitoring (``jax.monitoring`` duration events that JAX records
for every jaxpr trace and every backend compilation, persistent-cache hits included):

* the FIRST direct call with shapes no other test uses compiles exactly ONE program. A function
  that ran op by op would compile one small program per primitive on new shapes, so this also
  shows that the whole call is dispatched as one computation;
* a SECOND direct call with the same shapes but other values (Python scalars changed too)
  traces and compiles nothing: scalars are weakly typed traced arguments, not constants.

Plus composition (the edge is transparent to the user's jit / vmap / grad), static options,
dtype preservation and import hygiene (``import jaxvol`` loads no pandas / pyarrow /
matplotlib and changes no JAX configuration).
"""

import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvol
from jaxvol import fx, heston, indices, sabr, ssvi, svi

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_COMPILE = "/jax/core/compile/backend_compile_duration"
_COUNTS = {"active": False, _TRACE: 0, _COMPILE: 0}
_LOCK = threading.Lock()


def _listener(event, duration, **kwargs):
    if _COUNTS["active"] and event in (_TRACE, _COMPILE):
        with _LOCK:
            _COUNTS[event] += 1


jax.monitoring.register_event_duration_secs_listener(_listener)


def _counted(fn):
    """(result, traces, compiles) of one call, blocking until the result is ready."""
    _COUNTS.update({"active": True, _TRACE: 0, _COMPILE: 0})
    try:
        out = jax.block_until_ready(fn())
    finally:
        _COUNTS["active"] = False
    return out, _COUNTS[_TRACE], _COUNTS[_COMPILE]


def _lanes(n, seed):
    rng = np.random.default_rng(seed)
    return (np.full(n, 100.0), 100.0 * np.exp(rng.normal(0.0, 0.2, n)),
            rng.uniform(0.1, 2.0, n), rng.uniform(0.1, 0.5, n), rng.random(n) < 0.5)


# Each case: name, and a function of (values seed) making the call. Shapes are unique per case
# (n = 40 + case index) so that no other test's compiled programs are reused.
def _black(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.black_price(f, k, t, v, c, discount=0.99 - 0.01 * seed)


def _bsm(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.bsm_price(f, k, t, v, 0.03 + 0.01 * seed, 0.01, c)


def _greeks(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.greeks(f, k, t, v, c, discount=0.98)


def _bsm_greeks(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.bsm_greeks(f, k, t, v, 0.02, 0.01 * seed, c)


def _bachelier(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.bachelier_price(f, k, t, 20.0 * v, c)


def _implied(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    p = np.asarray(jaxvol.black_price(f, k, t, v, c))
    return lambda: jaxvol.implied_vol(p, f, k, t, c, discount=1.0 - 0.0 * seed)


def _implied_normal(seed, n):
    f, _, t, v, c = _lanes(n, seed)
    k = f + np.linspace(-10.0, 10.0, n)  # time values well above the price's rounding
    p = np.asarray(jaxvol.bachelier_price(f, k, t, 20.0 * v, c))
    return lambda: jaxvol.implied_normal_vol(p, f, k, t, c)


def _normalised(seed, n):
    f, k, t, v, c = _lanes(n, seed)
    return lambda: jaxvol.black.normalised_black(np.log(f / k), v * np.sqrt(t), c)


def _heston(seed, n):
    strikes = np.linspace(80.0, 120.0, n)
    return lambda: heston.price(strikes, 1.0 + 0.1 * seed, spot=100.0, rate=0.02, div=0.0,
                                v0=0.04, kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7,
                                is_call=True, nodes=32, contours=2)  # small: compile time


def _heston_flat(seed, n):  # per-option expiries: every option its own contour
    strikes = np.linspace(80.0, 120.0, n)
    expiry = np.linspace(0.2, 2.0, n) + 0.1 * seed
    return lambda: heston.price(strikes, expiry, spot=100.0, rate=0.02, div=0.0, v0=0.04,
                                kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7, is_call=False,
                                nodes=32, contours=2)


def _sabr(seed, n):
    strikes = np.linspace(80.0, 120.0, n)
    return lambda: sabr.implied_vol(100.0, strikes, 1.0, 0.2 + 0.01 * seed, 1.0, -0.3, 0.4,
                                    method="obloj")


def _sabr_normal(seed, n):
    strikes = np.linspace(80.0, 120.0, n)
    return lambda: sabr.normal_vol(100.0, strikes, 1.0, 0.2 + 0.01 * seed, 0.5, -0.3, 0.4)


def _svi(seed, n):
    k = np.linspace(-0.5, 0.5, n)
    return lambda: svi.total_variance(k, 0.02 + 0.001 * seed, 0.1, -0.4, 0.0, 0.2)


def _svi_vol(seed, n):
    k = np.linspace(-0.5, 0.5, n)
    return lambda: svi.implied_vol(k, 0.5, 0.02 + 0.001 * seed, 0.1, -0.4, 0.0, 0.2)


def _ssvi(seed, n):
    k = np.linspace(-0.5, 0.5, n)
    return lambda: ssvi.total_variance(k, 0.04 + 0.001 * seed, -0.5, 1.2)


def _ssvi_phi(seed, n):
    theta = np.linspace(0.01, 0.5, n)
    return lambda: ssvi.heston_phi(theta, 2.0 + seed)


def _interpolate(seed, n):
    v = np.linspace(0.01, 0.05, n)
    return lambda: indices.interpolate_variance(20_000.0 + seed, v, 60_000.0, 1.1 * v)


def _fx_delta(seed, n):
    strikes = np.linspace(1.2, 1.5, n)
    return lambda: fx.delta(strikes, spot=1.35, expiry=0.5, vol=0.1 + 0.01 * seed, rd=0.03,
                            rf=0.02, is_call=True, delta_type="forward")


def _fx_strike(seed, n):
    deltas = np.linspace(0.1, 0.9, n)
    return lambda: fx.strike_from_delta(deltas, spot=1.35, expiry=0.5, vol=0.1 + 0.01 * seed,
                                        rd=0.03, rf=0.02, is_call=True, delta_type="spot")


def _fx_atm(seed, n):
    vols = np.linspace(0.05, 0.2, n)
    return lambda: fx.atm_strike(spot=1.35, expiry=0.5 + 0.1 * seed, vol=vols, rd=0.03,
                                 rf=0.02, atm_type="dns")


def _fx_polynomial(seed, n):
    strikes = np.linspace(1.2, 1.5, n)
    return lambda: fx.polynomial_vol(strikes, forward=1.35, expiry=0.5, atm_vol=0.1,
                                     coefficients=np.array([np.log(0.1), 0.05 * seed, 0.2]))


def _fx_vanna_volga(seed, n):
    strikes = np.linspace(1.2, 1.5, n)
    return lambda: fx.vanna_volga_vol(strikes, forward=1.35, expiry=0.5 + 0.1 * seed,
                                      pillar_strikes=np.array([1.28, 1.35, 1.42]),
                                      pillar_vols=np.array([0.11, 0.1, 0.105]))


CASES = {name[1:]: fn for name, fn in list(globals().items())
         if name.startswith("_") and callable(fn) and name not in (
             "_listener", "_counted", "_lanes")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_direct_call_is_one_compiled_program(name):
    n = 40 + sorted(CASES).index(name)  # a shape no other test uses
    make = CASES[name]
    first, _, compiles = _counted(make(0, n))
    # exactly one program: an op-by-op function would compile one per primitive on new shapes
    assert compiles == 1, f"{name}: first direct call compiled {compiles} programs"
    second, traces, compiles = _counted(make(1, n))
    assert (traces, compiles) == (0, 0), (
        f"{name}: second call with the same shapes traced {traces} and compiled {compiles}")
    leaves = jax.tree_util.tree_leaves(second)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves), name
    # the new values were used (not baked in as constants of the first trace)
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(first), leaves)]
    assert any(changed), f"{name}: second call returned the first call's values"


def test_python_scalars_do_not_retrace_per_value():
    call = lambda f, k, t, v, c, d: jaxvol.black_price(f, k, t, v, c, discount=d)  # noqa: E731
    _counted(lambda: call(100.0, 110.0, 0.5, 0.25, True, 0.99))
    out, traces, compiles = _counted(lambda: call(101.0, 90.0, 0.75, 0.3, False, 0.95))
    assert (traces, compiles) == (0, 0)
    # value check against the closed form (scipy-free: erfc from math), 1e-14 relative
    from math import erf, log, sqrt
    s = 0.3 * sqrt(0.75)
    d1 = log(101.0 / 90.0) / s + 0.5 * s
    cdf = lambda z: 0.5 * (1.0 + erf(z / sqrt(2.0)))  # noqa: E731
    expected = 0.95 * (90.0 * cdf(-(d1 - s)) - 101.0 * cdf(-d1))
    assert abs(float(out) / expected - 1.0) < 1e-13  # well-conditioned lane: a few ulp


def test_static_options_key_the_cache():
    strikes = np.linspace(80.0, 120.0, 17)
    args = (100.0, strikes, 1.0, 0.2, 0.5, -0.3, 0.4)  # beta < 1: the methods differ
    hagan, _, c1 = _counted(lambda: sabr.implied_vol(*args, method="hagan"))
    obloj, _, c2 = _counted(lambda: sabr.implied_vol(*args, method="obloj"))
    assert c1 == 1 and c2 == 1  # one program per static configuration
    assert not np.allclose(hagan, obloj, rtol=1e-12, atol=0)  # the option reached the kernel
    with pytest.raises(ValueError, match="method"):
        sabr.implied_vol(*args, method="bogus")
    with pytest.raises(ValueError, match="nodes"):
        heston.price(strikes, 1.0, spot=100.0, rate=0.0, div=0.0, v0=0.04, kappa=1.0,
                     theta=0.04, sigma=0.5, rho=-0.5, is_call=True, nodes=3)


def test_lists_are_arrays_not_pytrees():
    out = jaxvol.black_price(100.0, [90.0, 100.0, 110.0], 1.0, 0.2, [True, True, False])
    ref = jaxvol.black_price(100.0, np.array([90.0, 100.0, 110.0]), 1.0, 0.2,
                             np.array([True, True, False]))
    np.testing.assert_array_equal(out, ref)  # same program, bit-identical


def test_edge_composes_with_user_jit_vmap_grad():
    f, k, t, v, c = _lanes(23, 5)
    direct = jaxvol.black_price(f, k, t, v, c)
    under_jit = jax.jit(jaxvol.black_price)(f, k, t, v, c)
    mapped = jax.vmap(jaxvol.black_price)(f, k, t, v, c)
    # same compiled arithmetic modulo fusion choices: 4 ulp relative
    np.testing.assert_allclose(under_jit, direct, rtol=1e-15 * 4, atol=0)
    np.testing.assert_allclose(mapped, direct, rtol=1e-15 * 4, atol=0)
    # grad through the edge is the closed-form vega; the edge is transparent to grad
    vega = jax.vmap(jax.grad(jaxvol.black_price, argnums=3))(f, k, t, v, c)
    np.testing.assert_allclose(vega, jaxvol.greeks(f, k, t, v, c).vega, rtol=1e-12, atol=0)
    # heston.price's gradients under a user jit (of the edge): tests/test_heston_pricing.py


def test_edge_keeps_float32_with_python_scalars():
    f, k, t, v, c = (a.astype(np.float32) if a.dtype == np.float64 else a
                     for a in _lanes(11, 3))
    assert jaxvol.black_price(f, k, t, v, c, discount=0.99).dtype == jnp.float32
    assert jaxvol.greeks(f, k, t, v, c).delta.dtype == jnp.float32
    out = heston.price(k, 1.0, spot=100.0, rate=0.02, div=0.0, v0=0.04, kappa=1.5, theta=0.04,
                       sigma=0.5, rho=-0.7, is_call=True, nodes=16, contours=2)
    assert out.dtype == jnp.float32
    assert jaxvol.black_price(100.0, 110.0, 0.5, 0.25, True).dtype == jnp.float64  # x64 tests


_IMPORT_PROBE = """
import sys, jax
before = {k: v for k, v in jax.config.values.items()}
import jaxvol
after = {k: v for k, v in jax.config.values.items()}
heavy = sorted(m for m in ("pandas", "pyarrow", "matplotlib", "scipy", "jaxvol.jobs",
                           "jaxvol.report", "jaxvol.chains") if m in sys.modules)
changed = sorted(k for k in before if before[k] != after.get(k))
print(repr((heavy, changed)))
jaxvol.chains, jaxvol.heston, jaxvol.svi, jaxvol.indices   # lazy subpackages still load
from jaxvol import svi, sabr, fx, synthetic                  # and from-imports work
print("ok")
"""


def test_import_is_light_and_changes_no_config():
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True,
                         check=True, timeout=120).stdout.splitlines()
    heavy, changed = eval(out[0])
    assert heavy == [], f"import jaxvol loaded {heavy}"
    assert changed == [], f"import jaxvol changed JAX config {changed}"
    assert out[1] == "ok"


def test_enable_compilation_cache(tmp_path):
    # an entry left by an unlocked (uncapped) run gets its access-time file, so the size-capped
    # (file-locked) cache can evict without tripping over it
    (tmp_path / "oldkey-cache").write_bytes(b"x")
    probe = (f"import jax, jaxvol; p = jaxvol.enable_compilation_cache({str(tmp_path)!r}); "
             "print(p, jax.config.jax_compilation_cache_dir, "
             "jax.config.jax_enable_x64, jax.config.jax_compilation_cache_max_size)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[0] == str(tmp_path) and out[1] == str(tmp_path)
    assert out[2] == "False"  # only the cache: x64 stays the user's choice
    assert int(out[3]) > 0  # capped: JAX locks the folder, processes may share it
    assert (tmp_path / "oldkey-atime").exists()
