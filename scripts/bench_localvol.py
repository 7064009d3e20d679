"""Benchmarks of jaxvol.localvol against QuantLib, in the same run, printing ratios.

    PYTHONPATH=$PWD python scripts/bench_localvol.py localvol [points]   # 1e6 (k, T) points
    PYTHONPATH=$PWD python scripts/bench_localvol.py mc [paths] [steps]  # LV MC path-steps/s
    PYTHONPATH=$PWD python scripts/bench_localvol.py slv [paths] [steps] [reprice_paths]
    PYTHONPATH=$PWD python scripts/bench_localvol.py reference           # tests/data CSV

jaxvol is called as the README shows (no extra jit). QuantLib is called as a Python user would:
a loop over LocalVolSurface.localVol, MCEuropeanEngine on a GeneralizedBlackScholesProcess
whose Black surface is a BlackVarianceSurface sampled from the same SSVI surface (QuantLib then
simulates with its LocalVolSurface), and HestonSLVMCModel on QuantLib's own SLV test case.
Timings include jaxvol's first call (compile) separately from the warm call.
"""

from __future__ import annotations

import csv
import os
import sys
import time

import numpy as np

import jaxvol

jaxvol.configure()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxvol import localvol as lv  # noqa: E402

SPOT, RATE, DIV = 100.0, 0.03, 0.01
SURFACE = lv.SSVISurface(np.array([0.1, 0.25, 0.5, 1.0, 2.0]),
                         np.array([0.0045, 0.011, 0.022, 0.045, 0.1]), -0.55,
                         np.array([0.9, 0.3]), phi="power_law")


def _ql_setup():
    import QuantLib as ql

    today = ql.Date(4, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, RATE, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, DIV, dc))
    spot = ql.QuoteHandle(ql.SimpleQuote(SPOT))
    return ql, today, dc, rts, qts, spot


def _ql_black_surface(ql, today, dc):
    """QuantLib BlackVarianceSurface sampled from SURFACE (monthly to 2y, 61 strikes)."""
    days = np.arange(30, 731, 30)
    strikes = np.linspace(40.0, 220.0, 61)
    t = days / 365.0
    forward = SPOT * np.exp((RATE - DIV) * t)
    k = np.log(strikes[:, None] / forward[None, :])
    w = np.asarray(jax.vmap(jax.vmap(SURFACE))(jnp.asarray(k),
                                                jnp.broadcast_to(jnp.asarray(t), k.shape)))
    vols = ql.Matrix(len(strikes), len(days))
    for i in range(len(strikes)):
        for j in range(len(days)):
            vols[i][j] = float(np.sqrt(w[i, j] / t[j]))
    dates = [today + int(d) for d in days]
    surface = ql.BlackVarianceSurface(today, ql.TARGET(), dates, list(strikes), vols, dc)
    surface.setInterpolation("bicubic")
    surface.enableExtrapolation()
    return surface


def bench_localvol(points: int):
    key = jax.random.key(0)
    k = jax.random.uniform(key, (points,), minval=-0.5, maxval=0.4)
    t = jax.random.uniform(jax.random.fold_in(key, 1), (points,), minval=0.1, maxval=2.0)
    start = time.perf_counter()
    out = lv.local_vol(SURFACE, k, t)
    out.vol.block_until_ready()
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = lv.local_vol(SURFACE, k, t)
    out.vol.block_until_ready()
    warm = time.perf_counter() - start
    ql, today, dc, rts, qts, spot = _ql_setup()
    black = _ql_black_surface(ql, today, dc)
    local = ql.LocalVolSurface(ql.BlackVolTermStructureHandle(black), rts, qts, spot)
    local.enableExtrapolation()
    sample = min(points, 20000)
    kh, th = np.asarray(k[:sample]), np.asarray(t[:sample])
    strikes = SPOT * np.exp((RATE - DIV) * th) * np.exp(kh)
    ql_vol = np.empty(sample)
    failures = 0
    start = time.perf_counter()
    for i in range(sample):
        try:
            ql_vol[i] = local.localVol(float(th[i]), float(strikes[i]), True)
        except RuntimeError:  # "black vol surface is not smooth enough"
            ql_vol[i], failures = np.nan, failures + 1
    ql_time = (time.perf_counter() - start) * points / sample
    diff = np.abs(ql_vol - np.asarray(out.vol[:sample]))
    print(f"local vol on {points:,} points: jaxvol first call {first:.2f} s, warm {warm:.3f} s "
          f"({points / warm:,.0f} points/s); QuantLib LocalVolSurface loop {ql_time:.1f} s "
          f"(timed on {sample:,}, {failures} exceptions); ratio warm {ql_time / warm:.0f}x, "
          f"first call {ql_time / first:.0f}x; median |QuantLib - jaxvol| "
          f"{np.nanmedian(diff):.2e} (QuantLib differentiates its bicubic interpolation of the "
          f"sampled surface)")


def bench_mc(paths: int, steps: int):
    strike, expiry = np.array([80.0, 100.0, 120.0]), np.array([1.0, 1.0, 1.0])
    results = {}
    for method in ("grid", "exact"):
        n = paths if method == "grid" else max(paths // 16, 2048)
        run = lambda: lv.european_mc(jax.random.key(1), SURFACE, strike, expiry,  # noqa: E731
                                     spot=SPOT, rate=RATE, div=DIV, paths=n, steps=steps,
                                     method=method)
        start = time.perf_counter()
        run().price.block_until_ready()
        first = time.perf_counter() - start
        start = time.perf_counter()
        res = run()
        res.price.block_until_ready()
        warm = time.perf_counter() - start
        results[method] = (n * steps / warm, first, warm, res)
        print(f"jaxvol LV MC ({method}): {n:,} paths x {steps} steps, first {first:.1f} s, warm "
              f"{warm:.2f} s: {n * steps / warm:,.0f} path-steps/s; price {np.asarray(res.price)} "
              f"+- {np.asarray(res.stderr)}")
    ql, today, dc, rts, qts, spot = _ql_setup()
    black = _ql_black_surface(ql, today, dc)
    process = ql.GeneralizedBlackScholesProcess(spot, qts, rts, ql.BlackVolTermStructureHandle(
        black))
    samples = max(paths // 64, 2000)
    option = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call, 100.0),
                              ql.EuropeanExercise(today + 365))
    option.setPricingEngine(ql.MCEuropeanEngine(process, "pseudorandom", timeSteps=steps,
                                                requiredSamples=samples, seed=42))
    start = time.perf_counter()
    ql_price = option.NPV()
    ql_time = time.perf_counter() - start
    ql_rate = samples * steps / ql_time
    print(f"QuantLib MCEuropeanEngine (local vol process): {samples:,} paths x {steps} steps "
          f"{ql_time:.2f} s: {ql_rate:,.0f} path-steps/s; ATM price {ql_price:.4f} +- "
          f"{option.errorEstimate():.4f}")
    for method, (rate, *_rest) in results.items():
        print(f"ratio jaxvol {method} / QuantLib: {rate / ql_rate:.0f}x path-steps/s")
    print(f"grid vs exact local vol per path-step: {results['grid'][0] / results['exact'][0]:.0f}x")


def _iv_errors_bp(prices, strike, expiry, vol=0.3, spot=100.0, rate=0.05, div=0.02):
    forward = spot * np.exp((rate - div) * expiry)
    calls = strike >= forward
    iv = np.asarray(jaxvol.implied_vol(prices, forward, strike, expiry, calls,
                                       discount=np.exp(-rate * expiry)).vol)
    return (iv - vol) * 1e4


def bench_slv(paths: int, steps: int, reprice_paths: int):
    strike = np.tile([50.0, 80.0, 100.0, 120.0, 150.0, 200.0], 3)
    expiry = np.repeat([0.25, 0.5, 1.0], 6)
    black = np.asarray(jaxvol.bsm_price(100.0, strike, expiry, 0.3, 0.05, 0.02,
                                        strike >= 100 * np.exp(0.03 * expiry)))
    used = black > 0.02  # QuantLib's test filter
    args = dict(spot=100.0, rate=0.05, div=0.02, v0=0.09, kappa=1.0, theta=0.06, sigma=0.4,
                rho=-0.75, paths=paths, steps=steps, bins=128, reprice_paths=reprice_paths)
    for attempt in ("first", "warm"):
        start = time.perf_counter()
        fit = lv.calibrate_slv(jax.random.key(5), lv.flat_surface(0.3), strike, expiry, **args)
        fit.leverage.block_until_ready()
        elapsed = time.perf_counter() - start
        print(f"jaxvol calibrate_slv ({attempt}): {paths:,} particles x {len(fit.times) - 1} "
              f"steps x 128 nodes + {reprice_paths:,} repricing paths: {elapsed:.1f} s")
    error = np.abs(np.asarray(fit.iv_error))[used] * 1e4
    se = np.asarray(fit.iv_stderr)[used] * 1e4
    print(f"jaxvol repricing error (MC, {reprice_paths:,} paths): mean {error.mean():.2f} bp, "
          f"max {error.max():.2f} bp; MC stderr mean {se.mean():.2f} bp, max {se.max():.2f} bp; "
          f"status {int(fit.status)}")
    only = dict(args, reprice_paths=1024)
    for attempt in ("first", "warm"):
        start = time.perf_counter()
        lv.calibrate_slv(jax.random.key(5), lv.flat_surface(0.3), strike, expiry,
                         **only).leverage.block_until_ready()
        jax_time = time.perf_counter() - start
    print(f"jaxvol calibration only (1,024 repricing paths), warm: {jax_time:.2f} s")
    ql, today, dc, rts, qts, spot = _ql_setup()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.05, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, 0.02, dc))
    model = ql.HestonModel(ql.HestonProcess(rts, qts, spot, 0.09, 1.0, 0.06, 0.4, -0.75))
    local = ql.LocalConstantVol(today, 0.3, dc)
    factory = ql.MTBrownianGeneratorFactory(1234)
    ql_paths = int(os.environ.get("QL_SLV_PATHS", paths))
    start = time.perf_counter()
    leverage = ql.HestonSLVMCModel(local, model, factory, today + 365, steps, 128,
                                   ql_paths).leverageFunction()
    leverage.localVol(0.5, 100.0, True)  # force the calibration
    ql_time = time.perf_counter() - start
    errors = []
    bs_process = ql.GeneralizedBlackScholesProcess(spot, qts, rts, ql.BlackVolTermStructureHandle(
        ql.BlackConstantVol(today, ql.TARGET(), 0.3, dc)))
    for s, t in zip(strike, expiry):
        date = today + int(round(t * 365))
        kind = ql.Option.Put if s < 100 else ql.Option.Call
        option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, s), ql.EuropeanExercise(date))
        option.setPricingEngine(ql.AnalyticEuropeanEngine(bs_process))
        npv, vega = option.NPV(), option.vega()
        if npv <= 0.02:
            continue
        option.setPricingEngine(ql.FdHestonVanillaEngine(model, max(26, int(t * 51)), 201, 51, 0,
                                                         ql.FdmSchemeDesc.ModifiedCraigSneyd(),
                                                         leverage))
        errors.append(abs(option.NPV() - npv) / vega * 1e4)
    errors = np.asarray(errors)
    print(f"QuantLib HestonSLVMCModel: {ql_paths:,} paths x {steps} steps/year x 128 bins: "
          f"{ql_time:.1f} s; repricing error (its FD engine, as its test): mean "
          f"{errors.mean():.2f} bp, max {errors.max():.2f} bp")
    print(f"ratio calibration time QuantLib / jaxvol (calibration only, warm): "
          f"{ql_time / jax_time:.1f}x; incl. jaxvol's MC repricing {ql_time / elapsed:.1f}x")


def reference():
    """tests/data/localvol_heston_surface.csv from QuantLib's AnalyticHestonEngine."""
    import QuantLib as ql

    params = dict(v0=0.04, kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7)
    spot, rate, div = 100.0, 0.02, 0.01
    today = ql.Date(2, 1, 2024)
    ql.Settings.instance().evaluationDate = today
    dc = ql.Actual365Fixed()
    rts = ql.YieldTermStructureHandle(ql.FlatForward(today, rate, dc))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(today, div, dc))
    process = ql.HestonProcess(rts, qts, ql.QuoteHandle(ql.SimpleQuote(spot)), *params.values())
    engine = ql.AnalyticHestonEngine(ql.HestonModel(process), 1e-13, 100000)
    rows = []
    for days in [4, 7, 14, 30, 61, 91, 182, 273, 365]:
        t = days / 365.0
        forward, discount = spot * np.exp((rate - div) * t), np.exp(-rate * t)
        for z in np.linspace(-2.5, 2.5, 21):
            strike = forward * np.exp(z * 0.2 * np.sqrt(t))
            kind = ql.Option.Call if strike >= forward else ql.Option.Put
            option = ql.VanillaOption(ql.PlainVanillaPayoff(kind, strike),
                                      ql.EuropeanExercise(today + days))
            option.setPricingEngine(engine)
            price = option.NPV()
            std = ql.blackFormulaImpliedStdDev(kind, strike, forward, price, discount, 0.0,
                                               0.2 * np.sqrt(t), 1e-14, 1000)
            rows.append((days, repr(float(t)), repr(float(strike)), repr(float(forward)),
                         int(strike >= forward), repr(float(price)),
                         repr(float(std / np.sqrt(t)))))
    path = os.path.join(os.path.dirname(__file__), "..", "tests", "data",
                        "localvol_heston_surface.csv")
    with open(path, "w", newline="") as f:
        f.write("# Heston (v0=0.04, kappa=1.5, theta=0.04, sigma=0.5, rho=-0.7), spot 100, rate "
                "0.02, div 0.01: QuantLib 1.44 AnalyticHestonEngine (rel tol 1e-13) prices of OTM "
                "options and blackFormulaImpliedStdDev implied vols; generated by "
                "scripts/bench_localvol.py reference\n")
        writer = csv.writer(f)
        writer.writerow(["expiry_days", "expiry", "strike", "forward", "is_call", "price",
                         "implied_vol"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")
    _reference_svi(path)


def _reference_svi(path):
    """tests/data/localvol_heston_svi.csv: jaxvol.svi.fit of the reference implied vols."""
    import pandas as pd

    data = pd.read_csv(path, comment="#")
    groups = [g for _, g in data.groupby("expiry_days")]
    expiry = np.array([g.expiry.iloc[0] for g in groups])
    forward = np.array([g.forward.iloc[0] for g in groups])
    k = np.log(np.stack([g.strike.to_numpy() for g in groups]) / forward[:, None])
    w = np.stack([g.implied_vol.to_numpy() for g in groups]) ** 2 * expiry[:, None]
    fit = jaxvol.svi.fit(k, w)
    assert np.all(np.asarray(fit.status) == 0)
    out = path.replace("localvol_heston_surface.csv", "localvol_heston_svi.csv")
    with open(out, "w") as f:
        f.write("# raw SVI slices (a, b, rho, m, sigma) fitted by jaxvol.svi.fit (default "
                "settings, status 0) to the implied vols of localvol_heston_surface.csv, one per "
                "expiry; generated by scripts/bench_localvol.py reference\n")
        f.write("expiry_days,expiry,forward,a,b,rho,m,sigma\n")
        for g, t, fwd, p in zip(groups, expiry, forward, np.asarray(fit.params)):
            f.write(",".join([str(g.expiry_days.iloc[0]), repr(float(t)), repr(float(fwd))]
                             + [repr(float(x)) for x in p]) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    numbers = [int(float(x)) for x in sys.argv[2:]]
    if mode == "localvol":
        bench_localvol(*(numbers or [1_000_000]))
    elif mode == "mc":
        bench_mc(*(numbers or [2 ** 18, 100]))
    elif mode == "slv":
        bench_slv(*(numbers or [2 ** 16, 91, 2 ** 20]))
    elif mode == "reference":
        reference()
    else:
        print(__doc__)
        sys.exit(2)
