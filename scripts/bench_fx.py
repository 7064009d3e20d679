"""Benchmark of jaxvol.fx against the peers a user would otherwise use, in the same run.

1. Strike from delta (premium-adjusted spot delta, the iterative case) for N options:
   jaxvol.fx.strike_from_delta (one batched call) vs QuantLib's BlackDeltaCalculator in a
   Python loop (timed on a sample, scaled per option).
2. Market strangle to smile for R pair/tenor rows (Clark-style quotes, spot delta, DNS ATM):
   jaxvol.fx.calibrate_smile for the polynomial and vanna-volga models vs a per-row
   scipy.optimize.fsolve on the same five equations with scipy.special.ndtr (timed on a
   sample, scaled per row).

Prints compile (first call) and steady-state (best of 3) times and the ratios.

    .venv/bin/python scripts/bench_fx.py [--options 100000 --rows 4096]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _best_of(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _first(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_strikes(n, sample, rng):
    import jax
    import QuantLib as ql

    from jaxvol import fx

    spot = rng.uniform(0.5, 150.0, n)
    vol, expiry = rng.uniform(0.05, 0.4, n), rng.uniform(0.05, 3.0, n)
    rd, rf = rng.uniform(-0.01, 0.06, n), rng.uniform(-0.01, 0.06, n)
    is_call = rng.uniform(size=n) < 0.5
    delta = np.where(is_call, 1.0, -1.0) * rng.uniform(0.05, 0.45, n)

    def run():
        result = fx.strike_from_delta(delta, spot=spot, expiry=expiry, vol=vol, rd=rd, rf=rf,
                                      is_call=is_call, delta_type="spot_pa")
        jax.block_until_ready(result.strike)
        return result

    compile_s = _first(run)
    jax_s = _best_of(run)
    strikes = np.asarray(run().strike)

    def quantlib():
        out = []
        for i in range(sample):
            option = ql.Option.Call if is_call[i] else ql.Option.Put
            calc = ql.BlackDeltaCalculator(option, ql.DeltaVolQuote.PaSpot, spot[i],
                                           np.exp(-rd[i] * expiry[i]), np.exp(-rf[i] * expiry[i]),
                                           vol[i] * np.sqrt(expiry[i]))
            try:
                out.append(calc.strikeFromDelta(delta[i]))
            except RuntimeError:  # QuantLib raises beyond the maximum PA delta; jaxvol: NaN
                out.append(np.nan)
        return np.array(out)

    ql_s = _best_of(quantlib, 1) * n / sample
    peer = quantlib()
    both = np.isfinite(peer) & np.isfinite(strikes[:sample])
    agree = np.array_equal(np.isfinite(peer), np.isfinite(strikes[:sample]))
    err = np.max(np.abs(strikes[:sample][both] / peer[both] - 1))
    print(f"strike_from_delta (spot_pa), {n:,} options: jaxvol {jax_s * 1e3:.1f} ms "
          f"(first call {compile_s:.1f} s), QuantLib loop {ql_s * 1e3:.0f} ms (scaled from "
          f"{sample:,}); speed-up x{ql_s / jax_s:.0f}; max rel diff {err:.1e}; "
          f"same no-solution rows: {agree} ({np.sum(~np.isfinite(peer))} of {sample})")


def _quotes(rows, rng):
    days = rng.choice([7, 30, 91, 182, 365, 730], rows)
    atm = rng.uniform(0.06, 0.25, rows)
    return dict(spot=rng.uniform(0.6, 150.0, rows), expiry=days / 365,
                rd=rng.uniform(0.0, 0.05, rows), rf=rng.uniform(0.0, 0.05, rows), atm=atm,
                rr25=atm * rng.uniform(-0.12, 0.12, rows), bf25=atm * rng.uniform(0.01, 0.06, rows))


def _fsolve_polynomial(q):
    """The per-row peer: scipy fsolve on (c0, c1, c2, ln K25c, ln K25p), spot delta, DNS ATM."""
    from scipy import optimize, special

    t, atm = q["expiry"], q["atm"]
    forward = q["spot"] * np.exp((q["rd"] - q["rf"]) * t)
    df, sqt = np.exp(-q["rf"] * t), np.sqrt(t)
    k_atm, vms = forward * np.exp(0.5 * atm**2 * t), atm + q["bf25"]
    d1 = special.ndtri(0.25 / df)
    k_ms = forward * np.exp(np.array([-1.0, 1.0]) * vms * sqt * d1 + 0.5 * vms**2 * t)

    def black(k, v, phi):
        s = v * sqt
        x = np.log(forward / k) / s + 0.5 * s
        return phi * (forward * special.ndtr(phi * x) - k * special.ndtr(phi * (x - s)))

    target = black(k_ms[0], vms, 1) + black(k_ms[1], vms, -1)

    def vol(z, k):
        x = special.ndtr(np.log(forward / k) / (atm * sqt))
        return np.exp(z[0] + z[1] * x + z[2] * x * x)

    def eq(z):
        kc, kp = np.exp(z[3]), np.exp(z[4])
        vc, vp = vol(z, kc), vol(z, kp)
        price = black(k_ms[0], vol(z, k_ms[0]), 1) + black(k_ms[1], vol(z, k_ms[1]), -1)
        return [vol(z, k_atm) - atm, vc - vp - q["rr25"], (price - target) / (forward * sqt),
                df * special.ndtr(np.log(forward / kc) / (vc * sqt) + 0.5 * vc * sqt) - 0.25,
                df * special.ndtr(-np.log(forward / kp) / (vp * sqt) - 0.5 * vp * sqt) - 0.25]

    z = optimize.fsolve(eq, [np.log(atm), 0.0, 0.0, *np.log(k_ms)], xtol=1e-12)
    kc, kp = np.exp(z[3]), np.exp(z[4])
    return 0.5 * (vol(z, kc) + vol(z, kp)) - atm


def bench_calibration(rows, sample, rng):
    import jax

    from jaxvol import fx

    quotes = _quotes(rows, rng)
    results = {}
    for model in ("polynomial", "vanna_volga"):
        def run(model=model):
            result = fx.calibrate_smile(**quotes, delta_type="spot", atm_type="dns", model=model)
            jax.block_until_ready(result.smile_strangle)
            return result

        compile_s = _first(run)
        results[model] = (_best_of(run), compile_s, run())
    rows_q = [{k: v[i] for k, v in quotes.items()} for i in range(sample)]
    start = time.perf_counter()
    reference = np.array([_fsolve_polynomial(q) for q in rows_q])
    peer_s = (time.perf_counter() - start) * rows / sample
    for model, (jax_s, compile_s, result) in results.items():
        ok = int(np.sum(np.asarray(result.status) == 0))
        line = (f"calibrate_smile ({model}), {rows:,} rows: jaxvol {jax_s * 1e3:.0f} ms "
                f"(first call {compile_s:.1f} s), {ok:,} OK")
        if model == "polynomial":
            diff = np.max(np.abs(np.asarray(result.smile_strangle[:sample]) - reference))
            line += (f"; scipy fsolve loop {peer_s:.1f} s (scaled from {sample}); speed-up "
                     f"x{peer_s / jax_s:.0f}; max |smile strangle diff| {diff:.1e}")
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--sample", type=int, default=200)
    args = parser.parse_args()

    import jaxvol
    jaxvol.configure()
    import jax

    print(f"jax {jax.__version__}, devices {jax.devices()}")
    rng = np.random.default_rng(11)
    bench_strikes(args.options, min(args.options, 20 * args.sample), rng)
    bench_calibration(args.rows, min(args.rows, args.sample), rng)


if __name__ == "__main__":
    main()
