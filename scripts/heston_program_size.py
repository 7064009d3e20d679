"""Size of the JAX programs of Heston pricing and calibration, and their trace/compile time.

    PYTHONPATH=<checkout> python scripts/heston_program_size.py [--which price,calibrate]

For ``heston.price`` on a smile batch (strike [16] x expiry [4, 1], scalar parameters, the
default 96 nodes / 8 contours) and ``heston.calibrate`` on 2 surfaces of 5 expiries x 5
strikes (abstract inputs; vega-weighted objective, 40 iterations, the fit quadrature 64 / 4),
prints

* jaxpr equations: ``jax.make_jaxpr`` of the call, counted recursively into every sub-jaxpr
  (loop bodies, nested jits, custom rules), each occurrence counted ("all"), and with each
  distinct sub-jaxpr object counted once ("distinct": a nested jit called in several places
  is one program);
* HLO text: characters of ``jax.jit(f).lower(...).as_text()`` (StableHLO);
* trace: seconds of ``make_jaxpr`` (caches cleared first); lower: seconds of ``.lower`` (caches
  cleared first: trace + lowering); compile: seconds of ``.compile()`` with the persistent
  compilation cache off.

Run it against two checkouts in the same session (PYTHONPATH picks the code) to compare.
Wall-clock figures depend on machine load; the counts and sizes are deterministic.
"""

import argparse
import time

import jax
from jax.extend import core as jcore

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_enable_compilation_cache", False)

import jax.numpy as jnp  # noqa: E402

import jaxvol  # noqa: E402
from jaxvol import heston  # noqa: E402
from jaxvol.calibrate import LMConfig  # noqa: E402


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in (value if isinstance(value, (tuple, list)) else (value,)):
            if isinstance(item, jcore.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jcore.Jaxpr):
                yield item


def count_equations(jaxpr):
    """(all occurrences, distinct sub-jaxprs once) recursive equation counts."""
    seen = set()

    def walk(j, distinct):
        if distinct:
            if id(j) in seen:
                return 0
            seen.add(id(j))
        total = 0
        for eqn in j.eqns:
            total += 1
            for sub in _sub_jaxprs(eqn):
                total += walk(sub, distinct)
        return total

    return walk(jaxpr, False), walk(jaxpr, True)


def _price_case():
    strike = jnp.linspace(60.0, 150.0, 16)
    expiry = jnp.asarray([[0.1], [0.5], [1.0], [3.0]])
    kwargs = dict(spot=100.0, rate=0.02, div=0.01, v0=0.04, kappa=1.5, theta=0.05, sigma=0.6,
                  rho=-0.7, is_call=strike >= 100.0)
    params = {k: jnp.asarray(v) for k, v in kwargs.items()}

    def fn(strike, expiry, params):
        return heston.price.__wrapped__(strike, expiry, **params)

    return fn, (strike, expiry, params)


def _calibrate_case():
    lanes, expiries, strikes = 2, 5, 5
    real = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float64)  # noqa: E731
    flag = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.bool_)  # noqa: E731
    grid = (lanes, expiries, strikes)
    surface = heston.Surface(real(*grid), real(lanes, expiries), real(*grid), flag(*grid),
                             real(lanes), real(lanes, expiries), real(lanes, expiries),
                             flag(*grid))
    config = LMConfig(max_iterations=40)

    def fn(surface):
        return heston.calibrate(surface, config=config)

    return fn, (surface,)


def measure(name, fn, args):
    jax.clear_caches()
    start = time.perf_counter()
    closed = jax.make_jaxpr(fn)(*args)
    trace = time.perf_counter() - start
    every, distinct = count_equations(closed.jaxpr)
    jax.clear_caches()
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    lower = time.perf_counter() - start
    hlo = len(lowered.as_text())
    start = time.perf_counter()
    lowered.compile()
    compile_s = time.perf_counter() - start
    print(f"{name:10s} equations all {every:>7,d}  distinct {distinct:>7,d}  HLO text "
          f"{hlo:>10,d} chars  trace {trace:6.2f} s  lower {lower:6.2f} s  compile "
          f"{compile_s:6.2f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--which", default="price,calibrate")
    options = parser.parse_args()
    print(f"jaxvol from {jaxvol.__file__}, jax {jax.__version__}", flush=True)
    cases = dict(price=_price_case, calibrate=_calibrate_case)
    for name in options.which.split(","):
        fn, args = cases[name]()
        measure(name, fn, args)


if __name__ == "__main__":
    main()
