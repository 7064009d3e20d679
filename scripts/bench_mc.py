"""Benchmark: Heston QE-M European surface vs QuantLib and PyFENG, and a 1,000-underlying run.

Case: spot 100, rate 0.02, div 0, v0 0.04, kappa 1.5, theta 0.04, sigma 0.5, rho -0.7;
20 expiries (13..260 weeks) x 50 strikes (60..150), QE-M (psi_c 1.5, martingale correction),
dt = 1/52, antithetic variates in every library.

- jaxvol: one ``jaxvol.mc.heston_price`` call (as the README shows) simulating 260 weekly steps
  and pricing the 1,000 options on the same paths (``payoffs.european`` with ``date``).
- QuantLib: ``MCEuropeanHestonEngine`` with ``HestonProcess(..., QuadraticExponentialMartingale)``
  (one option per engine run, as QuantLib prices), timed on the 1-year ATM call.
- PyFENG: ``HestonMcAndersen2008`` (psi_c 1.5, antithetic), one expiry per call, all 50 strikes
  on the same paths, timed on the 1-year expiry.

Equal standard error: every library runs the same scheme and estimator, so the paths each
option needs for a standard error of 1e-3 x spot (0.1) are taken from jaxvol's measured per-
option standard errors, n_i = N (se_i / 0.1)^2; the time to the target is then the path-steps
each library must simulate (jaxvol: max_i n_i paths x 260 steps once; PyFENG: per expiry the
max over its strikes x its steps; QuantLib: the sum over options of n_i x steps_i) divided by
its measured path-steps per second.

    PYTHONPATH=$PWD /work/venv/bin/python scripts/bench_mc.py [--paths 65536] [--big-paths N]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np


def _uptime():
    return open("/proc/loadavg").read().split()[:3]


CASE = dict(spot=100.0, rate=0.02, div=0.0, v0=0.04, kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7)
WEEKS = np.linspace(13, 260, 20).round().astype(int)
EXPIRIES = WEEKS / 52.0
STRIKES = np.linspace(60.0, 150.0, 50)
TARGET = 1e-3 * CASE["spot"]


def bench_jaxvol(paths, dtype):
    import jax
    import jax.numpy as jnp
    from jaxvol import mc
    from jaxvol.mc import payoffs

    f = jnp.dtype(dtype)
    args = dict(strike=jnp.asarray(np.tile(STRIKES, 20), f), is_call=jnp.ones(1000, bool),
                date=jnp.asarray(np.repeat(np.arange(20), 50)))
    params = {n: jnp.asarray(v, f) for n, v in CASE.items()}

    def run(key):
        return mc.heston_price(key, payoffs.european, args, expiry=jnp.asarray(5.0, f),
                               steps=260, paths=paths, observe=tuple(int(w) for w in WEEKS),
                               **params)

    t0 = time.perf_counter()
    jax.block_until_ready(run(jax.random.key(0)))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = jax.block_until_ready(run(jax.random.key(1)))
    seconds = time.perf_counter() - t0
    return dict(seconds=seconds, first=first, path_steps=paths * 260 / seconds,
                stderr=np.asarray(result.stderr, np.float64).reshape(20, 50), paths=paths)


def bench_quantlib(samples):
    import QuantLib as ql

    today = ql.Date(1, 1, 2020)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    r = ql.YieldTermStructureHandle(ql.FlatForward(today, CASE["rate"], dc))
    q = ql.YieldTermStructureHandle(ql.FlatForward(today, CASE["div"], dc))
    process = ql.HestonProcess(r, q, ql.QuoteHandle(ql.SimpleQuote(CASE["spot"])), CASE["v0"],
                               CASE["kappa"], CASE["theta"], CASE["sigma"], CASE["rho"],
                               ql.HestonProcess.QuadraticExponentialMartingale)
    option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, 100.0),
                              ql.EuropeanExercise(today + 365))
    engine = ql.MCEuropeanHestonEngine(process, "pseudorandom", timeStepsPerYear=52,
                                       antitheticVariate=True, requiredSamples=samples,
                                       seed=42)
    option.setPricingEngine(engine)
    t0 = time.perf_counter()
    npv = option.NPV()
    seconds = time.perf_counter() - t0
    return dict(seconds=seconds, path_steps=samples * 2 * 52 / seconds, npv=npv,
                stderr=option.errorEstimate())


def bench_pyfeng(paths):
    import pyfeng as pf

    # PyFENG's Heston: sigma is the initial variance v0, vov the vol of variance
    model = pf.HestonMcAndersen2008(CASE["v0"], vov=CASE["sigma"], rho=CASE["rho"],
                                    mr=CASE["kappa"], theta=CASE["theta"], n_path=paths,
                                    dt=1 / 52, rn_seed=42, antithetic=True, intr=CASE["rate"],
                                    divr=CASE["div"])
    t0 = time.perf_counter()
    prices = model.price(STRIKES, CASE["spot"], 1.0)
    seconds = time.perf_counter() - t0
    return dict(seconds=seconds, path_steps=paths * 52 / seconds, atm=float(
        np.interp(100.0, STRIKES, prices)))


def time_to_target(stderr, paths):
    needed = paths * (stderr / TARGET) ** 2  # paths each option needs, [20, 50]
    steps = WEEKS[:, None]
    return dict(jaxvol=needed.max() * 260, pyfeng=float(np.sum(needed.max(1) * WEEKS)),
                quantlib=float(np.sum(needed * steps)))


def bench_big(underlyings, paths, steps, dtype):
    import jax
    import jax.numpy as jnp
    from jaxvol import mc

    f = jnp.dtype(dtype)
    rng = np.random.default_rng(0)
    v0 = jnp.asarray(rng.uniform(0.02, 0.09, underlyings), f)
    t0 = time.perf_counter()
    result = mc.heston_european(jax.random.key(0), jnp.asarray(100.0, f), jnp.asarray(1.0, f),
                                spot=jnp.asarray(100.0, f), rate=jnp.asarray(0.02, f),
                                div=jnp.asarray(0.0, f), v0=v0, kappa=jnp.asarray(1.5, f),
                                theta=jnp.asarray(0.04, f), sigma=jnp.asarray(0.5, f),
                                rho=jnp.asarray(-0.7, f), is_call=True, paths=paths,
                                steps=steps)
    jax.block_until_ready(result)
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return dict(seconds=seconds, rss_gib=rss, path_steps=underlyings * paths * steps / seconds,
                ok=int(np.sum(np.asarray(result.status) == 0)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--paths", type=int, default=65536)
    parser.add_argument("--ql-samples", type=int, default=8192)
    parser.add_argument("--big-underlyings", type=int, default=1000)
    parser.add_argument("--big-paths", type=int, default=100_000)
    parser.add_argument("--big-steps", type=int, default=252)
    parser.add_argument("--skip-big", action="store_true")
    a = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"devices: {jax.devices()}  load average: {_uptime()}  cpus: {os.cpu_count()}")
    ql_res = bench_quantlib(a.ql_samples)
    pf_res = bench_pyfeng(a.paths)
    print(f"QuantLib MCEuropeanHestonEngine QE-M: {ql_res['path_steps']:.3e} path-steps/s "
          f"({ql_res['seconds']:.2f}s, ATM 1y {ql_res['npv']:.4f} +- {ql_res['stderr']:.4f})")
    print(f"PyFENG HestonMcAndersen2008: {pf_res['path_steps']:.3e} path-steps/s "
          f"({pf_res['seconds']:.2f}s, ATM 1y {pf_res['atm']:.4f})")
    for dtype in ("float64", "float32"):
        res = bench_jaxvol(a.paths, dtype)
        need = time_to_target(res["stderr"], res["paths"])
        t_jv = need["jaxvol"] / res["path_steps"]
        t_pf = need["pyfeng"] / pf_res["path_steps"]
        t_ql = need["quantlib"] / ql_res["path_steps"]
        print(f"jaxvol {dtype}: {res['path_steps']:.3e} path-steps/s ({res['seconds']:.2f}s for "
              f"{a.paths} paths x 260 steps, first call {res['first']:.1f}s, max stderr "
              f"{res['stderr'].max():.4f}); load {_uptime()}")
        print(f"  path-steps/s ratio: {res['path_steps'] / ql_res['path_steps']:.1f}x QuantLib, "
              f"{res['path_steps'] / pf_res['path_steps']:.1f}x PyFENG")
        print(f"  surface to stderr 1e-3 spot: jaxvol {t_jv:.1f}s, PyFENG {t_pf:.1f}s "
              f"({t_pf / t_jv:.1f}x), QuantLib {t_ql:.1f}s ({t_ql / t_jv:.1f}x)")
    if not a.skip_big:
        for dtype in ("float32",):
            big = bench_big(a.big_underlyings, a.big_paths, a.big_steps, dtype)
            print(f"{a.big_underlyings} underlyings x {a.big_paths} paths x {a.big_steps} steps "
                  f"({dtype}): {big['seconds']:.1f}s, {big['path_steps']:.3e} path-steps/s, peak "
                  f"RSS {big['rss_gib']:.2f} GiB, {big['ok']} lanes OK; load {_uptime()}")


if __name__ == "__main__":
    main()
